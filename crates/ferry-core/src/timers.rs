//! Disappearing messages, a feature: a conversation's timer (off, 5 minutes, an hour, a day,
//! a week), set by either side and shown on both, and the sweeper that deletes each message
//! of such a conversation once its time since it was sent (or received) has passed, from the
//! store, the outbox if it never left, and, for a file, the blob store's copy.
//!
//! Setting a timer writes the setting, a line in the conversation and the sealed
//! [`Payload::Timer`] for the contact in one transaction; the contact stores it with its own
//! line. Of two changes made at once, the later one (by the setter's clock) holds on both.
//! A message written while a timer is on gets its time of expiry in the same transaction
//! (the store's `expiry` tree); messages written before keep theirs.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Events, Signal};
use crate::contacts::Roster;
use crate::inbox::{BoxFuture, Handled, Incoming, PayloadHandler, PayloadKind};
use crate::limits::TIMER_CHOICES;
use crate::model::{now_ms, timer_label, Contact, ContactView, Event, MessageId};
use crate::outbox::Outbox;
use crate::store::{Changes, OutboxKind, Store, TimerSetting};
use crate::wire::Payload;
use crate::Error;

/// The longest the sweeper sleeps before it looks again (a message written meanwhile wakes it
/// sooner).
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Messages deleted per transaction.
const SWEEP_BATCH: usize = 512;
/// The latest `set_at` taken from a contact, far beyond any clock: this side's next change is
/// stamped one later than the one in force, so it always overtakes, and that never overflows.
const LATEST_SET_AT: u64 = u64::MAX / 2;
/// How often setting a timer is tried when a contact's change keeps overtaking it.
const SET_TRIES: usize = 3;

/// The disappearing-messages feature: a cheap handle.
#[derive(Debug, Clone)]
pub(crate) struct Timers(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    store: Store,
    outbox: Outbox,
    roster: Roster,
    events: Events,
    bus: Bus,
    cancel: CancellationToken,
    /// Wakes the sweeper (a timer was set).
    wake: Notify,
}

/// Whether `secs` is a timer Ferry offers (0 is off).
pub(crate) fn valid(secs: u64) -> bool {
    secs == 0 || TIMER_CHOICES.contains(&secs)
}

/// The line a change of timer writes, by `who` ("You", or the contact's name).
fn line(who: &str, secs: u64) -> String {
    if secs == 0 {
        format!("{who} turned off disappearing messages.")
    } else {
        format!(
            "{who} set disappearing messages to {}: new messages are deleted on both sides {} \
             after they are sent.",
            timer_label(secs),
            timer_label(secs)
        )
    }
}

impl Timers {
    pub(crate) fn new(
        store: Store,
        outbox: Outbox,
        roster: Roster,
        events: Events,
        bus: Bus,
        cancel: CancellationToken,
    ) -> Timers {
        Timers(Arc::new(Inner {
            store,
            outbox,
            roster,
            events,
            bus,
            cancel,
            wake: Notify::new(),
        }))
    }

    /// The payload kinds this feature takes, for the inbox's table (held weakly).
    pub(crate) fn handlers(&self) -> Vec<(PayloadKind, Arc<dyn PayloadHandler>)> {
        let h: Arc<dyn PayloadHandler> = Arc::new(Handler(Arc::downgrade(&self.0)));
        vec![(PayloadKind::Timer, h)]
    }

    /// Sets the timer of the conversation with `contact` (0 turns it off) and tells them.
    pub(crate) async fn set(&self, contact: &Contact, secs: u64) -> Result<ContactView, Error> {
        if !valid(secs) {
            return Err(Error::InvalidInput(format!(
                "disappearing messages can be off, 5 minutes, 1 hour, 1 day or 1 week, not {}",
                timer_label(secs)
            )));
        }
        let inner = &self.0;
        let mut tries = 0;
        let shown = loop {
            if inner.store.timer_secs(&contact.id)? == secs {
                return inner.roster.view(contact);
            }
            tries += 1;
            // Later than the one in force, even if this clock is behind the setter's of that
            // one (a contact's is never believed past LATEST_SET_AT, so this cannot overflow).
            let set_at = inner
                .store
                .timer(&contact.id)?
                .map_or(0, |t| t.set_at.saturating_add(1))
                .max(now_ms());
            let timer = TimerSetting { secs, set_at };
            let text = inner
                .store
                .system_line(&contact.id, line("You", secs), now_ms())?;
            let mut stored = false;
            inner
                .outbox
                .queue_with(
                    &contact.id,
                    MessageId::random(),
                    &Payload::Timer { secs, set_at },
                    OutboxKind::Control,
                    |store, session, item, plain| {
                        stored = store.queue_timer(session, item, plain, &timer, &text)?;
                        Ok(())
                    },
                )
                .await?;
            if stored {
                break text;
            }
            // A change from the contact, stamped later, arrived in between: this one, stamped
            // after it, goes again.
            if tries == SET_TRIES {
                return Err(Error::InvalidInput(
                    "the contact keeps changing the timer at the same moment: try again".into(),
                ));
            }
        };
        tracing::info!(contact = %contact.id.fmt_short(), secs, "timer set");
        inner.events.emit(Event::MessageSent {
            message: shown,
            transfer: None,
        });
        inner.wake.notify_one();
        let view = inner.roster.view(contact)?;
        inner.events.emit(Event::ContactChanged {
            contact: view.clone(),
        });
        Ok(view)
    }

    /// The sweeper: deletes what expired, then sleeps until the next expiry (at most
    /// [`SWEEP_EVERY`]).
    pub(crate) async fn run(self) {
        let inner = &self.0;
        loop {
            let wake = inner.wake.notified();
            let mut rest = SWEEP_EVERY;
            match self.sweep().await {
                Ok(next) => {
                    if let Some(at) = next {
                        rest = rest.min(Duration::from_millis(at.saturating_sub(now_ms())));
                    }
                }
                Err(e) => tracing::error!("deleting expired messages: {e}"),
            }
            tokio::select! {
                _ = inner.cancel.cancelled() => return,
                _ = wake => {}
                _ = tokio::time::sleep(rest) => {}
            }
        }
    }

    /// Deletes every message whose time ran out. Returns when the next one expires. Node start
    /// runs it once before transfers resume, so none whose message expired meanwhile starts.
    pub(crate) async fn sweep(&self) -> Result<Option<u64>, Error> {
        let inner = &self.0;
        loop {
            // Up to a batch of sled reads and writes: off the async threads.
            let store = inner.store.clone();
            let gone = tokio::task::spawn_blocking(move || store.expire(now_ms(), SWEEP_BATCH))
                .await
                .map_err(|_| Error::Closed)??;
            if gone.is_empty() {
                return inner.store.next_expiry();
            }
            inner.store.flush().await?;
            let mut by_contact: std::collections::BTreeMap<[u8; 32], Vec<MessageId>> =
                Default::default();
            for e in gone.iter() {
                by_contact
                    .entry(*e.contact.as_bytes())
                    .or_default()
                    .push(e.id);
            }
            tracing::info!(n = gone.len(), "expired messages deleted");
            for t in gone.into_iter().filter_map(|e| e.transfer) {
                inner.bus.emit(Signal::TransferExpired(Box::new(t)));
            }
            for (contact, ids) in by_contact {
                let Ok(contact) = iroh::PublicKey::from_bytes(&contact) else {
                    continue;
                };
                inner.events.emit(Event::MessagesExpired { contact, ids });
                // Its unread and waiting counts may have gone down.
                if let Ok(Some(c)) = inner.store.contact(&contact) {
                    if let Ok(view) = inner.roster.view(&c) {
                        inner.events.emit(Event::ContactChanged { contact: view });
                    }
                }
            }
            tokio::task::yield_now().await;
        }
    }
}

/// The timer's part of the inbox.
struct Handler(Weak<Inner>);

impl PayloadHandler for Handler {
    fn handle(&self, incoming: Incoming) -> BoxFuture<'_, Result<Handled, Error>> {
        Box::pin(async move {
            let feature = self.0.upgrade().ok_or(Error::Closed)?;
            let Incoming { from, payload, .. } = incoming;
            let Payload::Timer { secs, set_at } = payload else {
                return Err(Error::Protocol(format!("timers cannot take {payload:?}")));
            };
            if !valid(secs) {
                return Err(Error::Protocol(format!(
                    "{} is not a disappearing-message timer Ferry offers",
                    timer_label(secs)
                )));
            }
            let set_at = set_at.min(LATEST_SET_AT);
            let text = feature
                .store
                .system_line(&from.id, line(&from.name, secs), now_ms())?;
            let shown = text.clone();
            Ok(Handled {
                changes: Changes {
                    timer: Some((from.id, TimerSetting { secs, set_at }, text)),
                    ..Changes::default()
                },
                after: Some(Box::new(move |applied| {
                    Box::pin(async move {
                        if !applied.timer {
                            return;
                        }
                        feature.wake.notify_one();
                        feature.events.emit(Event::MessageReceived {
                            message: shown,
                            from: from.name.clone(),
                        });
                        if let Ok(view) = feature.roster.view(&from) {
                            feature.events.emit(Event::ContactChanged { contact: view });
                        }
                    })
                })),
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_the_offered_timers_are_taken_and_lines_say_which() {
        for secs in [0, 300, 3600, 86_400, 604_800] {
            assert!(valid(secs), "{secs}");
        }
        for secs in [1, 59, 301, u64::MAX] {
            assert!(!valid(secs), "{secs}");
        }
        assert_eq!(line("You", 0), "You turned off disappearing messages.");
        assert!(line("Bob", 3600).starts_with("Bob set disappearing messages to 1 hour"));
        assert_eq!(timer_label(604_800), "1 week");
        assert_eq!(timer_label(300), "5 minutes");
    }
}
