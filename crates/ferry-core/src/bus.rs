//! Two ways news travels inside a node: [`Events`], the stream front ends follow, and [`Bus`],
//! the internal signals (a link came up or went down, a tick, a contact blocked or removed) that
//! let a feature react to the network, or to another feature, without knowing it.

use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use crate::model::{ContactId, Event};

/// How many events a slow front end may fall behind before it misses some (it then reloads).
pub(crate) const EVENT_BACKLOG: usize = 1024;

/// The outside event stream: what the app, the CLI and the control socket show.
#[derive(Debug, Clone)]
pub(crate) struct Events(broadcast::Sender<Event>);

impl Events {
    pub(crate) fn new() -> Events {
        Events(broadcast::channel(EVENT_BACKLOG).0)
    }

    pub(crate) fn emit(&self, event: Event) {
        // No subscriber is fine: events are a view, the store is the truth.
        let _ = self.0.send(event);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}

/// An internal signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Signal {
    /// A live link to this contact was established (dialled or accepted).
    LinkUp(ContactId),
    /// The live link to this contact closed and no newer one replaced it.
    LinkDown(ContactId),
    /// The periodic presence round finished.
    Tick,
    /// The user blocked this contact (the store says so already; its link is closed).
    Blocked(ContactId),
    /// The user unblocked this contact.
    Unblocked(ContactId),
    /// The user is removing this contact: sent just before its records go.
    Removing(ContactId),
    /// The user accepted this contact's changed identity key: what waited may go out.
    KeyAccepted(ContactId),
    /// A payload from this contact could not be opened, or there is no session to seal with:
    /// the session is out of step, and a reset may bring it back.
    SessionBroken(ContactId),
    /// A session reset with this contact completed and is stored: what waits for it was sealed
    /// again and may go out now.
    SessionReset(ContactId),
    /// A file message's time ran out and it was deleted with its transfer's record (given
    /// here): the transfer stops, and its grant and the blob store's copy go too.
    TransferExpired(Box<crate::model::Transfer>),
    /// A file offered in a group was stored, waiting for an answer (given here).
    GroupFileOffered(Box<crate::model::Transfer>),
}

type Subscriber = Arc<dyn Fn(Signal) + Send + Sync>;

/// The internal bus. Subscribers are called in order, on the emitter's task, and must not block
/// (they spawn what takes time). Nothing is queued, so nothing can be lost or lag behind: a
/// subscriber registered while the node is built sees every signal after that.
#[derive(Clone, Default)]
pub(crate) struct Bus {
    subscribers: Arc<RwLock<Vec<Subscriber>>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

impl Bus {
    pub(crate) fn subscribe(&self, f: impl Fn(Signal) + Send + Sync + 'static) {
        let mut subs = match self.subscribers.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        subs.push(Arc::new(f));
    }

    pub(crate) fn emit(&self, signal: Signal) {
        // Copy the list out, so a subscriber may subscribe or emit without a deadlock.
        let subs: Vec<Subscriber> = match self.subscribers.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        for s in subs {
            s(signal.clone());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn every_subscriber_sees_every_signal_in_order() {
        let bus = Bus::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for n in 0..2 {
            let seen = seen.clone();
            bus.subscribe(move |s| seen.lock().unwrap().push((n, s)));
        }
        let id = iroh::SecretKey::from_bytes(&[7; 32]).public();
        bus.emit(Signal::LinkUp(id));
        bus.emit(Signal::Tick);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (0, Signal::LinkUp(id)),
                (1, Signal::LinkUp(id)),
                (0, Signal::Tick),
                (1, Signal::Tick)
            ]
        );
    }

    #[test]
    fn a_subscriber_may_emit_again() {
        let bus = Bus::default();
        let count = Arc::new(Mutex::new(0));
        let (inner, c) = (bus.clone(), count.clone());
        bus.subscribe(move |s| {
            *c.lock().unwrap() += 1;
            if let Signal::LinkUp(_) = s {
                inner.emit(Signal::Tick);
            }
        });
        bus.emit(Signal::LinkUp(
            iroh::SecretKey::from_bytes(&[1; 32]).public(),
        ));
        assert_eq!(*count.lock().unwrap(), 2);
    }
}
