//! The outbox, a service: every sealed payload for a contact waits here, durable, until the
//! contact has acknowledged it. Messaging and transfers both queue through it; it delivers per
//! contact in order, backs off from contacts it cannot reach, and starts again at once when a
//! link to them comes up (a [`Signal::LinkUp`] on the bus).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::endpoint::Connection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Events, Signal};
use crate::e2e::{AssociatedData, Session};
use crate::model::{
    now_ms, ContactId, ConversationId, Direction, Event, Message, MessageId, MessageState,
    Transfer, TransferId,
};
use crate::net::{self, Links};
use crate::sessions::SessionLocks;
use crate::store::{OutboxItem, OutboxKind, Store};
use crate::wire::{
    ChatRequest, ChatResponse, Delivery, DeliveryAnswer, Payload, ALPN_CHAT_2, MAX_BATCH,
    MAX_FRAME, MAX_TEXT,
};
use crate::Error;

/// The longest wait between two delivery attempts to an unreachable contact.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The longest "retry after" from a contact that is honoured as asked (a longer one is cut to
/// this: a peer cannot park our outbox).
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// How many of the first items go in one batch: at most [`MAX_BATCH`], and within a frame
/// (always at least one; a single item fits a frame by construction).
fn batch_len(items: &[(u64, OutboxItem)]) -> usize {
    // A delivery's encoding is its ciphertext plus a bounded overhead (id, header, nonce,
    // lengths); counting it generously keeps the frame under the limit without encoding twice.
    const OVERHEAD: usize = 128;
    let mut bytes = 16;
    let mut n = 0;
    for (_, item) in items.iter().take(MAX_BATCH) {
        bytes += item.envelope.ciphertext.len() + OVERHEAD;
        if n > 0 && bytes > MAX_FRAME {
            break;
        }
        n += 1;
    }
    n.max(1).min(items.len())
}

/// Seals `plain` (an encoded [`Payload`]) from `me` to `contact` with the next key of
/// `session`, as the outbox item that carries it. A session reset seals what waited again
/// with this, each item under its own id and kind.
pub(crate) fn seal_item(
    me: &ContactId,
    session: &mut Session,
    contact: &ContactId,
    id: MessageId,
    plain: &[u8],
    kind: OutboxKind,
) -> Result<OutboxItem, Error> {
    let ad = AssociatedData {
        sender: *me.as_bytes(),
        recipient: *contact.as_bytes(),
        message_id: id.0,
    };
    let envelope = session.seal(plain, &ad)?;
    Ok(OutboxItem {
        contact: *contact,
        message_id: id,
        envelope,
        kind,
        queued_at: now_ms(),
    })
}

/// Whether `text` may be sent as a message (to a contact or a group): not empty, and within
/// [`MAX_TEXT`].
pub(crate) fn check_text(text: &str) -> Result<(), Error> {
    if text.len() > MAX_TEXT {
        return Err(Error::TooLong {
            what: "message",
            len: text.len(),
            max: MAX_TEXT,
        });
    }
    if text.trim().is_empty() {
        return Err(Error::InvalidInput("the message is empty".into()));
    }
    Ok(())
}

/// When to try an unreachable contact again.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: tokio::time::Instant,
    delay: Duration,
}

/// The outbox service: a cheap handle.
#[derive(Debug, Clone)]
pub(crate) struct Outbox(Arc<OutboxInner>);

#[derive(Debug)]
struct OutboxInner {
    me: ContactId,
    store: Store,
    sessions: Arc<SessionLocks>,
    links: Links,
    events: Events,
    bus: Bus,
    cancel: CancellationToken,
    /// Wakes the worker (new item, contact came online).
    wake: Notify,
    /// Signalled after each pass of the worker.
    drained: Notify,
    backoff: Mutex<HashMap<ContactId, Backoff>>,
}

impl Outbox {
    pub(crate) fn new(
        me: ContactId,
        store: Store,
        sessions: Arc<SessionLocks>,
        links: Links,
        events: Events,
        bus: &Bus,
        cancel: CancellationToken,
    ) -> Outbox {
        let outbox = Outbox(Arc::new(OutboxInner {
            me,
            store,
            sessions,
            links,
            events,
            bus: bus.clone(),
            cancel,
            wake: Notify::new(),
            drained: Notify::new(),
            backoff: Mutex::default(),
        }));
        // A contact that just came online gets what waits for it now, not after a backoff.
        let weak = Arc::downgrade(&outbox.0);
        bus.subscribe(move |signal| {
            if let (
                Signal::LinkUp(id)
                | Signal::Unblocked(id)
                | Signal::KeyAccepted(id)
                | Signal::SessionReset(id),
                Some(inner),
            ) = (signal, weak.upgrade())
            {
                let outbox = Outbox(inner);
                outbox.clear_backoff(&id);
                outbox.0.wake.notify_one();
            }
        });
        outbox
    }

    /// A new outgoing message in the conversation with `contact`, not yet queued.
    pub(crate) fn new_message(
        &self,
        contact: &ContactId,
        body: String,
        transfer: Option<TransferId>,
    ) -> Result<Message, Error> {
        let now = now_ms();
        Ok(Message {
            id: MessageId::random(),
            conversation: ConversationId::direct(&self.0.me, contact),
            contact: *contact,
            seq: self.0.store.next_seq()?,
            direction: Direction::Outgoing,
            body,
            sent_at: now,
            stored_at: now,
            state: MessageState::Queued,
            transfer,
            author: self.0.me,
        })
    }

    /// Seals `payload` with the next key of the session with `contact` and hands the advanced
    /// session, the item and the plaintext it seals (kept, so a session reset can seal it
    /// again) to `commit`, all under that contact's session lock, so the session and the item
    /// become durable together. Then flushes and wakes the worker.
    pub(crate) async fn queue_with(
        &self,
        contact: &ContactId,
        id: MessageId,
        payload: &Payload,
        kind: OutboxKind,
        commit: impl FnOnce(&Store, &Session, &OutboxItem, &[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        {
            let _guard = self.0.sessions.lock(contact).await;
            let plain = postcard::to_allocvec(payload)?;
            let mut session: Session = match self.0.store.session(contact)? {
                Some(s) => s,
                None => {
                    // The session is gone (a contact is always stored with one): a reset
                    // makes a new one.
                    self.0.bus.emit(Signal::SessionBroken(*contact));
                    return Err(Error::OutOfStep { resetting: true });
                }
            };
            let item = seal_item(&self.0.me, &mut session, contact, id, &plain, kind)?;
            commit(&self.0.store, &session, &item, &plain)?;
        }
        self.0.store.flush().await?;
        self.0.wake.notify_one();
        Ok(())
    }

    /// Seals and queues a payload, with the message (and transfer) it shows as, if any.
    pub(crate) async fn queue(
        &self,
        contact: &ContactId,
        id: MessageId,
        payload: &Payload,
        kind: OutboxKind,
        message: Option<&Message>,
        transfer: Option<&Transfer>,
    ) -> Result<(), Error> {
        self.queue_with(contact, id, payload, kind, |store, session, item, plain| {
            store
                .queue_outgoing(session, item, plain, message, transfer)
                .map(|_| ())
        })
        .await?;
        if let Some(message) = message {
            // Every front end shows it, whichever one sent it (app, CLI, control socket).
            self.0.events.emit(Event::MessageSent {
                message: message.clone(),
                transfer: transfer.cloned(),
            });
        }
        Ok(())
    }

    /// Number of payloads waiting (for one contact, or all).
    pub(crate) fn len(&self, contact: Option<&ContactId>) -> Result<usize, Error> {
        Ok(self
            .0
            .store
            .outbox()?
            .iter()
            .filter(|(_, i)| contact.is_none_or(|c| *c == i.contact))
            .count())
    }

    /// Waits until nothing waits for `contact` (or anyone), up to `timeout`. Returns whether it
    /// drained.
    pub(crate) async fn wait_drained(
        &self,
        contact: Option<&ContactId>,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let drained = self.0.drained.notified();
            if self.len(contact)? == 0 {
                return Ok(true);
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return Ok(self.len(contact)? == 0);
            }
        }
    }

    fn clear_backoff(&self, id: &ContactId) {
        if let Ok(mut b) = self.0.backoff.lock() {
            b.remove(id);
        }
    }

    fn back_off(&self, id: &ContactId) {
        if let Ok(mut b) = self.0.backoff.lock() {
            let delay = b
                .get(id)
                .map(|b| (b.delay * 2).min(MAX_BACKOFF))
                .unwrap_or(Duration::from_secs(1));
            b.insert(
                *id,
                Backoff {
                    until: tokio::time::Instant::now() + delay,
                    delay,
                },
            );
        }
    }

    /// Delivers a contact's queued items in order; stops at the first that does not go through.
    async fn deliver_contact(self, id: ContactId, items: Vec<(u64, OutboxItem)>) {
        let store = &self.0.store;
        let contact = match store.contact(&id) {
            Ok(Some(c)) => c,
            _ => {
                tracing::warn!(contact = %id.fmt_short(), "outbox items for an unknown contact");
                return;
            }
        };
        let conn = match self.0.links.link(&contact).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(contact = %id.fmt_short(), "not reachable: {e}");
                self.back_off(&id);
                self.0.links.update_presence(&id);
                return;
            }
        };
        let delivered = if conn.alpn() == ALPN_CHAT_2 {
            self.deliver_batches(&id, &conn, &items).await
        } else {
            self.deliver_singly(&id, &conn, items).await
        };
        if delivered {
            self.clear_backoff(&id);
        }
    }

    /// Delivers items one request each (`ferry/chat/1`, a contact on an earlier release).
    /// Returns whether all went through.
    async fn deliver_singly(
        &self,
        id: &ContactId,
        conn: &Connection,
        items: Vec<(u64, OutboxItem)>,
    ) -> bool {
        for (seq, item) in items {
            let req = ChatRequest::Deliver {
                message_id: item.message_id.0,
                envelope: item.envelope.clone(),
            };
            // An online contact over its allowance says how long to wait: wait exactly that,
            // then send the same item again (no backoff, no reordering).
            let answer = loop {
                match net::request(conn, &req).await {
                    Ok(ChatResponse::RetryAfter { ms }) => {
                        if !self.wait_as_asked(ms).await {
                            return false;
                        }
                    }
                    other => break other,
                }
            };
            let answer = match answer {
                Ok(ChatResponse::Ack) => DeliveryAnswer::Ack,
                Ok(ChatResponse::Reject { reason, retry }) => {
                    DeliveryAnswer::Reject { reason, retry }
                }
                other => {
                    tracing::debug!(contact = %id.fmt_short(), "delivery deferred: {other:?}");
                    self.back_off(id);
                    return false;
                }
            };
            if !self.record(id, &[(seq, item)], &[answer]).await {
                return false;
            }
        }
        true
    }

    /// Delivers items in batches (`ferry/chat/2`), in order, one request and one flush on
    /// each side per batch. A batch taken whole is recorded while the next one is on its way
    /// (the receiver takes them in order either way; a crash before the record only means the
    /// receiver is sent, and acknowledges, what it already has). Returns whether all went
    /// through.
    async fn deliver_batches(
        &self,
        id: &ContactId,
        conn: &Connection,
        items: &[(u64, OutboxItem)],
    ) -> bool {
        let mut rest = items;
        let mut recording: Option<tokio::task::JoinHandle<bool>> = None;
        let all_recorded = |recording: Option<tokio::task::JoinHandle<bool>>| async move {
            match recording {
                Some(task) => task.await.unwrap_or(false),
                None => true,
            }
        };
        while !rest.is_empty() {
            let batch = &rest[..batch_len(rest)];
            let req = ChatRequest::DeliverBatch(
                batch
                    .iter()
                    .map(|(_, i)| Delivery {
                        message_id: i.message_id.0,
                        envelope: i.envelope.clone(),
                    })
                    .collect(),
            );
            let answer = net::request(conn, &req).await;
            if !all_recorded(recording.take()).await {
                return false;
            }
            let (mut answers, retry_after) = match answer {
                Ok(ChatResponse::Batch {
                    answers,
                    retry_after_ms,
                }) => (answers, retry_after_ms),
                other => {
                    tracing::debug!(contact = %id.fmt_short(), "batch deferred: {other:?}");
                    self.back_off(id);
                    return false;
                }
            };
            // Never trust the count: answers beyond the batch answer nothing.
            answers.truncate(batch.len());
            let answered = answers.len();
            let whole =
                answered == batch.len() && answers.iter().all(|a| matches!(a, DeliveryAnswer::Ack));
            rest = &rest[answered..];
            if whole && !rest.is_empty() {
                let (outbox, id, batch) = (self.clone(), *id, batch.to_vec());
                recording = Some(tokio::spawn(async move {
                    outbox.record(&id, &batch, &answers).await
                }));
                continue;
            }
            if !self.record(id, &batch[..answered], &answers).await {
                return false;
            }
            if answered < batch.len() {
                match retry_after {
                    Some(ms) if !self.wait_as_asked(ms).await => return false,
                    Some(_) => {}
                    // Stopped with nothing to say when to come back, or nothing taken at all
                    // (a receiver that cannot store now): try later, not in a tight loop.
                    None if answered == 0 => {
                        self.back_off(id);
                        return false;
                    }
                    None => {}
                }
            }
        }
        all_recorded(recording).await
    }

    /// Waits the "retry after" a contact over its allowance asked for (capped). Returns false
    /// if the node is closing.
    async fn wait_as_asked(&self, ms: u32) -> bool {
        let wait = Duration::from_millis(u64::from(ms)).min(MAX_RETRY_AFTER);
        tokio::select! {
            _ = self.0.cancel.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }

    /// Records the answers to delivered items (one answer each, in order): acknowledged ones
    /// leave the outbox and show delivered, refused ones fail; all with one flush. Returns
    /// false (having backed off) at an item the contact could not take now.
    async fn record(
        &self,
        id: &ContactId,
        items: &[(u64, OutboxItem)],
        answers: &[DeliveryAnswer],
    ) -> bool {
        let store = &self.0.store;
        let mut acked = Vec::new();
        let mut failed = Vec::new();
        let mut stopped = false;
        for ((seq, item), answer) in items.iter().zip(answers) {
            match answer {
                DeliveryAnswer::Ack => acked.push((*seq, item)),
                DeliveryAnswer::Reject {
                    reason,
                    retry: false,
                } => {
                    tracing::warn!(contact = %id.fmt_short(), "delivery refused for good: {reason}");
                    failed.push((*seq, item, reason));
                }
                DeliveryAnswer::Reject {
                    reason,
                    retry: true,
                } => {
                    tracing::debug!(contact = %id.fmt_short(), "delivery deferred: {reason}");
                    stopped = true;
                    break;
                }
            }
        }
        let changed = match store.complete_deliveries(&acked) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("recording delivery: {e}");
                return false;
            }
        };
        // A timer an earlier release cannot take: the user is told their copies stay.
        let mut refused_timer = false;
        for (seq, item, _) in &failed {
            if item.kind == OutboxKind::Control {
                let plain = store.kept_plain(*seq).ok().flatten();
                refused_timer |= plain
                    .and_then(|p| postcard::from_bytes::<Payload>(&p).ok())
                    .is_some_and(|p| matches!(p, Payload::Timer { .. }));
            }
            let _ = store.drop_outbox_item(*seq);
            let _ = store.set_message_state(&item.message_id, MessageState::Failed);
        }
        if let Err(e) = store.flush().await {
            tracing::error!("flush: {e}");
        }
        for ((_, item), changed) in acked.iter().zip(changed) {
            if changed {
                self.0.events.emit(Event::DeliveryChanged {
                    id: item.message_id,
                    contact: *id,
                    state: MessageState::Delivered,
                });
            }
        }
        // A receipt or transfer update has no message to show as failed. The user is told
        // why a message was refused (a quota the contact keeps, say).
        let name = || store.contact(id).ok().flatten().map(|c| c.name);
        for (_, item, reason) in failed
            .iter()
            .filter(|(_, i, _)| i.kind == OutboxKind::Message)
        {
            self.0.events.emit(Event::DeliveryChanged {
                id: item.message_id,
                contact: *id,
                state: MessageState::Failed,
            });
            let name = name().unwrap_or_else(|| id.fmt_short().to_string());
            self.0.events.emit(Event::Notice {
                contact: *id,
                text: format!("{name} refused a message: {reason}"),
                name,
            });
        }
        if refused_timer {
            let name = name().unwrap_or_else(|| id.fmt_short().to_string());
            self.0.events.emit(Event::Notice {
                contact: *id,
                text: format!(
                    "{name}'s Ferry did not take the disappearing-messages setting (it may be an \
                     earlier release): their copies of your messages will not disappear."
                ),
                name,
            });
        }
        if stopped {
            self.back_off(id);
        }
        !stopped
    }

    /// The worker: delivers whatever is queued, per contact in order, with backoff for contacts
    /// that are not reachable; woken by new items and by contacts coming online.
    pub(crate) async fn run(self) {
        let cancel = self.0.cancel.clone();
        loop {
            let wake = self.0.wake.notified();
            let items = match self.0.store.outbox() {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!("reading the outbox: {e}");
                    Vec::new()
                }
            };
            let mut per_contact: BTreeMap<[u8; 32], Vec<(u64, OutboxItem)>> = BTreeMap::new();
            for (seq, item) in items {
                per_contact
                    .entry(*item.contact.as_bytes())
                    .or_default()
                    .push((seq, item));
            }
            let now = tokio::time::Instant::now();
            let mut next: Option<tokio::time::Instant> = None;
            let mut set = tokio::task::JoinSet::new();
            for (_, items) in per_contact {
                let Some(id) = items.first().map(|(_, i)| i.contact) else {
                    continue;
                };
                // What waits for a blocked contact is held until it is unblocked, and for one
                // whose key changed until the user accepts the new key.
                if !matches!(self.0.store.sendable(&id), Ok(true)) {
                    continue;
                }
                let until = self
                    .0
                    .backoff
                    .lock()
                    .ok()
                    .and_then(|b| b.get(&id).map(|b| b.until));
                match until {
                    Some(t) if t > now => next = Some(next.map_or(t, |n| n.min(t))),
                    _ => {
                        set.spawn(self.clone().deliver_contact(id, items));
                    }
                }
            }
            let worked = !set.is_empty();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = async { while set.join_next().await.is_some() {} } => {}
            }
            self.0.drained.notify_waiters();
            if worked {
                continue; // look again: new items or new backoffs
            }
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = wake => {}
                _ = sleep => {}
            }
        }
    }
}
