//! The inbox: every sealed delivery from a contact comes in here. It rate-limits per contact,
//! drops duplicates, opens the envelope under that contact's session lock, and hands the
//! payload to the handler registered for its kind. The handler answers with store
//! [`Changes`]; the inbox commits them together with the advanced session in one transaction,
//! flushes once, runs the handler's follow-up (events, further work), and only then lets the
//! sender have its acknowledgement.
//!
//! Features register handlers ([`Inbox::register`]); they never call each other.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::e2e::{AssociatedData, E2eError, Envelope};
use crate::model::{
    now_ms, Contact, ContactId, ConversationId, Direction, Message, MessageId, MessageState,
    TransferId,
};
use crate::sessions::SessionLocks;
use crate::store::{Applied, Changes, Store};
use crate::wire::Payload;
use crate::Error;

/// Incoming deliveries allowed per contact per second, sustained.
pub const RATE_PER_SEC: f64 = 20.0;
/// Incoming deliveries allowed per contact in a burst.
pub const RATE_BURST: f64 = 100.0;

/// A boxed future, for handlers behind a trait object.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What runs once a handler's changes are durable, with what the store did.
pub(crate) type After = Box<dyn FnOnce(Applied) -> BoxFuture<'static, ()> + Send>;

/// A payload kind, the key of the handler table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PayloadKind {
    Text,
    Read,
    PairConfirm,
    FileOffer,
    TransferUpdate,
}

impl PayloadKind {
    fn of(payload: &Payload) -> PayloadKind {
        match payload {
            Payload::Text { .. } => PayloadKind::Text,
            Payload::Read { .. } => PayloadKind::Read,
            Payload::PairConfirm => PayloadKind::PairConfirm,
            Payload::FileOffer { .. } => PayloadKind::FileOffer,
            Payload::TransferUpdate { .. } => PayloadKind::TransferUpdate,
        }
    }
}

/// One opened payload, as a handler sees it.
#[derive(Debug)]
pub(crate) struct Incoming {
    /// Who sent it (a stored contact).
    pub(crate) from: Contact,
    /// Its message id (bound into the envelope's associated data).
    pub(crate) id: MessageId,
    /// The conversation it belongs to.
    pub(crate) conversation: ConversationId,
    /// What it says.
    pub(crate) payload: Payload,
}

/// A received message as it is stored, for handlers that show a payload in the conversation.
pub(crate) fn received_message(
    conversation: ConversationId,
    from: &Contact,
    id: MessageId,
    seq: u64,
    body: String,
    sent_at: u64,
    transfer: Option<TransferId>,
) -> Message {
    Message {
        id,
        conversation,
        contact: from.id,
        seq,
        direction: Direction::Incoming,
        body,
        sent_at,
        stored_at: now_ms(),
        state: MessageState::Received,
        transfer,
        author: from.id,
    }
}

/// A handler's decision: what to store, and what to do once it is stored. The default stores
/// nothing but the session.
#[derive(Default)]
pub(crate) struct Handled {
    /// Committed with the advanced session in one transaction.
    pub(crate) changes: Changes,
    /// Run after the flush, unless the store found the message to be a duplicate.
    pub(crate) after: Option<After>,
}

/// Takes one kind of payload. Runs while the sender's session lock is held, so it must not
/// seal anything to that contact itself: follow-ups that do go in [`Handled::after`].
pub(crate) trait PayloadHandler: Send + Sync {
    /// Decides what the payload changes.
    fn handle(&self, incoming: Incoming) -> BoxFuture<'_, Result<Handled, Error>>;
}

/// A token bucket limiting what one contact can make us store.
#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new() -> Self {
        TokenBucket {
            tokens: RATE_BURST,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * RATE_PER_SEC;
        self.tokens = (self.tokens + refill).min(RATE_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// How a delivery ended, for the chat protocol to answer.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Stored and flushed, or already had it: acknowledge.
    Taken,
    /// Over this contact's rate: the sender may try again later.
    RateLimited,
    /// Not taken.
    Refused(Error),
}

/// The inbox of one node.
pub(crate) struct Inbox {
    me: ContactId,
    store: Store,
    sessions: Arc<SessionLocks>,
    /// Token buckets per contact; guards only the map, never held across an await.
    limits: Mutex<HashMap<ContactId, TokenBucket>>,
    /// Set once by the node after the features exist.
    handlers: OnceLock<HashMap<PayloadKind, Arc<dyn PayloadHandler>>>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

impl Inbox {
    /// An inbox with no handlers yet.
    pub(crate) fn new(me: ContactId, store: Store, sessions: Arc<SessionLocks>) -> Inbox {
        Inbox {
            me,
            store,
            sessions,
            limits: Mutex::default(),
            handlers: OnceLock::new(),
        }
    }

    /// Sets the handler table (once; later calls are ignored).
    pub(crate) fn register(&self, table: Vec<(PayloadKind, Arc<dyn PayloadHandler>)>) {
        let _ = self.handlers.set(table.into_iter().collect());
    }

    fn allowed(&self, from: &ContactId) -> bool {
        self.limits
            .lock()
            .map(|mut l| l.entry(*from).or_insert_with(TokenBucket::new).take())
            .unwrap_or(false)
    }

    /// Takes one delivery from `from`.
    pub(crate) async fn deliver(
        &self,
        from: ContactId,
        id: MessageId,
        envelope: &Envelope,
    ) -> Outcome {
        if !self.allowed(&from) {
            return Outcome::RateLimited;
        }
        match self.receive(from, id, envelope).await {
            Ok(()) => Outcome::Taken,
            Err(e) => Outcome::Refused(e),
        }
    }

    async fn receive(
        &self,
        from: ContactId,
        id: MessageId,
        envelope: &Envelope,
    ) -> Result<(), Error> {
        if self.store.was_received(&id)? {
            return Ok(()); // a retry after our acknowledgement was lost
        }
        let guard = self.sessions.lock(&from).await;
        let contact = self
            .store
            .contact(&from)?
            .ok_or_else(|| Error::UnknownContact(from.to_string()))?;
        let mut session = self
            .store
            .session(&from)?
            .ok_or_else(|| Error::Protocol("no session".into()))?;
        let ad = AssociatedData {
            sender: *from.as_bytes(),
            recipient: *self.me.as_bytes(),
            message_id: id.0,
        };
        let plain = match session.open(envelope, &ad) {
            Ok(p) => p,
            // The key is gone. Under an id we took (a retry racing its first copy), that is a
            // duplicate to acknowledge. Under a new id it is a message we can never read: the
            // sender must see it fail, not be told it arrived.
            Err(E2eError::Replay) if self.store.was_received(&id)? => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let payload: Payload = postcard::from_bytes(&plain)
            .map_err(|e| Error::Protocol(format!("undecodable payload: {e}")))?;
        let kind = PayloadKind::of(&payload);
        let handler = self
            .handlers
            .get()
            .and_then(|t| t.get(&kind))
            .cloned()
            .ok_or_else(|| Error::Protocol(format!("no handler for {kind:?} payloads")))?;
        let Handled { mut changes, after } = handler
            .handle(Incoming {
                from: contact,
                id,
                conversation: ConversationId::direct(&self.me, &from),
                payload,
            })
            .await?;
        changes.session = Some((from, session));
        changes.received = Some(id);
        let applied = self.store.apply(&changes)?;
        self.store.flush().await?;
        // Follow-ups may seal to this contact again (an automatic accept): not under the lock.
        drop(guard);
        if !applied.duplicate {
            if let Some(after) = after {
                after(applied).await;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::e2e::{respond, InitiatorHandshake, Session};
    use crate::identity::Identity;
    use crate::model::WireAddr;

    /// Counts what reaches it; stores nothing but the session.
    struct Count(Mutex<Vec<MessageId>>);

    impl PayloadHandler for Count {
        fn handle(&self, incoming: Incoming) -> BoxFuture<'_, Result<Handled, Error>> {
            if let Ok(mut seen) = self.0.lock() {
                seen.push(incoming.id);
            }
            Box::pin(async { Ok(Handled::default()) })
        }
    }

    /// A receiving inbox paired with a sender whose session is returned.
    fn paired(dir: &std::path::Path) -> (Inbox, Arc<Count>, ContactId, ContactId, Session) {
        let (me, them) = (Identity::generate(), Identity::generate());
        let store = Store::open(dir, &me.id()).unwrap();
        let (hs, eph) = InitiatorHandshake::start();
        let (mine, their_eph) =
            respond(me.x25519_secret(), &them.x25519_public(), &eph, b"t").unwrap();
        let theirs = hs
            .complete(them.x25519_secret(), &me.x25519_public(), &their_eph, b"t")
            .unwrap();
        let contact = Contact {
            id: them.id(),
            name: "Them".into(),
            x25519: them.x25519_public(),
            addr: WireAddr::default(),
            paired_at: 1,
            verified: false,
        };
        store.store_pairing(&contact, &mine, None, 1).unwrap();
        let inbox = Inbox::new(me.id(), store, Arc::default());
        let count = Arc::new(Count(Mutex::default()));
        let kinds = [PayloadKind::Text, PayloadKind::Read];
        inbox.register(
            kinds
                .iter()
                .map(|k| (*k, count.clone() as Arc<dyn PayloadHandler>))
                .collect(),
        );
        (inbox, count, me.id(), them.id(), theirs)
    }

    fn seal(
        s: &mut Session,
        from: ContactId,
        to: ContactId,
        id: MessageId,
        p: &Payload,
    ) -> Envelope {
        let ad = AssociatedData {
            sender: *from.as_bytes(),
            recipient: *to.as_bytes(),
            message_id: id.0,
        };
        s.seal(&postcard::to_allocvec(p).unwrap(), &ad).unwrap()
    }

    #[tokio::test]
    async fn a_retry_is_acknowledged_once_taken_but_a_replay_under_a_new_id_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, count, me, them, mut sender) = paired(dir.path());
        let text = Payload::Text {
            body: "hi".into(),
            sent_at: 1,
        };
        let id = MessageId([1; 16]);
        let envelope = seal(&mut sender, them, me, id, &text);
        assert!(matches!(
            inbox.deliver(them, id, &envelope).await,
            Outcome::Taken
        ));
        // The acknowledgement was lost and the sender tries again: taken, not handled twice.
        assert!(matches!(
            inbox.deliver(them, id, &envelope).await,
            Outcome::Taken
        ));
        assert_eq!(count.0.lock().unwrap().len(), 1);
        // The same ciphertext under an id we never took: its key is gone, so it fails.
        let other = MessageId([2; 16]);
        match inbox.deliver(them, other, &envelope).await {
            Outcome::Refused(Error::E2e(E2eError::Replay)) => {}
            other => panic!("expected a refused replay, got {other:?}"),
        }
        // A receipt (no message of its own) is remembered too.
        let receipt = MessageId([3; 16]);
        let read = Payload::Read { ids: vec![id.0] };
        let envelope = seal(&mut sender, them, me, receipt, &read);
        for _ in 0..2 {
            assert!(matches!(
                inbox.deliver(them, receipt, &envelope).await,
                Outcome::Taken
            ));
        }
        assert_eq!(count.0.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_stranger_or_a_kind_with_no_handler_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox, _, me, them, mut sender) = paired(dir.path());
        let id = MessageId([5; 16]);
        let envelope = seal(&mut sender, them, me, id, &Payload::PairConfirm);
        assert!(matches!(
            inbox.deliver(them, id, &envelope).await,
            Outcome::Refused(Error::Protocol(_))
        ));
        let stranger = Identity::generate().id();
        assert!(matches!(
            inbox.deliver(stranger, MessageId([6; 16]), &envelope).await,
            Outcome::Refused(Error::UnknownContact(_))
        ));
    }
}
