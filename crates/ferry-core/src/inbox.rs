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
use std::time::{Duration, Instant};

use crate::bus::{Bus, Events, Signal};
use crate::e2e::{AssociatedData, E2eError, Envelope};
use crate::model::Event;
use crate::model::{
    now_ms, Contact, ContactId, ConversationId, Direction, Message, MessageId, MessageState,
    TransferId,
};
use crate::sessions::SessionLocks;
use crate::store::{Applied, Changes, Store};
use crate::wire::{Delivery, Payload};
use crate::{Error, Quota};

/// Sealed bytes one contact may have us store per second, sustained.
pub const RATE_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;
/// Sealed bytes one contact may send in a burst above the sustained rate.
pub const RATE_BYTES_BURST: f64 = 4.0 * 1024.0 * 1024.0;
/// Deliveries (frames) one contact may send per second, sustained.
pub const RATE_FRAMES_PER_SEC: f64 = 400.0;
/// Deliveries (frames) one contact may send in a burst.
pub const RATE_FRAMES_BURST: f64 = 1000.0;
/// Bytes one contact may make us store in a day (UTC): sealed payloads, and files accepted
/// automatically. Files the user accepts do not count. Over it, what the contact sends is
/// refused until the next day, and the user is told.
pub const DAILY_BYTES_PER_CONTACT: u64 = 2 * 1024 * 1024 * 1024;
/// A notice about one contact and one quota is shown at most this often.
const NOTICE_EVERY: Duration = Duration::from_secs(60);

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
    Timer,
    /// Entries, key shares and catch-up requests of groups.
    Group,
}

impl PayloadKind {
    fn of(payload: &Payload) -> PayloadKind {
        match payload {
            Payload::Text { .. } => PayloadKind::Text,
            Payload::Read { .. } => PayloadKind::Read,
            Payload::PairConfirm => PayloadKind::PairConfirm,
            Payload::FileOffer { .. } => PayloadKind::FileOffer,
            Payload::TransferUpdate { .. } => PayloadKind::TransferUpdate,
            Payload::Timer { .. } => PayloadKind::Timer,
            Payload::GroupEntries { .. }
            | Payload::GroupKey { .. }
            | Payload::GroupHave { .. }
            | Payload::GroupReceipt { .. } => PayloadKind::Group,
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

/// What one contact may make a node store, as two token buckets. The default is the named
/// constants above; tests lower it to exercise the limiter quickly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allowances {
    /// Sealed bytes per second, sustained.
    pub bytes_per_sec: f64,
    /// Sealed bytes in a burst.
    pub bytes_burst: f64,
    /// Frames per second, sustained.
    pub frames_per_sec: f64,
    /// Frames in a burst.
    pub frames_burst: f64,
    /// Bytes stored per day ([`DAILY_BYTES_PER_CONTACT`]).
    pub daily_bytes: u64,
}

impl Default for Allowances {
    fn default() -> Self {
        Allowances {
            bytes_per_sec: RATE_BYTES_PER_SEC,
            bytes_burst: RATE_BYTES_BURST,
            frames_per_sec: RATE_FRAMES_PER_SEC,
            frames_burst: RATE_FRAMES_BURST,
            daily_bytes: DAILY_BYTES_PER_CONTACT,
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn full(rate: f64, burst: f64) -> Bucket {
        Bucket {
            tokens: burst,
            rate,
            burst,
        }
    }

    fn refill(&mut self, secs: f64) {
        self.tokens = (self.tokens + secs * self.rate).min(self.burst);
    }

    /// How long until `cost` tokens are there (zero if they are now).
    fn wait_for(&self, cost: f64) -> Duration {
        let cost = cost.min(self.burst); // a cost above the burst would never fit
        if self.tokens >= cost {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((cost - self.tokens) / self.rate)
        }
    }
}

/// What one contact may make us store: bytes and frames, each a token bucket. A sender over
/// either is told exactly how long to wait, never refused.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    bytes: Bucket,
    frames: Bucket,
    last: Instant,
}

impl Allowance {
    fn new(a: &Allowances) -> Allowance {
        Allowance {
            bytes: Bucket::full(a.bytes_per_sec.max(1.0), a.bytes_burst.max(1.0)),
            frames: Bucket::full(a.frames_per_sec.max(0.01), a.frames_burst.max(1.0)),
            last: Instant::now(),
        }
    }

    /// Takes one frame of `bytes`, or says how long until it would fit.
    fn take(&mut self, bytes: usize, now: Instant) -> Result<(), Duration> {
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.bytes.refill(secs);
        self.frames.refill(secs);
        let (b, f) = (bytes as f64, 1.0);
        let wait = self.bytes.wait_for(b).max(self.frames.wait_for(f));
        if wait.is_zero() {
            self.bytes.tokens = (self.bytes.tokens - b).max(0.0);
            self.frames.tokens -= f;
            Ok(())
        } else {
            Err(wait)
        }
    }
}

/// How a delivery ended, for the chat protocol to answer.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Stored and flushed, or already had it: acknowledge.
    Taken,
    /// Over this contact's allowance: the sender should try again after this long.
    Slow(Duration),
    /// Not taken.
    Refused(Error),
}

/// The inbox of one node.
pub(crate) struct Inbox {
    me: ContactId,
    store: Store,
    sessions: Arc<SessionLocks>,
    /// What each contact may make us store.
    allowances: Allowances,
    /// Allowances per contact; guards only the map, never held across an await.
    limits: Mutex<HashMap<ContactId, Allowance>>,
    /// Set once by the node after the features exist.
    handlers: OnceLock<HashMap<PayloadKind, Arc<dyn PayloadHandler>>>,
    events: Events,
    bus: Bus,
    /// When the user was last told about a contact over a quota (by the quota's kind).
    noticed: Mutex<HashMap<(ContactId, std::mem::Discriminant<Quota>), Instant>>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

impl Inbox {
    /// An inbox with no handlers yet.
    pub(crate) fn new(
        me: ContactId,
        store: Store,
        sessions: Arc<SessionLocks>,
        allowances: Allowances,
        events: Events,
        bus: Bus,
    ) -> Inbox {
        Inbox {
            me,
            store,
            sessions,
            allowances,
            limits: Mutex::default(),
            handlers: OnceLock::new(),
            events,
            bus,
            noticed: Mutex::default(),
        }
    }

    /// Sets the handler table (once; later calls are ignored).
    pub(crate) fn register(&self, table: Vec<(PayloadKind, Arc<dyn PayloadHandler>)>) {
        let _ = self.handlers.set(table.into_iter().collect());
    }

    /// Charges one frame of `bytes` to `from`'s allowance, or says how long until it fits.
    /// Every request a contact makes goes through here.
    pub(crate) fn allowed(&self, from: &ContactId, bytes: usize) -> Result<(), Duration> {
        let mut limits = match self.limits.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        limits
            .entry(*from)
            .or_insert_with(|| Allowance::new(&self.allowances))
            .take(bytes, Instant::now())
    }

    /// Takes one delivery from `from`.
    pub(crate) async fn deliver(
        &self,
        from: ContactId,
        id: MessageId,
        envelope: &Envelope,
    ) -> Outcome {
        if let Err(wait) = self.allowed(&from, envelope.ciphertext.len()) {
            return Outcome::Slow(wait);
        }
        match self.take_in_order(from, &[(id, envelope)]).await.pop() {
            Some(Err(e)) => Outcome::Refused(e),
            _ => Outcome::Taken,
        }
    }

    /// Takes a batch from `from`, in order: one allowance for the whole frame, one session
    /// lock, and one flush before any of it is acknowledged.
    pub(crate) async fn deliver_batch(&self, from: ContactId, batch: &[Delivery]) -> BatchOutcome {
        let bytes = batch.iter().map(|d| d.envelope.ciphertext.len()).sum();
        if let Err(wait) = self.allowed(&from, bytes) {
            return BatchOutcome {
                results: Vec::new(),
                retry_after: Some(wait),
            };
        }
        let items: Vec<(MessageId, &Envelope)> = batch
            .iter()
            .map(|d| (MessageId(d.message_id), &d.envelope))
            .collect();
        BatchOutcome {
            results: self.take_in_order(from, &items).await,
            retry_after: None,
        }
    }

    /// Takes deliveries from `from` in order under its session lock, flushes once, and only
    /// then runs the handlers' follow-ups (which may seal to this contact again, so not under
    /// the lock). One result for each delivery of a prefix: it stops after the first one the
    /// store could not take now (a transient error: ours, not the sender's). Nothing is
    /// acknowledged that is not durable: if the flush fails, its error is the only result, the
    /// sender sends it all again, and what did reach the disk is a duplicate then.
    async fn take_in_order(
        &self,
        from: ContactId,
        items: &[(MessageId, &Envelope)],
    ) -> Vec<Result<(), Error>> {
        let guard = self.sessions.lock(&from).await;
        let contact = match self.sender(&from) {
            Ok(c) => c,
            Err(e) => return vec![Err(e)],
        };
        let mut results = Vec::with_capacity(items.len());
        let mut afters = Vec::new();
        for (i, (id, envelope)) in items.iter().enumerate() {
            // A long batch must not hold a runtime thread: another contact's delivery (or its
            // own link's pings) runs in between.
            if i % 16 == 15 {
                tokio::task::yield_now().await;
            }
            match self.take(&contact, *id, envelope).await {
                Err(Error::Quota(q)) => {
                    self.notice(&contact, q);
                    results.push(Err(Error::Quota(q)));
                }
                Ok(taken) => {
                    results.push(Ok(()));
                    if let Some((applied, Some(after))) = taken {
                        afters.push((applied, after));
                    }
                }
                Err(e) => {
                    let stop = e.is_transient();
                    results.push(Err(e));
                    if stop {
                        break;
                    }
                }
            }
        }
        if let Err(e) = self.store.flush().await {
            return vec![Err(e)];
        }
        drop(guard);
        for (applied, after) in afters {
            after(applied).await;
        }
        results
    }

    /// Tells the user that `contact` went over a quota, at most once per [`NOTICE_EVERY`] for
    /// each contact and quota.
    fn notice(&self, contact: &Contact, quota: Quota) {
        let key = (contact.id, std::mem::discriminant(&quota));
        let now = Instant::now();
        let mut noticed = match self.noticed.lock() {
            Ok(n) => n,
            Err(poisoned) => poisoned.into_inner(),
        };
        if noticed
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < NOTICE_EVERY)
        {
            return;
        }
        noticed.insert(key, now);
        tracing::warn!(peer = %contact.id.fmt_short(), "over a quota: {quota:?}");
        self.events.emit(Event::Notice {
            contact: contact.id,
            name: contact.name.clone(),
            text: quota.notice(&contact.name),
        });
    }

    /// The stored contact a delivery comes from (a blocked one is refused like a stranger,
    /// should a delivery race the block).
    fn sender(&self, from: &ContactId) -> Result<Contact, Error> {
        self.store
            .admitted(from)?
            .ok_or_else(|| Error::UnknownContact(from.to_string()))
    }

    /// Opens one delivery and commits what its handler decides, with the advanced session, in
    /// one transaction; the caller holds the sender's session lock and flushes. `None` for a
    /// duplicate; otherwise what the store did and the follow-up to run after the flush.
    async fn take(
        &self,
        from: &Contact,
        id: MessageId,
        envelope: &Envelope,
    ) -> Result<Option<(Applied, Option<After>)>, Error> {
        if self.store.was_received(&id)? {
            return Ok(None);
        }
        // Blocked or removed while a batch was being taken: the rest of it is refused.
        if self.store.admitted(&from.id)?.is_none() {
            return Err(Error::UnknownContact(from.id.to_string()));
        }
        let today = self.store.stored_today(&from.id)?;
        if today >= self.allowances.daily_bytes {
            return Err(Error::Quota(Quota::DailyBytes(today)));
        }
        let Some(mut session) = self.store.session(&from.id)? else {
            return Err(self.out_of_step(from, "there is no session"));
        };
        let ad = AssociatedData {
            sender: *from.id.as_bytes(),
            recipient: *self.me.as_bytes(),
            message_id: id.0,
        };
        let plain = match session.open(envelope, &ad) {
            Ok(p) => p,
            // The key is gone. Under an id we took (a retry racing its first copy), that is a
            // duplicate to acknowledge. Under a new id the sender is never told it arrived:
            // its session is behind ours (below).
            Err(E2eError::Replay) if self.store.was_received(&id)? => return Ok(None),
            // Sealed with a session this side does not have (a reset or pairing only one side
            // stored), or with keys this side already used (the sender's state was rolled
            // back): a reset brings both sides into step, and the sender keeps it until then.
            Err(e @ (E2eError::Decrypt | E2eError::Replay | E2eError::TooManySkipped)) => {
                return Err(self.out_of_step(from, &e.to_string()));
            }
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
                from: from.clone(),
                id,
                conversation: ConversationId::direct(&self.me, &from.id),
                payload,
            })
            .await?;
        changes.session = Some((from.id, session));
        changes.received = Some(id);
        changes.stored_bytes = changes
            .stored_bytes
            .saturating_add(envelope.ciphertext.len() as u64);
        let applied = self.store.apply(&changes)?;
        if applied.duplicate {
            return Ok(None);
        }
        Ok(Some((applied, after)))
    }
}

impl Inbox {
    /// A payload from `from` that the session cannot open: asks for a reset, and says whether
    /// the sender should send it again after one.
    fn out_of_step(&self, from: &Contact, why: &str) -> Error {
        let resetting = self.sessions.resettable(&from.id);
        tracing::info!(peer = %from.id.fmt_short(), resetting, "a payload cannot be opened: {why}");
        self.bus.emit(Signal::SessionBroken(from.id));
        Error::OutOfStep { resetting }
    }
}

/// How a batch went, for the chat protocol to answer.
#[derive(Debug)]
pub(crate) struct BatchOutcome {
    /// One result for each delivery of a prefix of the batch.
    pub(crate) results: Vec<Result<(), Error>>,
    /// The rest is over the sender's allowance: it may send it again after this long.
    pub(crate) retry_after: Option<Duration>,
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
        let store = Store::open(dir, &me.id(), crate::vault::test_key()).unwrap();
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
        store
            .store_pairing(&contact, &mine, None, None, 1, "")
            .unwrap();
        let inbox = Inbox::new(
            me.id(),
            store,
            Arc::default(),
            Allowances::default(),
            Events::new(),
            Bus::default(),
        );
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

    #[test]
    fn an_allowance_counts_frames_and_bytes_and_says_how_long_to_wait() {
        let t0 = Instant::now();
        let mut a = Allowance::new(&Allowances::default());
        a.last = t0;
        // The frame burst goes through at once, then the next frame waits one frame's time.
        for _ in 0..RATE_FRAMES_BURST as usize {
            assert_eq!(a.take(100, t0), Ok(()));
        }
        let wait = a.take(100, t0).unwrap_err();
        let frame = Duration::from_secs_f64(1.0 / RATE_FRAMES_PER_SEC);
        assert!(wait <= frame && wait > frame / 2, "{wait:?}");
        // After that wait it fits, exactly as promised.
        assert_eq!(a.take(100, t0 + wait), Ok(()));

        // Bytes: a burst of big frames empties the byte bucket; the wait is the byte deficit.
        let mut b = Allowance::new(&Allowances::default());
        b.last = t0;
        let big = 64 * 1024;
        let fits = (RATE_BYTES_BURST as usize) / big;
        for _ in 0..fits {
            assert_eq!(b.take(big, t0), Ok(()));
        }
        let wait = b.take(big, t0).unwrap_err();
        let want = Duration::from_secs_f64(big as f64 / RATE_BYTES_PER_SEC);
        assert!(wait <= want && wait > want / 2, "{wait:?} vs {want:?}");
        assert_eq!(b.take(big, t0 + wait), Ok(()));
        // A frame larger than the whole burst still gets through once the bucket is full.
        let mut c = Allowance::new(&Allowances::default());
        c.last = t0;
        assert_eq!(c.take(usize::MAX / 2, t0), Ok(()));
        assert!(c.take(1, t0).is_err());
    }

    #[tokio::test]
    async fn a_retry_is_acknowledged_once_taken_but_a_replay_under_a_new_id_asks_for_a_reset() {
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
        // The same ciphertext under an id we never took: its key is gone, so it is not
        // taken. The sender's state is behind ours (rolled back): it keeps the payload, to
        // send again after a session reset, which the inbox asks for.
        let broken = Arc::new(Mutex::new(Vec::new()));
        let seen = broken.clone();
        inbox.bus.subscribe(move |s| {
            if let Signal::SessionBroken(id) = s {
                seen.lock().unwrap().push(id);
            }
        });
        let other = MessageId([2; 16]);
        match inbox.deliver(them, other, &envelope).await {
            Outcome::Refused(Error::OutOfStep { resetting: true }) => {}
            other => panic!("expected an out-of-step refusal, got {other:?}"),
        }
        assert_eq!(*broken.lock().unwrap(), vec![them]);
        // Once a reset cannot help, it is refused for good.
        inbox.sessions.set_resettable(&them, false);
        match inbox.deliver(them, other, &envelope).await {
            Outcome::Refused(e @ Error::OutOfStep { resetting: false }) => {
                assert!(!e.is_transient())
            }
            other => panic!("expected a final refusal, got {other:?}"),
        }
        inbox.sessions.set_resettable(&them, true);
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
