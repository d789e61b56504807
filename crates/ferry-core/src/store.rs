//! The sled store: contacts, sessions, messages, outbox, invites, settings and meta.
//!
//! Every value is sealed under the home's data key ([`crate::vault`]) by the tree types of
//! `sealed` (bound to its tree and key); keys stay in clear. The tables below give the values
//! as they are before sealing.
//!
//! Layout (one sled tree each; keys big-endian so byte order is numeric order):
//!
//! | tree | key | value (postcard) |
//! | --- | --- | --- |
//! | `meta` | `"schema"` | `u32` schema version |
//! | `settings` | name | a setting's value |
//! | `contacts` | endpoint id (32) | [`Contact`] |
//! | `sessions` | endpoint id (32) | [`Session`] |
//! | `messages` | conversation (16) ‖ seq (u64) | [`Message`] |
//! | `message_ids` | message id (16) | the `messages` key |
//! | `outbox` | seq (u64) | [`OutboxItem`] |
//! | `invites` | secret (16) | [`InviteRecord`] |
//! | `transfers` | transfer id (16) | [`Transfer`] |
//! | `received` | message id (16) | empty: every payload the inbox took (added with no schema change: an empty tree means none known) |
//! | `conversations` | conversation id (16) | [`Conversation`] (schema 2) |
//! | `counters` | `u` ‖ conversation id (16), `q` ‖ endpoint id (32) | `u64` BE: unread incoming messages of a conversation, queued outgoing messages to a contact; kept in the same transactions as what they count, built at open when `meta/counters` is missing |
//! | `quotas` | `d` ‖ endpoint id (32) | day (u32 BE, days since 1970 UTC) ‖ bytes (u64 BE): what a contact made us store that day (added with no schema change: none means nothing yet) |
//! | `blocked` | endpoint id (32) | when it was blocked (Unix ms, u64 BE) (added with no schema change: none means nobody is blocked) |
//! | `key_changes` | endpoint id (32) | the identity key accepted before (32) ‖ when it changed (Unix ms, u64 BE): a change the user has not accepted yet; sending waits (added with no schema change) |
//! | `expiry` | expires at (Unix ms, u64) ‖ the `messages` key (24) | empty: a message of a conversation with disappearing messages, deleted at that time (added with no schema change: none means nothing expires) |
//! | `groups`, `group_log`, `group_index`, `group_keys`, `group_held` | see [`groups`](self::groups) | a group's record, log, sender chains and held entries (added with no schema change: none means no groups) |
//! | `outbox_plain` | seq (u64), as in `outbox` | the postcard [`Payload`](crate::wire::Payload) the outbox item seals, kept so a session reset can seal it again (added with no schema change: an item queued by an earlier release has none; entries whose item is gone are dropped at open) |
//!
//! `settings` also holds `timer/<contact id>` → [`TimerSetting`]: the conversation's
//! disappearing-message timer (none means off).
//!
//! `meta` also holds `"purge/"` ‖ conversation id (16) → `0` (delete its messages) or `1` (mark
//! them read): the rest of a contact's removal, finished at the next open if it was cut short.
//!
//! Every logical change is one multi-tree transaction; callers [`Store::flush`] before
//! acknowledging anything to a peer or a user.
//!
//! Schema 2 gave each message its author and each conversation a record of its own; schema 3 is
//! schema 2 sealed. A store of schema 1 or 2 (values in clear) is sealed into a new folder and
//! swapped in, then a schema-1 one is migrated, when it is opened (see [`Store::open`]); both
//! can be killed at any point and finish at the next open.

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};

mod groups;
mod sealed;
pub use groups::{
    group_seq, GroupFile, GroupRecord, GroupWrite, Pending, StoredChain, MAX_PENDING,
};
use sealed::{Batch, Transact, Tree, Tx};

use crate::e2e::Session;
use crate::model::{
    now_ms, Contact, ContactId, Conversation, ConversationId, Direction, Message, MessageId,
    MessageState, Transfer, TransferId, TransferState,
};
use crate::vault::DataKey;
use crate::Error;

/// The setting that holds this home's display name.
pub(crate) const SETTING_NAME: &str = "name";
/// The setting that holds the network settings (`NetSettings`).
pub(crate) const SETTING_NET: &str = "net";
pub use ferry_proto::records::{InviteRecord, MessageV1, OutboxItem, OutboxKind, TimerSetting};

/// The schema this code reads and writes: 3 is schema 2 with every value sealed.
pub const SCHEMA_VERSION: u32 = 3;
/// Messages rewritten per atomic batch while migrating from schema 1.
const MIGRATION_BATCH: usize = 512;

/// Why an invite secret was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteRefusal {
    /// Never issued here.
    Unknown,
    /// Already used.
    Used,
    /// Past its expiry.
    Expired,
}

/// What one received payload changes, applied by [`Store::apply`] in one transaction.
#[derive(Debug, Default)]
pub struct Changes {
    /// The advanced ratchet session that opened the payload.
    pub session: Option<(ContactId, Session)>,
    /// The payload's id, remembered so a retry of it is acknowledged, not opened again.
    pub received: Option<MessageId>,
    /// A new incoming message (a duplicate id makes the whole change a no-op).
    pub message: Option<Message>,
    /// A transfer first offered by this payload (an id already in use refuses the whole change).
    pub new_transfer: Option<Transfer>,
    /// Transfer records replaced by this payload.
    pub transfers: Vec<Transfer>,
    /// A read receipt from a contact: its outgoing messages among the ids become read.
    pub read_receipt: Option<(ContactId, Vec<MessageId>)>,
    /// Bytes this payload makes the sender (`session`'s contact) store, counted against its
    /// daily quota: the sealed payload, and a file accepted automatically.
    pub stored_bytes: u64,
    /// A disappearing-message timer the contact set, with the line that says so: stored only
    /// if it is newer than the one in force.
    pub timer: Option<(ContactId, TimerSetting, Message)>,
}

/// What [`Store::dump`] calls with each entry: tree name, key, opened value.
pub(crate) type DumpFn<'a> = dyn FnMut(&str, &[u8], &[u8]) -> Result<(), Error> + 'a;

/// An outbox item waiting for a contact: its seq, the item, and the plaintext it seals if that
/// was kept.
pub type Waiting = (u64, OutboxItem, Option<Vec<u8>>);

/// What [`Store::store_reset`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetApplied {
    /// The line written into the conversation, if one was asked for.
    pub line: Option<Message>,
    /// The queued messages that could not be sealed again and now show as failed.
    pub failed: Vec<MessageId>,
}

/// What [`Store::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The message was already stored: nothing was written.
    pub duplicate: bool,
    /// The messages a read receipt turned read.
    pub read: Vec<MessageId>,
    /// The timer in `Changes::timer` was newer and now holds.
    pub timer: bool,
}

/// A message deleted because its conversation's timer ran out.
#[derive(Debug, Clone)]
pub struct Expired {
    /// The other side of its conversation.
    pub contact: ContactId,
    /// The message.
    pub id: MessageId,
    /// The transfer it showed, for a file message: its record, deleted with the message.
    pub transfer: Option<Transfer>,
}

/// The store of one home.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    meta: Tree,
    settings: Tree,
    contacts: Tree,
    sessions: Tree,
    messages: Tree,
    message_ids: Tree,
    outbox: Tree,
    invites: Tree,
    transfers: Tree,
    received: Tree,
    conversations: Tree,
    counters: Tree,
    quotas: Tree,
    blocked: Tree,
    key_changes: Tree,
    outbox_plain: Tree,
    expiry: Tree,
    groups: Tree,
    group_log: Tree,
    group_index: Tree,
    group_keys: Tree,
    group_held: Tree,
    /// Milliseconds in one second of a disappearing-message timer (1,000; tests shorten it).
    timer_ms: Arc<std::sync::atomic::AtomicU64>,
    /// This home's own id (the author of what it sends).
    me: ContactId,
    /// Shares one flush among the callers who ask at the same time.
    commits: Arc<GroupCommit>,
    /// Added to sled's id generator in [`Store::next_seq`] (`meta/seq_base`).
    seq_base: Arc<std::sync::atomic::AtomicU64>,
}

/// Group commit: callers who flush at the same time share one sled flush, so a burst of
/// writers costs one flush per round instead of one each. A caller's writes are durable once a
/// flush that started after it asked has finished; it waits for that one, never for less.
#[derive(Debug, Default)]
struct GroupCommit {
    state: std::sync::Mutex<CommitState>,
    finished: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct CommitState {
    /// Tickets handed out (one per call to `flush`).
    asked: u64,
    /// Every ticket up to this one is durable.
    durable: u64,
    /// A flush is under way.
    running: bool,
    /// The last flush that failed: the tickets up to it get its error.
    failed: Option<(u64, String)>,
}

impl GroupCommit {
    fn state(&self) -> std::sync::MutexGuard<'_, CommitState> {
        // Only plain integers are kept behind it: a panic elsewhere leaves them whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    Ok(postcard::to_allocvec(v)?)
}

fn dec<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| Error::Corrupt(e.to_string()))
}

/// Aborts a transaction with an engine error.
fn abort<T>(e: Error) -> Result<T, ConflictableTransactionError<Error>> {
    Err(ConflictableTransactionError::Abort(e))
}

fn tx_dec<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConflictableTransactionError<Error>> {
    dec(bytes).or_else(abort)
}

fn tx_enc<T: Serialize>(v: &T) -> Result<Vec<u8>, ConflictableTransactionError<Error>> {
    enc(v).or_else(abort)
}

fn tx_result<T>(r: Result<T, TransactionError<Error>>) -> Result<T, Error> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => Error::Store(e),
    })
}

/// The day (UTC) of a Unix time in ms.
fn day_of(ms: u64) -> u32 {
    u32::try_from(ms / 86_400_000).unwrap_or(u32::MAX)
}

/// `quotas` key of a contact's bytes stored today: `d` ‖ endpoint id.
fn daily_key(contact: &ContactId) -> [u8; 33] {
    let mut k = [b'd'; 33];
    k[1..].copy_from_slice(contact.as_bytes());
    k
}

/// `quotas` value: day (u32 BE) ‖ bytes that day (u64 BE).
fn daily_value(day: u32, bytes: u64) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&day.to_be_bytes());
    v[4..].copy_from_slice(&bytes.to_be_bytes());
    v
}

/// The bytes a stored `quotas` value counts for `today` (0 for another day or no value).
fn daily_bytes(value: Option<&[u8]>, today: u32) -> u64 {
    match value {
        Some(v) if v.len() == 12 && v[..4] == today.to_be_bytes() => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[4..]);
            u64::from_be_bytes(b)
        }
        _ => 0,
    }
}

fn unread_key(conversation: &ConversationId) -> [u8; 17] {
    let mut k = [b'u'; 17];
    k[1..].copy_from_slice(&conversation.0);
    k
}

fn queued_key(contact: &ContactId) -> [u8; 33] {
    let mut k = [b'q'; 33];
    k[1..].copy_from_slice(contact.as_bytes());
    k
}

/// The `meta` key marking a contact whose session was restored from a backup: `restored/` ‖
/// endpoint id (32) → empty, removed by the next reset stored with the contact.
fn restored_key(contact: &ContactId) -> Vec<u8> {
    [&b"restored/"[..], contact.as_bytes()].concat()
}

/// The `meta` key of the number added to sled's id generator for sequence numbers (postcard
/// u64; none means 0). sled's generator belongs to its database, so a store copied into a new
/// one (sealing) or restored from a backup starts it again from 0; the base keeps every new
/// sequence number above those the store already holds (message and outbox keys).
pub(crate) const SEQ_BASE: &str = "seq_base";

/// The `meta` keys of removals still to finish.
const PURGE_PREFIX: &[u8] = b"purge/";

fn purge_key(conversation: &ConversationId) -> Vec<u8> {
    [PURGE_PREFIX, &conversation.0[..]].concat()
}

fn read_u64(v: &[u8]) -> u64 {
    v.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// Marks a message delivered, inside a transaction; `was_queued` says whether its outbox item
/// was still there (and so counted). Returns whether its state changed.
fn mark_delivered(
    msgs: &Tx<'_>,
    idx: &Tx<'_>,
    cnt: &Tx<'_>,
    item: &OutboxItem,
    was_queued: bool,
) -> Result<bool, ConflictableTransactionError<Error>> {
    if was_queued {
        bump(cnt, &queued_key(&item.contact), -1)?;
    }
    let Some(key) = idx.get(item.message_id.0)? else {
        return Ok(false);
    };
    let Some(v) = msgs.get(&key)? else {
        return Ok(false);
    };
    let mut m: Message = tx_dec(&v)?;
    if m.state != MessageState::Queued {
        return Ok(false);
    }
    m.state = MessageState::Delivered;
    msgs.insert(key, tx_enc(&m)?)?;
    Ok(true)
}

/// Adds `delta` to a counter inside a transaction, never below zero.
fn bump(
    counters: &Tx<'_>,
    key: &[u8],
    delta: i64,
) -> Result<(), ConflictableTransactionError<Error>> {
    let now = counters.get(key)?.map(|v| read_u64(&v)).unwrap_or(0);
    let next = now.saturating_add_signed(delta);
    if next == 0 {
        counters.remove(key)?;
    } else {
        counters.insert(key, &next.to_be_bytes()[..])?;
    }
    Ok(())
}

fn hex_key(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn message_key(conversation: &ConversationId, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&conversation.0);
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn timer_key(contact: &ContactId) -> String {
    format!("timer/{contact}")
}

fn expiry_key(at: u64, message_key: &[u8; 24]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&at.to_be_bytes());
    k[8..].copy_from_slice(message_key);
    k
}

/// Stores a timer and its line if it is newer than the one in force, inside a transaction.
/// Returns whether it was.
fn put_timer(
    settings: &Tx<'_>,
    msgs: &Tx<'_>,
    ids: &Tx<'_>,
    contact: &ContactId,
    timer: &TimerSetting,
    line: &Message,
) -> Result<bool, ConflictableTransactionError<Error>> {
    let key = timer_key(contact);
    let current = settings
        .get(key.as_bytes())?
        .map(|v| tx_dec::<TimerSetting>(&v))
        .transpose()?;
    // The later change holds; of two stamped alike, the longer timer, so both sides settle on
    // the same one.
    if current.is_some_and(|c| (c.set_at, c.secs) >= (timer.set_at, timer.secs)) {
        return Ok(false);
    }
    settings.insert(key.as_bytes(), tx_enc(timer)?)?;
    put_message(msgs, ids, line)?;
    Ok(true)
}

/// The `expiry` key of `m`, a message of the conversation with `contact`, under the timer in
/// force, read inside the transaction that stores the message so that a change of timer
/// cannot slip in between. `ms` is how long one second of a timer lasts.
fn tx_expiry(
    settings: &Tx<'_>,
    contact: &ContactId,
    m: &Message,
    ms: u64,
) -> Result<Option<[u8; 32]>, ConflictableTransactionError<Error>> {
    let secs = settings
        .get(timer_key(contact).as_bytes())?
        .map(|v| tx_dec::<TimerSetting>(&v))
        .transpose()?
        .map_or(0, |t| t.secs);
    if secs == 0 {
        return Ok(None);
    }
    let at = m.stored_at.saturating_add(secs.saturating_mul(ms));
    Ok(Some(expiry_key(at, &message_key(&m.conversation, m.seq))))
}

/// Stores a message already encoded, inside a transaction.
fn put_message_bytes(
    messages: &Tx<'_>,
    ids: &Tx<'_>,
    m: &Message,
    bytes: &[u8],
) -> Result<(), ConflictableTransactionError<Error>> {
    let key = message_key(&m.conversation, m.seq);
    messages.insert(&key[..], bytes)?;
    ids.insert(&m.id.0[..], &key[..])?;
    Ok(())
}

fn put_message(
    messages: &Tx<'_>,
    ids: &Tx<'_>,
    m: &Message,
) -> Result<(), ConflictableTransactionError<Error>> {
    let key = message_key(&m.conversation, m.seq);
    messages.insert(&key[..], tx_enc(m)?)?;
    ids.insert(&m.id.0[..], &key[..])?;
    Ok(())
}

/// The most sled keeps of the store's pages in memory. Its default, 1 GiB, let a daemon's
/// memory grow with its history (53–73 MiB for each 100,000 messages; README, "Speed"). 4 MiB
/// cut that to 7–11 MiB but made delivering a backlog a third slower (`scripts/
/// bench_messages.py --memory 100000`); this keeps its speed.
const CACHE_BYTES: u64 = 16 << 20;

/// How long [`Store::open`] waits for sled's file lock held by a handle of this process that
/// was just dropped.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the sled database. The caller holds the home's lock, so no other process has it;
/// if sled's own lock is still taken, it is this process's previous handle (`init` then
/// `open`, or a restart): sled lets go of it a moment after the handle drops, when its flusher
/// thread ends, so wait for that rather than fail.
fn open_db(dir: &Path) -> Result<sled::Db, Error> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            // sled reports it as an `Other` I/O error with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return Ok(other?),
        }
    }
}

impl Store {
    /// The store over an open database, as it is (no checks, no migration).
    fn from_db(db: sled::Db, me: &ContactId, key: &Arc<DataKey>) -> Result<Self, Error> {
        let tree = |name: &str| Tree::open(&db, name, key);
        Ok(Store {
            meta: tree("meta")?,
            settings: tree("settings")?,
            contacts: tree("contacts")?,
            sessions: tree("sessions")?,
            messages: tree("messages")?,
            message_ids: tree("message_ids")?,
            outbox: tree("outbox")?,
            invites: tree("invites")?,
            transfers: tree("transfers")?,
            received: tree("received")?,
            conversations: tree("conversations")?,
            counters: tree("counters")?,
            quotas: tree("quotas")?,
            blocked: tree("blocked")?,
            key_changes: tree("key_changes")?,
            outbox_plain: tree("outbox_plain")?,
            expiry: tree("expiry")?,
            groups: tree("groups")?,
            group_log: tree("group_log")?,
            group_index: tree("group_index")?,
            group_keys: tree("group_keys")?,
            group_held: tree("group_held")?,
            timer_ms: Arc::new(1000.into()),
            me: *me,
            commits: Arc::default(),
            seq_base: Arc::default(),
            db,
        })
    }

    /// Opens the store of `home` with its data key, unlocked with `passphrase` if it is kept
    /// under one (tools and tests; [`crate::Node::open`] does this holding the home's lock).
    pub fn open_home(
        home: &Path,
        passphrase: Option<&crate::vault::Passphrase>,
    ) -> Result<Self, Error> {
        let (key, identity) = crate::identity::open_home(home, passphrase)?;
        Self::open(&home.join(crate::home::STORE_DIR), &identity.id(), key)
    }

    /// Opens (or creates) the store in `dir` of the home whose id is `me`, checking the schema
    /// version. A schema-1 store is migrated to schema 2 first (resuming a migration a killed
    /// process left half done); a newer schema is refused.
    pub fn open(dir: &Path, me: &ContactId, key: Arc<DataKey>) -> Result<Self, Error> {
        sealed::seal_plain_store(dir, &key)?;
        let store = Self::from_db(open_db(dir)?, me, &key)?;
        store.load_seq_base()?;
        if !sealed::is_sealed(&store.meta)? {
            // A new store (an earlier release's was sealed above).
            sealed::mark_sealed(&store.meta)?;
        }
        let mut schema = store.schema()?;
        if schema == Some(1) {
            store.migrate_from_1()?;
            schema = Some(2);
        }
        match schema {
            // New, or schema 2 whose values were sealed above: schema 3 is schema 2 sealed.
            None | Some(2) => store.set_schema(SCHEMA_VERSION)?,
            Some(SCHEMA_VERSION) => {}
            Some(v) => {
                return Err(Error::Corrupt(format!(
                    "store schema {v}, this version of Ferry reads {SCHEMA_VERSION} (and \
                     migrates 1 and 2); a newer release wrote it"
                )))
            }
        }
        if store.meta.get("counters")?.is_none() {
            store.build_counters()?;
        }
        store.finish_purges()?;
        store.prune_outbox_plain()?;
        Ok(store)
    }

    /// Drops the kept plaintexts whose outbox item is gone (an earlier release delivered or
    /// dropped it without knowing of them).
    fn prune_outbox_plain(&self) -> Result<(), Error> {
        let mut batch = Batch::default();
        let mut n = 0;
        for k in self.outbox_plain.iter().keys() {
            let k = k?;
            if !self.outbox.contains_key(&k)? {
                batch.remove(k);
                n += 1;
            }
        }
        if n > 0 {
            tracing::info!(n, "dropped kept plaintexts of outbox items that are gone");
            self.outbox_plain.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Counts what the counters count, from the records themselves: at the first open by a
    /// release that keeps counters (or after a crash while building them, since the mark is
    /// written last and the tree is rebuilt from nothing).
    fn build_counters(&self) -> Result<(), Error> {
        self.counters.clear()?;
        let mut counts: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
        for v in self.messages.iter().values() {
            let m: Message = dec(&v?)?;
            if m.direction == Direction::Incoming && m.state == MessageState::Received {
                *counts
                    .entry(unread_key(&m.conversation).to_vec())
                    .or_default() += 1;
            }
        }
        for v in self.outbox.iter().values() {
            let item: OutboxItem = dec(&v?)?;
            if item.kind == OutboxKind::Message {
                *counts
                    .entry(queued_key(&item.contact).to_vec())
                    .or_default() += 1;
            }
        }
        let mut batch = Batch::default();
        for (k, n) in counts {
            batch.insert(k, &n.to_be_bytes()[..]);
        }
        self.counters.apply_batch(batch)?;
        self.db.flush()?;
        self.meta.insert("counters", &[1u8][..])?;
        self.db.flush()?;
        Ok(())
    }

    /// Incoming messages of a conversation not yet read (a counter: O(1)).
    pub fn unread_count(&self, conversation: &ConversationId) -> Result<u64, Error> {
        self.counter(&unread_key(conversation))
    }

    /// Outgoing messages to a contact still waiting in the outbox (a counter: O(1)).
    pub fn queued_count(&self, contact: &ContactId) -> Result<u64, Error> {
        self.counter(&queued_key(contact))
    }

    /// Unread incoming messages over all conversations (one counter per conversation that
    /// has any).
    pub fn unread_total(&self) -> Result<u64, Error> {
        let mut total = 0u64;
        for v in self.counters.scan_prefix(b"u").values() {
            total = total.saturating_add(read_u64(&v?));
        }
        Ok(total)
    }

    fn counter(&self, key: &[u8]) -> Result<u64, Error> {
        Ok(self.counters.get(key)?.map(|v| read_u64(&v)).unwrap_or(0))
    }

    fn schema(&self) -> Result<Option<u32>, Error> {
        self.meta.get("schema")?.map(|v| dec(&v)).transpose()
    }

    fn set_schema(&self, v: u32) -> Result<(), Error> {
        self.meta.insert("schema", enc(&v)?)?;
        self.db.flush()?;
        Ok(())
    }

    /// Schema 1 → 2: every message gets its author, every contact its direct conversation.
    /// Each batch is atomic and already-migrated records are left alone, so a run killed
    /// halfway is simply run again; the schema mark moves to 2 only when all is done.
    fn migrate_from_1(&self) -> Result<(), Error> {
        let mut migrated = 0usize;
        let mut after = None;
        while let Some(n) = self.migrate_messages_batch(&mut after)? {
            migrated += n;
        }
        for contact in self.contacts()? {
            self.ensure_direct_conversation(&contact.id, contact.paired_at)?;
        }
        self.db.flush()?;
        self.set_schema(2)?;
        tracing::info!(messages = migrated, "store migrated from schema 1 to 2");
        Ok(())
    }

    /// Rewrites up to [`MIGRATION_BATCH`] schema-1 messages as schema 2, atomically. Returns
    /// how many it rewrote, or `None` once none are left.
    fn migrate_messages_batch(
        &self,
        after: &mut Option<sled::IVec>,
    ) -> Result<Option<usize>, Error> {
        let mut batch = Batch::default();
        let mut n = 0;
        // Records before `after` were done by the batches before this one.
        let records = match after.take() {
            Some(k) => self
                .messages
                .range::<sled::IVec, _>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
            None => self.messages.iter(),
        };
        for kv in records {
            let (key, value) = kv?;
            *after = Some(key.clone());
            // A schema-2 record does not decode as schema 1 the other way round (it is longer,
            // and postcard needs every field), so "decodes as 2" means "already done".
            if dec::<Message>(&value).is_ok() {
                continue;
            }
            let old: MessageV1 = dec(&value).map_err(|e| {
                Error::Corrupt(format!(
                    "a stored message ({}) cannot be read while upgrading the store to schema 2; \
                     the upgrade stops here and starts again at the next open: {e}",
                    hex_key(&key)
                ))
            })?;
            batch.insert(key, enc(&old.upgrade(&self.me))?);
            n += 1;
            if n == MIGRATION_BATCH {
                break;
            }
        }
        if n == 0 {
            return Ok(None);
        }
        self.messages.apply_batch(batch)?;
        self.db.flush()?;
        Ok(Some(n))
    }

    fn ensure_direct_conversation(&self, contact: &ContactId, since: u64) -> Result<(), Error> {
        let conv = Conversation::direct(&self.me, contact, since);
        let value = enc(&conv)?;
        // Already there: keep it.
        self.conversations.insert_new(conv.id.0, value)?;
        Ok(())
    }

    /// A conversation's record.
    pub fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, Error> {
        self.conversations.get(id.0)?.map(|v| dec(&v)).transpose()
    }

    /// Every conversation this home knows.
    pub fn conversations(&self) -> Result<Vec<Conversation>, Error> {
        self.conversations
            .iter()
            .values()
            .map(|v| dec(&v?))
            .collect()
    }

    /// Makes everything written so far durable.
    pub async fn flush(&self) -> Result<(), Error> {
        let ticket = {
            let mut st = self.commits.state();
            st.asked += 1;
            st.asked
        };
        loop {
            let finished = self.commits.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            let start = {
                let mut st = self.commits.state();
                if st.durable >= ticket {
                    return Ok(());
                }
                if let Some((upto, e)) = &st.failed {
                    if *upto >= ticket {
                        return Err(Error::Store(sled::Error::Io(std::io::Error::other(
                            e.clone(),
                        ))));
                    }
                }
                (!st.running).then(|| {
                    st.running = true;
                    st.asked
                })
            };
            if let Some(upto) = start {
                // Its own task: a caller that gives up waiting does not leave it half done.
                let (db, commits) = (self.db.clone(), self.commits.clone());
                tokio::spawn(async move {
                    let result = db.flush_async().await;
                    let mut st = commits.state();
                    st.running = false;
                    match result {
                        Ok(_) => st.durable = st.durable.max(upto),
                        Err(e) => st.failed = Some((upto, e.to_string())),
                    }
                    drop(st);
                    commits.finished.notify_waiters();
                });
            }
            finished.await;
        }
    }

    /// A monotonic sequence number (never reused, survives restarts, and greater than any a
    /// store this one was copied or restored from gave: see [`SEQ_BASE`]).
    pub fn next_seq(&self) -> Result<u64, Error> {
        let base = self.seq_base.load(std::sync::atomic::Ordering::Relaxed);
        Ok(base.saturating_add(self.db.generate_id()?))
    }

    /// Reads [`SEQ_BASE`] into memory (after opening, and after a restore wrote it).
    pub(crate) fn load_seq_base(&self) -> Result<(), Error> {
        let base: u64 = self
            .meta
            .get(SEQ_BASE)?
            .map(|v| dec(&v))
            .transpose()?
            .unwrap_or(0);
        self.seq_base
            .store(base, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    // ---- settings ----

    /// This home's display name (empty if never set).
    pub fn my_name(&self) -> Result<String, Error> {
        Ok(self.setting(SETTING_NAME)?.unwrap_or_default())
    }

    /// Reads a setting.
    pub fn setting<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        self.settings.get(name)?.map(|v| dec(&v)).transpose()
    }

    /// Removes a setting.
    pub fn remove_setting(&self, name: &str) -> Result<(), Error> {
        self.settings.remove(name)?;
        Ok(())
    }

    /// Writes a setting.
    pub fn set_setting<T: Serialize>(&self, name: &str, value: &T) -> Result<(), Error> {
        self.settings.insert(name, enc(value)?)?;
        Ok(())
    }

    // ---- contacts and sessions ----

    /// All contacts, in id order.
    pub fn contacts(&self) -> Result<Vec<Contact>, Error> {
        self.contacts
            .iter()
            .values()
            .map(|v| dec(&v?))
            .collect::<Result<Vec<_>, _>>()
    }

    /// One contact.
    pub fn contact(&self, id: &ContactId) -> Result<Option<Contact>, Error> {
        self.contacts
            .get(id.as_bytes())?
            .map(|v| dec(&v))
            .transpose()
    }

    /// Changes the stored record of a contact in one transaction, so a pairing or a removal
    /// that lands meanwhile is never undone by a stale copy. Returns the record as changed, or
    /// `None` if there is none (then nothing is written).
    pub fn update_contact(
        &self,
        id: &ContactId,
        change: impl Fn(&mut Contact),
    ) -> Result<Option<Contact>, Error> {
        tx_result(self.contacts.transaction(|con| {
            let Some(v) = con.get(id.as_bytes())? else {
                return Ok(None);
            };
            let mut c: Contact = tx_dec(&v)?;
            change(&mut c);
            con.insert(id.as_bytes(), tx_enc(&c)?)?;
            Ok(Some(c))
        }))
    }

    /// Replaces a contact record (tests and fixtures; the engine uses [`Store::update_contact`]).
    pub fn put_contact(&self, contact: &Contact) -> Result<(), Error> {
        self.contacts.insert(contact.id.as_bytes(), enc(contact)?)?;
        Ok(())
    }

    /// The ratchet session with a contact.
    pub fn session(&self, id: &ContactId) -> Result<Option<Session>, Error> {
        self.sessions
            .get(id.as_bytes())?
            .map(|v| dec(&v))
            .transpose()
    }

    /// Stores a pairing: contact and session together, consuming the invite if one was used.
    ///
    /// `seen` is when the pairing with this contact that was stored as the pairing began was
    /// made (`None`: there was none). It is checked in the same transaction as the write, so
    /// of two pairings between the same endpoints that run at once, one is refused instead of
    /// both writing half. A pairing replaces an older one (a fresh invite repairs a pairing
    /// only one side kept); the verified mark stays only if the identity key is the same. A
    /// blocked contact is refused.
    ///
    /// A pairing that brings another identity key than the one stored records a key change
    /// (sending waits until the user accepts it) and writes `key_changed` as a line in the
    /// conversation, in the same transaction; that line is returned.
    pub fn store_pairing(
        &self,
        contact: &Contact,
        session: &Session,
        invite: Option<[u8; 16]>,
        seen: Option<u64>,
        now: u64,
        key_changed: &str,
    ) -> Result<Option<Message>, Error> {
        let s = enc(session)?;
        let line = self.system_message(&contact.id, key_changed.to_string(), now)?;
        let line_bytes = enc(&line)?;
        // What waits for the contact was sealed with the session this pairing replaces: the
        // other side could never open it. It fails here, visibly, instead of there. (The
        // caller holds the contact's session lock, so nothing is queued meanwhile.)
        let stale: Vec<(u64, OutboxItem)> = self
            .outbox()?
            .into_iter()
            .filter(|(_, i)| i.contact == contact.id)
            .collect();
        let conversation = Conversation::direct(&self.me, &contact.id, now);
        let conv = enc(&conversation)?;
        tx_result(
            (
                &self.contacts,
                &self.sessions,
                &self.invites,
                &self.conversations,
                &self.blocked,
                &self.key_changes,
                &self.messages,
                &self.message_ids,
                &self.outbox,
                &self.counters,
                &self.outbox_plain,
                &self.meta,
            )
                .transaction(
                    |(con, ses, inv, convs, blk, keys, msgs, ids, out, cnt, pla, meta)| {
                        if blk.get(contact.id.as_bytes())?.is_some() {
                            return abort(Error::PairingRefused(format!(
                                "{} is blocked here; unblock them first",
                                contact.name
                            )));
                        }
                        // A new pairing replaces a session restored from a backup.
                        meta.remove(restored_key(&contact.id))?;
                        let before = con
                            .get(contact.id.as_bytes())?
                            .map(|v| tx_dec::<Contact>(&v))
                            .transpose()?;
                        if before.as_ref().map(|c| c.paired_at) != seen {
                            return abort(Error::PairingRefused(
                                "already paired: another pairing with the same person just \
                             completed"
                                    .into(),
                            ));
                        }
                        if let Some(secret) = invite {
                            let record = inv.get(secret)?;
                            let Some(record) = record else {
                                return abort(Error::PairingRefused("unknown invite".into()));
                            };
                            let mut record: InviteRecord = tx_dec(&record)?;
                            if record.used {
                                return abort(Error::PairingRefused("invite already used".into()));
                            }
                            if record.expires_at < now {
                                return abort(Error::InviteExpired);
                            }
                            record.used = true;
                            inv.insert(&secret[..], tx_enc(&record)?)?;
                        }
                        let mut contact = contact.clone();
                        let mut changed = None;
                        if before.is_some() {
                            for (seq, item) in &stale {
                                pla.remove(seq.to_be_bytes())?;
                                if out.remove(seq.to_be_bytes())?.is_none() {
                                    continue;
                                }
                                if item.kind != OutboxKind::Message {
                                    continue;
                                }
                                bump(cnt, &queued_key(&item.contact), -1)?;
                                let Some(key) = ids.get(item.message_id.0)? else {
                                    continue;
                                };
                                if let Some(v) = msgs.get(&key)? {
                                    let mut m: Message = tx_dec(&v)?;
                                    if m.state == MessageState::Queued {
                                        m.state = MessageState::Failed;
                                        msgs.insert(key, tx_enc(&m)?)?;
                                    }
                                }
                            }
                        }
                        if let Some(b) = &before {
                            contact.verified = b.verified && b.x25519 == contact.x25519;
                            let pending = keys.get(contact.id.as_bytes())?;
                            let back_to_accepted = pending
                                .as_ref()
                                .is_some_and(|v| v.get(..32) == Some(&contact.x25519[..]));
                            if back_to_accepted {
                                // The key the user accepted last is back: nothing waits any more.
                                keys.remove(contact.id.as_bytes())?;
                            } else if b.x25519 != contact.x25519 {
                                // The key accepted last stays the reference until the user accepts.
                                if pending.is_none() {
                                    let mut v = b.x25519.to_vec();
                                    v.extend_from_slice(&now.to_be_bytes());
                                    keys.insert(contact.id.as_bytes(), v)?;
                                }
                                msgs.insert(
                                    &message_key(&line.conversation, line.seq)[..],
                                    line_bytes.clone(),
                                )?;
                                ids.insert(
                                    &line.id.0[..],
                                    &message_key(&line.conversation, line.seq)[..],
                                )?;
                                changed = Some(line.clone());
                            }
                        }
                        con.insert(contact.id.as_bytes(), tx_enc(&contact)?)?;
                        ses.insert(contact.id.as_bytes(), s.clone())?;
                        if convs.get(conversation.id.0)?.is_none() {
                            convs.insert(&conversation.id.0[..], conv.clone())?;
                        }
                        Ok(changed)
                    },
                ),
        )
    }

    /// A line this home writes into its conversation with `contact` (not yet stored).
    fn system_message(
        &self,
        contact: &ContactId,
        body: String,
        now: u64,
    ) -> Result<Message, Error> {
        Ok(Message {
            id: MessageId::random(),
            conversation: ConversationId::direct(&self.me, contact),
            contact: *contact,
            seq: self.next_seq()?,
            direction: Direction::System,
            body,
            sent_at: now,
            stored_at: now,
            state: MessageState::Seen,
            transfer: None,
            author: self.me,
        })
    }

    /// Whether a contact's identity key changed and the user has not accepted the new one.
    pub fn key_changed(&self, id: &ContactId) -> Result<bool, Error> {
        self.key_changes.contains_key(id.as_bytes())
    }

    /// Accepts a contact's new identity key: sending resumes, and `line` is written into the
    /// conversation, in one transaction. Returns the line, or `None` if nothing was pending.
    pub fn accept_key(
        &self,
        id: &ContactId,
        line: &str,
        now: u64,
    ) -> Result<Option<Message>, Error> {
        if !self.key_changed(id)? {
            return Ok(None);
        }
        let m = self.system_message(id, line.to_string(), now)?;
        let bytes = enc(&m)?;
        let key = message_key(&m.conversation, m.seq);
        tx_result(
            (&self.key_changes, &self.messages, &self.message_ids).transaction(
                |(keys, msgs, ids)| {
                    keys.remove(id.as_bytes())?;
                    msgs.insert(&key[..], bytes.clone())?;
                    ids.insert(&m.id.0[..], &key[..])?;
                    Ok(())
                },
            ),
        )?;
        Ok(Some(m))
    }

    /// Whether what waits for a contact may go out: it is a contact, not blocked, and no key
    /// change waits for the user.
    pub fn sendable(&self, id: &ContactId) -> Result<bool, Error> {
        Ok(self.admitted(id)?.is_some() && !self.key_changed(id)? && !self.restored(id)?)
    }

    // ---- backups ----

    /// Whether the session with a contact was restored from a backup and not reset since:
    /// nothing is sent to it until a reset is stored.
    pub fn restored(&self, id: &ContactId) -> Result<bool, Error> {
        self.meta.contains_key(restored_key(id))
    }

    /// The trees in the order a backup writes them: an entry's index after the entry
    /// (`message_ids` after `messages`), so a backup of a live store never holds an index to
    /// a message it lacks. `counters` are left out (rebuilt at the next open).
    fn backup_trees(&self) -> [(&'static str, &Tree); 21] {
        [
            ("meta", &self.meta),
            ("settings", &self.settings),
            ("contacts", &self.contacts),
            ("blocked", &self.blocked),
            ("key_changes", &self.key_changes),
            ("sessions", &self.sessions),
            ("conversations", &self.conversations),
            ("messages", &self.messages),
            ("message_ids", &self.message_ids),
            ("expiry", &self.expiry),
            ("transfers", &self.transfers),
            ("outbox", &self.outbox),
            ("outbox_plain", &self.outbox_plain),
            ("invites", &self.invites),
            ("received", &self.received),
            ("quotas", &self.quotas),
            ("groups", &self.groups),
            ("group_log", &self.group_log),
            ("group_index", &self.group_index),
            ("group_keys", &self.group_keys),
            ("group_held", &self.group_held),
        ]
    }

    /// How many entries a backup writes (about: the store may change meanwhile).
    pub(crate) fn entry_count(&self) -> u64 {
        self.backup_trees()
            .iter()
            .map(|(_, t)| t.raw.len() as u64)
            .sum()
    }

    /// Calls `f` with every entry a backup holds, opened: tree name, key, value.
    pub(crate) fn dump(&self, f: &mut DumpFn<'_>) -> Result<(), Error> {
        for (name, tree) in self.backup_trees() {
            for kv in tree.iter() {
                let (k, v) = kv?;
                f(name, &k, &v)?;
            }
        }
        Ok(())
    }

    /// Writes one entry of a backup into this (new) store.
    pub(crate) fn restore_entry(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let Some((_, t)) = self.backup_trees().into_iter().find(|(n, _)| *n == tree) else {
            return Err(Error::Corrupt(format!(
                "the backup holds a tree this release does not know ({tree:?}): a newer release \
                 wrote it"
            )));
        };
        t.insert(key, value)
    }

    /// After a backup was restored: every contact's session waits for a reset, the counters
    /// are built again at the next open, and transfers that were under way are failed (their
    /// data is not on this computer).
    pub(crate) fn after_restore(&self) -> Result<(), Error> {
        for c in self.contacts()? {
            self.meta.insert(restored_key(&c.id), [])?;
        }
        self.restore_groups()?;
        self.counters.clear()?;
        self.meta.remove("counters")?;
        for mut t in self.transfers()? {
            if !t.state.is_final() {
                t.state = TransferState::Failed;
                t.error = Some("restored from a backup: its data is not on this computer".into());
                t.updated_at = now_ms();
                self.put_transfer(&t)?;
            }
        }
        Ok(())
    }

    /// Flushes everything to disk, blocking (an import, before the home is renamed into place).
    pub(crate) fn flush_sync(&self) -> Result<(), Error> {
        self.db.flush()?;
        Ok(())
    }

    // ---- trust: blocking and removal ----

    /// Whether a contact is blocked.
    pub fn is_blocked(&self, id: &ContactId) -> Result<bool, Error> {
        self.blocked.contains_key(id.as_bytes())
    }

    /// A contact that may reach this node: paired and not blocked (`None` for a stranger or a
    /// blocked contact, which every protocol refuses alike).
    pub fn admitted(&self, id: &ContactId) -> Result<Option<Contact>, Error> {
        if self.is_blocked(id)? {
            return Ok(None);
        }
        self.contact(id)
    }

    /// Blocks or unblocks a contact. Returns whether that changed anything.
    pub fn set_blocked(&self, id: &ContactId, blocked: bool, now: u64) -> Result<bool, Error> {
        let changed = if blocked {
            if self.contacts.get(id.as_bytes())?.is_none() {
                return Err(Error::UnknownContact(id.to_string()));
            }
            self.blocked.insert_new(id.as_bytes(), now.to_be_bytes())?
        } else {
            self.blocked.remove(id.as_bytes())?
        };
        Ok(changed)
    }

    /// Removes a contact and everything about it: its session, its outbox items, its transfers,
    /// its counters and quotas, its blocked mark; and its conversation's messages unless
    /// `keep_history` (kept ones are marked read, and show again if the same person pairs
    /// again). The records go in one transaction; the messages, which may be many, in batches
    /// after it, recorded in `meta` so a removal cut short finishes at the next open.
    pub fn remove_contact(&self, id: &ContactId, keep_history: bool) -> Result<Contact, Error> {
        let contact = self
            .contact(id)?
            .ok_or_else(|| Error::UnknownContact(id.to_string()))?;
        let conversation = ConversationId::direct(&self.me, id);
        let outbox: Vec<[u8; 8]> = self
            .outbox()?
            .into_iter()
            .filter(|(_, i)| i.contact == *id)
            .map(|(seq, _)| seq.to_be_bytes())
            .collect();
        let transfers: Vec<TransferId> = self
            .transfers()?
            .into_iter()
            .filter(|t| t.contact == *id)
            .map(|t| t.id)
            .collect();
        let purge = purge_key(&conversation);
        tx_result(
            (
                &self.contacts,
                &self.sessions,
                &self.outbox,
                &self.transfers,
                &self.counters,
                &self.quotas,
                &self.blocked,
                &self.meta,
                &self.key_changes,
                &self.outbox_plain,
                &self.settings,
            )
                .transaction(
                    |(con, ses, out, trs, cnt, quo, blk, meta, keys, pla, set)| {
                        set.remove(timer_key(id).as_bytes())?;
                        con.remove(id.as_bytes())?;
                        ses.remove(id.as_bytes())?;
                        for seq in &outbox {
                            out.remove(&seq[..])?;
                            pla.remove(&seq[..])?;
                        }
                        for t in &transfers {
                            trs.remove(&t.0[..])?;
                        }
                        cnt.remove(&queued_key(id)[..])?;
                        quo.remove(&daily_key(id)[..])?;
                        blk.remove(id.as_bytes())?;
                        keys.remove(id.as_bytes())?;
                        meta.insert(&purge[..], &[u8::from(keep_history)][..])?;
                        Ok(())
                    },
                ),
        )?;
        self.finish_purges()?;
        Ok(contact)
    }

    /// Finishes the removals recorded in `meta` (see [`Store::remove_contact`]): each batch is
    /// atomic, and the record goes last.
    fn finish_purges(&self) -> Result<(), Error> {
        for kv in self.meta.scan_prefix(PURGE_PREFIX) {
            let (key, mode) = kv?;
            let Ok(conv) = <[u8; 16]>::try_from(&key[PURGE_PREFIX.len()..]) else {
                self.meta.remove(key)?;
                continue;
            };
            let conversation = ConversationId(conv);
            let keep = mode.first() == Some(&1);
            // Where the next batch starts (kept messages stay, so a batch goes on after them).
            let mut from = conversation.0.to_vec();
            loop {
                let mut msgs = Batch::default();
                let mut ids = Batch::default();
                // Kept messages marked read, written only where the message is still there (the
                // sweeper may delete an expired one meanwhile).
                let mut seen: Vec<(sled::IVec, Vec<u8>)> = Vec::new();
                let mut n = 0;
                for kv in self.messages.range(from.clone()..) {
                    let (k, v) = kv?;
                    if !k.starts_with(&conversation.0) {
                        break;
                    }
                    from = [&k[..], &[0u8][..]].concat();
                    if keep {
                        let Ok(mut m) = dec::<Message>(&v) else {
                            continue;
                        };
                        if m.direction != Direction::Incoming || m.state != MessageState::Received {
                            continue;
                        }
                        m.state = MessageState::Seen;
                        seen.push((k, enc(&m)?));
                    } else {
                        if let Ok(m) = dec::<Message>(&v) {
                            ids.remove(&m.id.0[..]);
                        }
                        msgs.remove(k);
                    }
                    n += 1;
                    if n == MIGRATION_BATCH {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
                tx_result((&self.messages, &self.message_ids).transaction(|(m, i)| {
                    m.apply_batch(&msgs)?;
                    i.apply_batch(&ids)?;
                    for (k, v) in &seen {
                        if m.get(k)?.is_some() {
                            m.insert(k, v.clone())?;
                        }
                    }
                    Ok(())
                }))?;
            }
            tx_result(
                (&self.conversations, &self.counters, &self.meta).transaction(
                    |(convs, cnt, meta)| {
                        if !keep {
                            convs.remove(&conversation.0[..])?;
                        }
                        cnt.remove(&unread_key(&conversation)[..])?;
                        meta.remove(&key)?;
                        Ok(())
                    },
                ),
            )?;
        }
        self.db.flush()?;
        Ok(())
    }

    // ---- invites ----

    /// Records an issued invite.
    pub fn put_invite(&self, secret: [u8; 16], record: InviteRecord) -> Result<(), Error> {
        self.invites.insert(secret, enc(&record)?)?;
        Ok(())
    }

    /// Counts the open invites (unused, unexpired) at `now`, and forgets invites that expired
    /// more than a week ago (until then, using one is answered "expired", not "unknown").
    pub fn open_invites(&self, now: u64) -> Result<usize, Error> {
        const FORGET_AFTER_MS: u64 = 7 * 24 * 3600 * 1000;
        let mut open = 0;
        for entry in self.invites.iter() {
            let (secret, v) = entry?;
            let record: InviteRecord = dec(&v)?;
            if record.expires_at.saturating_add(FORGET_AFTER_MS) < now {
                self.invites.remove(secret)?;
            } else if !record.used && record.expires_at >= now {
                open += 1;
            }
        }
        Ok(open)
    }

    /// Checks an invite secret without consuming it.
    pub fn check_invite(&self, secret: &[u8; 16], now: u64) -> Result<(), InviteRefusal> {
        let Ok(Some(v)) = self.invites.get(secret) else {
            return Err(InviteRefusal::Unknown);
        };
        let record: InviteRecord = dec(&v).map_err(|_| InviteRefusal::Unknown)?;
        if record.used {
            Err(InviteRefusal::Used)
        } else if record.expires_at < now {
            Err(InviteRefusal::Expired)
        } else {
            Ok(())
        }
    }

    // ---- messages ----

    /// Queues an outgoing payload: the session advance, the outbox item and (for text) the
    /// message, in one transaction. Returns the outbox sequence number.
    pub fn queue_outgoing(
        &self,
        session: &Session,
        item: &OutboxItem,
        plain: &[u8],
        message: Option<&Message>,
        transfer: Option<&Transfer>,
    ) -> Result<u64, Error> {
        let seq = self.next_seq()?;
        let s = enc(session)?;
        let o = enc(item)?;
        let t = transfer.map(enc).transpose()?;
        let ms = self.timer_ms.load(std::sync::atomic::Ordering::Relaxed);
        tx_result(
            (
                &self.sessions,
                &self.outbox,
                &self.messages,
                &self.message_ids,
                &self.transfers,
                &self.counters,
                &self.outbox_plain,
                &self.expiry,
                &self.settings,
            )
                .transaction(|(ses, out, msgs, ids, trs, cnt, pla, exp, set)| {
                    if let Some(m) = message.filter(|m| m.direction == Direction::Outgoing) {
                        if let Some(key) = tx_expiry(set, &item.contact, m, ms)? {
                            exp.insert(&key[..], &[][..])?;
                        }
                    }
                    ses.insert(item.contact.as_bytes(), s.clone())?;
                    out.insert(seq.to_be_bytes(), o.clone())?;
                    pla.insert(seq.to_be_bytes(), plain)?;
                    if item.kind == OutboxKind::Message {
                        bump(cnt, &queued_key(&item.contact), 1)?;
                    }
                    if let Some(m) = message {
                        put_message(msgs, ids, m)?;
                    }
                    if let (Some(tr), Some(bytes)) = (transfer, &t) {
                        trs.insert(&tr.id.0[..], bytes.clone())?;
                    }
                    Ok(())
                }),
        )?;
        Ok(seq)
    }

    // ---- transfers ----

    /// All transfers, oldest first.
    pub fn transfers(&self) -> Result<Vec<Transfer>, Error> {
        let mut all = self
            .transfers
            .iter()
            .values()
            .map(|v| dec(&v?))
            .collect::<Result<Vec<Transfer>, _>>()?;
        all.sort_by_key(|t| t.created_at);
        Ok(all)
    }

    /// How many offers from `from` wait for an answer.
    pub fn offers_waiting(&self, from: &ContactId) -> Result<usize, Error> {
        Ok(self
            .transfers()?
            .iter()
            .filter(|t| {
                t.contact == *from
                    && t.direction == Direction::Incoming
                    && t.state == TransferState::Offered
            })
            .count())
    }

    /// One transfer.
    pub fn transfer(&self, id: &TransferId) -> Result<Option<Transfer>, Error> {
        self.transfers.get(id.0)?.map(|v| dec(&v)).transpose()
    }

    /// Writes a transfer record.
    pub fn put_transfer(&self, t: &Transfer) -> Result<(), Error> {
        self.transfers.insert(t.id.0, enc(t)?)?;
        Ok(())
    }

    /// Writes `t` moved to state `to`, the move checked against the state stored now rather
    /// than against `t`'s, which another task may have overtaken (a fetch failing just as the
    /// sender's cancel arrives must not undo the cancel). On success `t` holds the new state.
    pub fn advance_transfer(&self, t: &mut Transfer, to: TransferState) -> Result<(), Error> {
        let stored = tx_result(self.transfers.transaction(|tx| {
            // A record deleted meanwhile (its message expired, its contact was removed) is not
            // written back.
            let Some(v) = tx.get(t.id.0)? else {
                return abort(Error::InvalidInput(format!("no transfer {}", t.id)));
            };
            let from = tx_dec::<Transfer>(&v)?.state;
            let mut next = t.clone();
            next.state = match from.next(to) {
                Ok(s) => s,
                Err(e) => return abort(e.into()),
            };
            tx.insert(&t.id.0[..], tx_enc(&next)?)?;
            Ok(next)
        }))?;
        *t = stored;
        Ok(())
    }

    /// A message by id.
    pub fn message(&self, id: &MessageId) -> Result<Option<Message>, Error> {
        let Some(key) = self.message_ids.get(id.0)? else {
            return Ok(None);
        };
        self.messages.get(key)?.map(|v| dec(&v)).transpose()
    }

    /// Sets a message's state outside any other change (e.g. failed for good).
    pub fn set_message_state(&self, id: &MessageId, state: MessageState) -> Result<(), Error> {
        tx_result(
            (&self.message_ids, &self.messages).transaction(|(ids, msgs)| {
                // Read again inside: a message deleted meanwhile (expired) stays deleted.
                let Some(key) = ids.get(id.0)? else {
                    return Ok(());
                };
                if let Some(v) = msgs.get(&key)? {
                    let mut m: Message = tx_dec(&v)?;
                    m.state = state;
                    msgs.insert(key, tx_enc(&m)?)?;
                }
                Ok(())
            }),
        )
    }

    /// Whether a payload with this id was already taken: a message, a receipt, an update.
    pub fn was_received(&self, id: &MessageId) -> Result<bool, Error> {
        Ok(self.message_ids.contains_key(id.0)? || self.received.contains_key(id.0)?)
    }

    /// The bytes `contact` made this node store today (UTC): see [`Changes::stored_bytes`].
    pub fn stored_today(&self, contact: &ContactId) -> Result<u64, Error> {
        let v = self.quotas.get(daily_key(contact))?;
        Ok(daily_bytes(v.as_ref().map(|v| &v[..]), day_of(now_ms())))
    }

    /// Applies one received payload's changes in one transaction: the advanced session with
    /// whatever the payload's handler decided. A message whose id is already stored makes the
    /// whole change a duplicate (nothing is written: a retry after a lost acknowledgement).
    pub fn apply(&self, changes: &Changes) -> Result<Applied, Error> {
        let session = changes
            .session
            .as_ref()
            .map(|(id, s)| Ok::<_, Error>((*id, enc(s)?)))
            .transpose()?;
        let new_transfer = changes.new_transfer.as_ref().map(enc).transpose()?;
        let transfers = changes
            .transfers
            .iter()
            .map(|t| Ok((t.id, enc(t)?)))
            .collect::<Result<Vec<_>, Error>>()?;
        let today = day_of(now_ms());
        let ms = self.timer_ms.load(std::sync::atomic::Ordering::Relaxed);
        tx_result(
            (
                &self.sessions,
                &self.messages,
                &self.message_ids,
                &self.transfers,
                &self.received,
                &self.counters,
                &self.quotas,
                &self.settings,
                &self.expiry,
            )
                .transaction(|(ses, msgs, ids, trs, rec, cnt, quo, set, exp)| {
                    if let Some(m) = &changes.message {
                        if ids.get(m.id.0)?.is_some() {
                            return Ok(Applied {
                                duplicate: true,
                                read: Vec::new(),
                                timer: false,
                            });
                        }
                        put_message(msgs, ids, m)?;
                        if m.direction == Direction::Incoming {
                            if let Some(key) = tx_expiry(set, &m.contact, m, ms)? {
                                exp.insert(&key[..], &[][..])?;
                            }
                        }
                        if m.direction == Direction::Incoming && m.state == MessageState::Received {
                            bump(cnt, &unread_key(&m.conversation), 1)?;
                        }
                    }
                    if let (Some(t), Some(bytes)) = (&changes.new_transfer, &new_transfer) {
                        // The id is the sender's choice: one that is taken is refused whole.
                        if trs.get(t.id.0)?.is_some() {
                            return abort(Error::Protocol(format!(
                                "transfer id {} is already in use",
                                t.id
                            )));
                        }
                        trs.insert(&t.id.0[..], bytes.clone())?;
                    }
                    if let Some((id, bytes)) = &session {
                        ses.insert(id.as_bytes(), bytes.clone())?;
                        if changes.stored_bytes > 0 {
                            let key = daily_key(id);
                            let had = daily_bytes(quo.get(key)?.as_ref().map(|v| &v[..]), today);
                            let now = had.saturating_add(changes.stored_bytes);
                            quo.insert(&key[..], &daily_value(today, now)[..])?;
                        }
                    }
                    if let Some(id) = &changes.received {
                        rec.insert(&id.0[..], &[][..])?;
                    }
                    for (id, bytes) in &transfers {
                        // An update never brings back a record deleted meanwhile (expired).
                        if trs.get(id.0)?.is_some() {
                            trs.insert(&id.0[..], bytes.clone())?;
                        }
                    }
                    let mut read = Vec::new();
                    if let Some((contact, list)) = &changes.read_receipt {
                        for id in list {
                            let Some(key) = ids.get(id.0)? else { continue };
                            let Some(v) = msgs.get(&key)? else { continue };
                            let mut m: Message = tx_dec(&v)?;
                            if m.contact != *contact
                                || m.direction != Direction::Outgoing
                                || m.state == MessageState::Read
                            {
                                continue;
                            }
                            m.state = MessageState::Read;
                            msgs.insert(key, tx_enc(&m)?)?;
                            read.push(*id);
                        }
                    }
                    let timer = match &changes.timer {
                        Some((contact, timer, line)) => {
                            put_timer(set, msgs, ids, contact, timer, line)?
                        }
                        None => false,
                    };
                    Ok(Applied {
                        duplicate: false,
                        read,
                        timer,
                    })
                }),
        )
    }

    /// Removes acknowledged outbox items (a batch) and marks their messages delivered, in one
    /// transaction. Returns, for each, whether its message's state changed.
    pub fn complete_deliveries(&self, done: &[(u64, &OutboxItem)]) -> Result<Vec<bool>, Error> {
        tx_result(
            (
                &self.outbox,
                &self.messages,
                &self.message_ids,
                &self.counters,
                &self.outbox_plain,
            )
                .transaction(|(out, msgs, idx, cnt, pla)| {
                    let mut changed = Vec::with_capacity(done.len());
                    for (outbox_seq, item) in done {
                        let was_queued = out.remove(outbox_seq.to_be_bytes())?.is_some();
                        pla.remove(outbox_seq.to_be_bytes())?;
                        changed.push(
                            item.kind == OutboxKind::Message
                                && mark_delivered(msgs, idx, cnt, item, was_queued)?,
                        );
                    }
                    Ok(changed)
                }),
        )
    }

    /// Drops an outbox item that can never be delivered (logged by the caller).
    pub fn drop_outbox_item(&self, outbox_seq: u64) -> Result<(), Error> {
        tx_result(
            (&self.outbox, &self.counters, &self.outbox_plain).transaction(|(out, cnt, pla)| {
                pla.remove(outbox_seq.to_be_bytes())?;
                if let Some(v) = out.remove(outbox_seq.to_be_bytes())? {
                    let item: OutboxItem = tx_dec(&v)?;
                    if item.kind == OutboxKind::Message {
                        bump(cnt, &queued_key(&item.contact), -1)?;
                    }
                }
                Ok(())
            }),
        )
    }

    // ---- disappearing messages ----

    /// The disappearing-message timer of the conversation with `contact` (none: off).
    pub fn timer(&self, contact: &ContactId) -> Result<Option<TimerSetting>, Error> {
        self.setting(&timer_key(contact))
    }

    /// Seconds a message with `contact` lives now (0: off).
    pub fn timer_secs(&self, contact: &ContactId) -> Result<u64, Error> {
        Ok(self.timer(contact)?.map_or(0, |t| t.secs))
    }

    /// Sets how long one second of a timer lasts (tests make timers run fast).
    pub fn set_timer_ms(&self, ms: u64) {
        self.timer_ms
            .store(ms.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// A line this home writes into its conversation with `contact` (not yet stored).
    pub fn system_line(
        &self,
        contact: &ContactId,
        body: String,
        now: u64,
    ) -> Result<Message, Error> {
        self.system_message(contact, body, now)
    }

    /// Queues the payload that tells `receipt.contact` of a new timer, with the timer and its
    /// line, in one transaction (the timer holds here only if it is newer than the one in
    /// force; it always is when this home's clock moves forward).
    pub fn queue_timer(
        &self,
        session: &Session,
        item: &OutboxItem,
        plain: &[u8],
        timer: &TimerSetting,
        line: &Message,
    ) -> Result<bool, Error> {
        let seq = self.next_seq()?;
        let s = enc(session)?;
        let o = enc(item)?;
        tx_result(
            (
                &self.sessions,
                &self.outbox,
                &self.outbox_plain,
                &self.settings,
                &self.messages,
                &self.message_ids,
            )
                .transaction(|(ses, out, pla, set, msgs, ids)| {
                    if !put_timer(set, msgs, ids, &item.contact, timer, line)? {
                        return Ok(false);
                    }
                    ses.insert(item.contact.as_bytes(), s.clone())?;
                    out.insert(seq.to_be_bytes(), o.clone())?;
                    pla.insert(seq.to_be_bytes(), plain)?;
                    Ok(true)
                }),
        )
    }

    /// When the next message expires (Unix ms), if any does.
    pub fn next_expiry(&self) -> Result<Option<u64>, Error> {
        Ok(self
            .expiry
            .first()?
            .and_then(|(k, _)| k.get(..8).map(read_u64)))
    }

    /// Deletes up to `max` messages whose time ran out by `now`, in one transaction: each
    /// message with its id, its unread count, its transfer's record, and its outbox item if it
    /// was never delivered (it is not sent after its time). Returns what went; the caller drops
    /// the transfers' grants and blob-store copies.
    pub fn expire(&self, now: u64, max: usize) -> Result<Vec<Expired>, Error> {
        let mut due = Vec::new();
        for k in self
            .expiry
            .range(..expiry_key(now, &[0xff; 24]))
            .keys()
            .take(max)
        {
            let k = k?;
            let Some(Ok(key)) = k.get(8..).map(<[u8; 24]>::try_from) else {
                tracing::warn!("dropped a damaged expiry entry");
                self.expiry.remove(&k)?;
                continue;
            };
            // A record that cannot be read is deleted all the same (below), without its index.
            let message = self
                .messages
                .get(key)?
                .and_then(|v| dec::<Message>(&v).ok());
            due.push((k, key, message));
        }
        if due.is_empty() {
            return Ok(Vec::new());
        }
        // A message still queued leaves the outbox too (found outside the transaction; one
        // delivered meanwhile is simply not there any more).
        let queued: std::collections::HashSet<MessageId> = due
            .iter()
            .filter_map(|(_, _, m)| m.as_ref())
            .filter(|m| m.state == MessageState::Queued)
            .map(|m| m.id)
            .collect();
        let waiting: Vec<(u64, OutboxItem)> = if queued.is_empty() {
            Vec::new()
        } else {
            self.outbox()?
                .into_iter()
                .filter(|(_, i)| queued.contains(&i.message_id))
                .collect()
        };
        tx_result(
            (
                &self.expiry,
                &self.messages,
                &self.message_ids,
                &self.counters,
                &self.outbox,
                &self.outbox_plain,
                &self.transfers,
            )
                .transaction(|(exp, msgs, ids, cnt, out, pla, trs)| {
                    let mut gone = Vec::new();
                    for (k, key, _) in &due {
                        exp.remove(k)?;
                        let Some(v) = msgs.remove(&key[..])? else {
                            continue;
                        };
                        let Ok(m) = dec::<Message>(&v) else {
                            tracing::warn!(key = %hex_key(key), "deleted an expired message that cannot be read");
                            continue;
                        };
                        ids.remove(&m.id.0[..])?;
                        // The transfer's record goes with its message, so nothing (a restart,
                        // a late update) can start or serve it again.
                        let transfer = match m.transfer {
                            Some(t) => trs
                                .remove(&t.0[..])?
                                .and_then(|v| dec::<Transfer>(&v).ok()),
                            None => None,
                        };
                        if m.direction == Direction::Incoming && m.state == MessageState::Received {
                            bump(cnt, &unread_key(&m.conversation), -1)?;
                        }
                        for (seq, item) in waiting.iter().filter(|(_, i)| i.message_id == m.id) {
                            pla.remove(seq.to_be_bytes())?;
                            if out.remove(seq.to_be_bytes())?.is_some()
                                && item.kind == OutboxKind::Message
                            {
                                bump(cnt, &queued_key(&item.contact), -1)?;
                            }
                        }
                        gone.push(Expired {
                            contact: m.contact,
                            id: m.id,
                            transfer,
                        });
                    }
                    Ok(gone)
                }),
        )
    }

    /// The plaintext kept for an outbox item, if any.
    pub fn kept_plain(&self, seq: u64) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .outbox_plain
            .get(seq.to_be_bytes())?
            .map(|v| v.to_vec()))
    }

    /// What waits for `contact`, oldest first, each with the plaintext it seals where that was
    /// kept (items queued by an earlier release have none).
    pub fn outbox_for(&self, contact: &ContactId) -> Result<Vec<Waiting>, Error> {
        let mut out = Vec::new();
        for (seq, item) in self.outbox()? {
            if item.contact != *contact {
                continue;
            }
            let plain = self
                .outbox_plain
                .get(seq.to_be_bytes())?
                .map(|v| v.to_vec());
            out.push((seq, item, plain));
        }
        Ok(out)
    }

    /// Stores the session a reset made with `contact`, in one transaction with: what waits for
    /// the contact sealed again with it (`resealed`: outbox seq, new item, its plaintext; an
    /// item delivered meanwhile is not put back), the items that could not be sealed again
    /// (`lost`: they leave the outbox and their messages fail, visibly), and `line`, if any,
    /// written into the conversation. A contact removed, blocked or paired again (another
    /// key or pairing than `contact`'s) meanwhile is refused.
    pub fn store_reset(
        &self,
        contact: &Contact,
        session: &Session,
        resealed: &[(u64, OutboxItem, Vec<u8>)],
        lost: &[(u64, OutboxItem)],
        line: Option<&str>,
        now: u64,
    ) -> Result<ResetApplied, Error> {
        let s = enc(session)?;
        let items = resealed
            .iter()
            .map(|(seq, item, plain)| Ok((seq.to_be_bytes(), enc(item)?, plain)))
            .collect::<Result<Vec<_>, Error>>()?;
        let line = line
            .map(|l| self.system_message(&contact.id, l.to_string(), now))
            .transpose()?;
        let line_bytes = line.as_ref().map(enc).transpose()?;
        tx_result(
            (
                &self.contacts,
                &self.blocked,
                &self.sessions,
                &self.outbox,
                &self.outbox_plain,
                &self.messages,
                &self.message_ids,
                &self.counters,
                &self.meta,
            )
                .transaction(|(con, blk, ses, out, pla, msgs, ids, cnt, meta)| {
                    let Some(c) = con.get(contact.id.as_bytes())? else {
                        return abort(Error::UnknownContact(contact.name.clone()));
                    };
                    let c: Contact = tx_dec(&c)?;
                    // A session restored from a backup is current again.
                    meta.remove(restored_key(&contact.id))?;
                    if blk.get(contact.id.as_bytes())?.is_some() {
                        return abort(Error::Blocked(c.name));
                    }
                    if c.x25519 != contact.x25519 || c.paired_at != contact.paired_at {
                        return abort(Error::Reset(
                            "the pairing changed while the reset ran".into(),
                        ));
                    }
                    ses.insert(contact.id.as_bytes(), s.clone())?;
                    let mut failed = Vec::new();
                    for (seq, item, plain) in &items {
                        if out.get(seq)?.is_some() {
                            out.insert(&seq[..], item.clone())?;
                            pla.insert(&seq[..], plain.as_slice())?;
                        }
                    }
                    for (seq, item) in lost {
                        let seq = seq.to_be_bytes();
                        pla.remove(&seq[..])?;
                        if out.remove(&seq[..])?.is_none() || item.kind != OutboxKind::Message {
                            continue;
                        }
                        bump(cnt, &queued_key(&contact.id), -1)?;
                        let Some(key) = ids.get(item.message_id.0)? else {
                            continue;
                        };
                        if let Some(v) = msgs.get(&key)? {
                            let mut m: Message = tx_dec(&v)?;
                            if m.state == MessageState::Queued {
                                m.state = MessageState::Failed;
                                msgs.insert(key, tx_enc(&m)?)?;
                                failed.push(m.id);
                            }
                        }
                    }
                    if let (Some(line), Some(bytes)) = (&line, &line_bytes) {
                        put_message_bytes(msgs, ids, line, bytes)?;
                    }
                    Ok(failed)
                }),
        )
        .map(|failed| ResetApplied { line, failed })
    }

    /// The outbox, oldest first.
    pub fn outbox(&self) -> Result<Vec<(u64, OutboxItem)>, Error> {
        self.outbox
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let seq = u64::from_be_bytes(
                    k.as_ref()
                        .try_into()
                        .map_err(|_| Error::Corrupt("outbox key".into()))?,
                );
                Ok((seq, dec(&v)?))
            })
            .collect()
    }

    /// A page of a conversation, oldest first: up to `limit` messages before `before_seq`
    /// (the newest when `None`).
    pub fn history(
        &self,
        conversation: &ConversationId,
        before_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Message>, Error> {
        let start = message_key(conversation, 0);
        let end = message_key(conversation, before_seq.unwrap_or(u64::MAX));
        let mut page = self
            .messages
            .range(start..end)
            .rev()
            .take(limit)
            .map(|kv| dec(&kv?.1))
            .collect::<Result<Vec<Message>, _>>()?;
        page.reverse();
        Ok(page)
    }

    /// Incoming messages of a conversation not yet read, by a full scan (the tests' check on
    /// the counters; everything else reads [`Store::unread_count`]).
    #[cfg(test)]
    pub fn unread(&self, conversation: &ConversationId) -> Result<Vec<Message>, Error> {
        self.messages
            .scan_prefix(conversation.0)
            .values()
            .map(|v| dec::<Message>(&v?))
            .filter(|m| !matches!(m, Ok(m) if m.state != MessageState::Received))
            .collect()
    }

    /// Marks incoming messages seen and queues the read receipt for them, in one transaction.
    pub fn mark_seen(
        &self,
        messages: &[Message],
        session: &Session,
        receipt: &OutboxItem,
        plain: &[u8],
    ) -> Result<(), Error> {
        let seq = self.next_seq()?;
        let s = enc(session)?;
        let o = enc(receipt)?;
        tx_result(
            (
                &self.sessions,
                &self.outbox,
                &self.messages,
                &self.counters,
                &self.outbox_plain,
            )
                .transaction(|(ses, out, msgs, cnt, pla)| {
                    ses.insert(receipt.contact.as_bytes(), s.clone())?;
                    out.insert(seq.to_be_bytes(), o.clone())?;
                    pla.insert(seq.to_be_bytes(), plain)?;
                    for m in messages {
                        // As stored, not as the caller last saw it: only a message still unread
                        // becomes seen and leaves the count.
                        let key = message_key(&m.conversation, m.seq);
                        let Some(v) = msgs.get(key)? else { continue };
                        let mut stored: Message = tx_dec(&v)?;
                        if stored.state != MessageState::Received {
                            continue;
                        }
                        stored.state = MessageState::Seen;
                        msgs.insert(&key[..], tx_enc(&stored)?)?;
                        bump(cnt, &unread_key(&stored.conversation), -1)?;
                    }
                    Ok(())
                }),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::vault::test_key;

    fn test_me() -> ContactId {
        iroh::SecretKey::from_bytes(&[42; 32]).public()
    }

    /// A schema-1 store as the previous release left it: messages without authors, a contact,
    /// no conversation records.
    fn schema1_store(dir: &Path, them: &ContactId, count: u64) -> Vec<MessageV1> {
        let me = test_me();
        let db = open_db(dir).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema", enc(&1u32).unwrap())
            .unwrap();
        let bob = Contact {
            id: *them,
            name: "Bob".into(),
            x25519: [3; 32],
            addr: Default::default(),
            paired_at: 77,
            verified: true,
        };
        db.open_tree("contacts")
            .unwrap()
            .insert(them.as_bytes(), enc(&bob).unwrap())
            .unwrap();
        let messages = db.open_tree("messages").unwrap();
        let conv = ConversationId::direct(&me, them);
        let old: Vec<MessageV1> = (1..=count)
            .map(|i| MessageV1 {
                id: MessageId([(i % 251) as u8 + 1; 16]),
                conversation: conv,
                contact: *them,
                seq: i,
                direction: if i % 2 == 0 {
                    Direction::Outgoing
                } else {
                    Direction::Incoming
                },
                body: format!("m{i}"),
                sent_at: i,
                stored_at: i,
                state: MessageState::Delivered,
                transfer: None,
            })
            .collect();
        for m in &old {
            messages
                .insert(message_key(&m.conversation, m.seq), enc(m).unwrap())
                .unwrap();
        }
        db.flush().unwrap();
        old
    }

    #[test]
    fn a_schema_1_store_gets_authors_and_conversations() {
        let dir = tempfile::tempdir().unwrap();
        let them = iroh::SecretKey::from_bytes(&[5; 32]).public();
        let old = schema1_store(dir.path(), &them, 3 * MIGRATION_BATCH as u64 + 7);
        let store = Store::open(dir.path(), &test_me(), test_key()).unwrap();
        assert_eq!(store.schema().unwrap(), Some(SCHEMA_VERSION));
        let conv = ConversationId::direct(&test_me(), &them);
        let all = store.history(&conv, None, usize::MAX).unwrap();
        assert_eq!(all.len(), old.len());
        for (new, old) in all.iter().zip(&old) {
            assert_eq!(*new, old.clone().upgrade(&test_me()));
            let want = match old.direction {
                Direction::Outgoing | Direction::System => test_me(),
                Direction::Incoming => them,
            };
            assert_eq!(new.author, want);
        }
        let c = store.conversation(&conv).unwrap().unwrap();
        assert_eq!(c.kind, crate::model::ConversationKind::Direct);
        assert!(c.members.contains(&them) && c.members.contains(&test_me()));
        assert_eq!(c.created_at, 77);
        assert_eq!(store.contact(&them).unwrap().unwrap().name, "Bob");
    }

    #[test]
    fn a_migration_killed_halfway_finishes_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let them = iroh::SecretKey::from_bytes(&[6; 32]).public();
        let old = schema1_store(dir.path(), &them, 2 * MIGRATION_BATCH as u64 + 1);
        {
            // What a process killed after its first batch leaves: the values sealed, some
            // records rewritten, the schema mark still 1, no conversation records.
            sealed::seal_plain_store(dir.path(), &test_key()).unwrap();
            let store =
                Store::from_db(open_db(dir.path()).unwrap(), &test_me(), &test_key()).unwrap();
            assert_eq!(
                store.migrate_messages_batch(&mut None).unwrap(),
                Some(MIGRATION_BATCH)
            );
            assert_eq!(store.schema().unwrap(), Some(1));
        }
        let store = Store::open(dir.path(), &test_me(), test_key()).unwrap();
        assert_eq!(store.schema().unwrap(), Some(SCHEMA_VERSION));
        let conv = ConversationId::direct(&test_me(), &them);
        let all = store.history(&conv, None, usize::MAX).unwrap();
        let want: Vec<Message> = old.into_iter().map(|m| m.upgrade(&test_me())).collect();
        assert_eq!(all, want);
        assert!(store.conversation(&conv).unwrap().is_some());
    }

    #[test]
    fn a_damaged_schema_1_record_stops_the_migration_without_touching_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let them = iroh::SecretKey::from_bytes(&[8; 32]).public();
        schema1_store(dir.path(), &them, 3);
        {
            let db = open_db(dir.path()).unwrap();
            let messages = db.open_tree("messages").unwrap();
            messages.insert([0u8; 24], &b"\xff\xff"[..]).unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(dir.path(), &test_me(), test_key()).unwrap_err();
        assert!(matches!(err, Error::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("upgrading the store"), "{err}");
        let store = Store::from_db(open_db(dir.path()).unwrap(), &test_me(), &test_key()).unwrap();
        let schema = store.schema().unwrap().unwrap();
        assert_eq!(schema, 1);
    }

    /// Every file under `dir`, read whole.
    fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
        out
    }

    #[test]
    fn a_plain_store_is_sealed_whole_and_a_kill_at_any_step_is_finished_at_the_next_open() {
        const CANARY: &[u8] = b"canary-7f3a9c0e";
        // 0: not begun; 1: killed while copying; 2: copy ready, nothing swapped; 3: the old
        // store moved aside; 4: the sealed copy in place, the old one not yet removed.
        for step in 0..5 {
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join("store");
            let them = iroh::SecretKey::from_bytes(&[9; 32]).public();
            let old = schema1_store(&dir, &them, 40);
            {
                let db = open_db(&dir).unwrap();
                let note = format!("{}", String::from_utf8_lossy(CANARY));
                db.open_tree("settings")
                    .unwrap()
                    .insert("note", enc(&note).unwrap())
                    .unwrap();
                db.flush().unwrap();
            }
            let (sealing, ready, aside) = sealed::side_paths(&dir);
            if step == 1 {
                let partial = open_db(&sealing).unwrap();
                partial
                    .open_tree("meta")
                    .unwrap()
                    .insert("x", &b"half"[..])
                    .unwrap();
                partial.flush().unwrap();
            }
            if step >= 2 {
                sealed::copy_sealed(open_db(&dir).unwrap(), &sealing, &ready, &test_key()).unwrap();
            }
            if step >= 3 {
                std::fs::rename(&dir, &aside).unwrap();
            }
            if step >= 4 {
                std::fs::rename(&sealing, &dir).unwrap();
            }
            let store = Store::open(&dir, &test_me(), test_key()).unwrap();
            assert_eq!(store.schema().unwrap(), Some(SCHEMA_VERSION), "step {step}");
            let conv = ConversationId::direct(&test_me(), &them);
            let all = store.history(&conv, None, usize::MAX).unwrap();
            let want: Vec<Message> = old.iter().map(|m| m.clone().upgrade(&test_me())).collect();
            assert_eq!(all, want, "step {step}");
            assert_eq!(
                store.setting::<String>("note").unwrap().unwrap().as_bytes(),
                CANARY
            );
            assert_eq!(store.contact(&them).unwrap().unwrap().name, "Bob");
            let newest = old.iter().map(|m| m.seq).max().unwrap();
            assert!(
                store.next_seq().unwrap() > newest,
                "step {step}: sequence numbers go on"
            );
            sealed::assert_all_sealed(&store.db, &test_key());
            store.db.flush().unwrap();
            for side in [&sealing, &ready, &aside] {
                assert!(!side.exists(), "step {step}: {} is left", side.display());
            }
            for (path, bytes) in files_under(root.path()) {
                assert!(
                    !bytes.windows(CANARY.len()).any(|w| w == CANARY),
                    "step {step}: the canary is in clear in {}",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn newer_schema_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), &test_me(), test_key()).unwrap();
            store.meta.insert("schema", enc(&99u32).unwrap()).unwrap();
            store.db.flush().unwrap();
        }
        let err = Store::open(dir.path(), &test_me(), test_key()).unwrap_err();
        assert!(err.to_string().contains("schema 99"), "{err}");
    }

    #[test]
    fn history_pages_oldest_first_per_conversation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &test_me(), test_key()).unwrap();
        let contact = iroh::SecretKey::from_bytes(&[1; 32]).public();
        let conv = ConversationId([9; 16]);
        let other = ConversationId([8; 16]);
        for (i, c) in [(1u64, conv), (2, other), (3, conv), (4, conv)] {
            let m = Message {
                id: MessageId([i as u8; 16]),
                conversation: c,
                contact,
                seq: i,
                direction: Direction::Incoming,
                body: format!("m{i}"),
                sent_at: i,
                stored_at: i,
                state: MessageState::Received,
                transfer: None,
                author: contact,
            };
            store
                .messages
                .insert(message_key(&c, i), enc(&m).unwrap())
                .unwrap();
        }
        let page = store.history(&conv, None, 2).unwrap();
        assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3, 4]);
        let older = store.history(&conv, Some(3), 10).unwrap();
        assert_eq!(older.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!(store.unread(&conv).unwrap().len(), 3);
    }

    fn message(id: u8, contact: ContactId, direction: Direction, state: MessageState) -> Message {
        Message {
            id: MessageId([id; 16]),
            conversation: ConversationId([9; 16]),
            contact,
            seq: u64::from(id),
            direction,
            body: format!("m{id}"),
            sent_at: 1,
            stored_at: 1,
            state,
            transfer: None,
            author: contact,
        }
    }

    fn session() -> Session {
        use crate::identity::Identity;
        let (a, b) = (Identity::generate(), Identity::generate());
        let (hs, eph) = crate::e2e::InitiatorHandshake::start();
        let (_, b_eph) =
            crate::e2e::respond(b.x25519_secret(), &a.x25519_public(), &eph, b"t").unwrap();
        hs.complete(a.x25519_secret(), &b.x25519_public(), &b_eph, b"t")
            .unwrap()
    }

    #[test]
    fn a_change_lands_whole_with_its_session_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &test_me(), test_key()).unwrap();
        let bob = iroh::SecretKey::from_bytes(&[1; 32]).public();
        let incoming = message(1, bob, Direction::Incoming, MessageState::Received);
        let applied = store
            .apply(&Changes {
                session: Some((bob, session())),
                message: Some(incoming.clone()),
                ..Changes::default()
            })
            .unwrap();
        assert!(!applied.duplicate);
        assert_eq!(store.message(&incoming.id).unwrap(), Some(incoming.clone()));
        let kept = postcard::to_allocvec(&store.session(&bob).unwrap().unwrap()).unwrap();

        // The same message again: a duplicate, and not even the session is written.
        let again = store
            .apply(&Changes {
                session: Some((bob, session())),
                message: Some(incoming),
                ..Changes::default()
            })
            .unwrap();
        assert!(again.duplicate);
        let now = postcard::to_allocvec(&store.session(&bob).unwrap().unwrap()).unwrap();
        assert_eq!(kept, now);
    }

    #[test]
    fn a_read_receipt_reads_only_the_readers_own_messages_from_us() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &test_me(), test_key()).unwrap();
        let bob = iroh::SecretKey::from_bytes(&[1; 32]).public();
        let carol = iroh::SecretKey::from_bytes(&[2; 32]).public();
        let to_bob = message(1, bob, Direction::Outgoing, MessageState::Delivered);
        let to_carol = message(2, carol, Direction::Outgoing, MessageState::Delivered);
        let from_bob = message(3, bob, Direction::Incoming, MessageState::Received);
        for m in [&to_bob, &to_carol, &from_bob] {
            store
                .messages
                .insert(message_key(&m.conversation, m.seq), enc(m).unwrap())
                .unwrap();
            store
                .message_ids
                .insert(m.id.0, &message_key(&m.conversation, m.seq)[..])
                .unwrap();
        }
        let ids = vec![to_bob.id, to_carol.id, from_bob.id, MessageId([7; 16])];
        let applied = store
            .apply(&Changes {
                read_receipt: Some((bob, ids.clone())),
                ..Changes::default()
            })
            .unwrap();
        assert_eq!(applied.read, vec![to_bob.id]);
        let state = |id| store.message(id).unwrap().unwrap().state;
        assert_eq!(state(&to_bob.id), MessageState::Read);
        assert_eq!(state(&to_carol.id), MessageState::Delivered);
        assert_eq!(state(&from_bob.id), MessageState::Received);
        // Read twice: nothing changes the second time.
        let twice = store
            .apply(&Changes {
                read_receipt: Some((bob, ids)),
                ..Changes::default()
            })
            .unwrap();
        assert!(twice.read.is_empty());
    }

    fn incoming_transfer(id: u8, contact: ContactId, state: TransferState) -> Transfer {
        Transfer {
            id: TransferId([id; 16]),
            contact,
            direction: Direction::Incoming,
            name: "a.bin".into(),
            size: 10,
            hash: String::new(),
            folder: false,
            files: 1,
            media_type: "application/octet-stream".into(),
            dangerous: false,
            state,
            bytes_done: 0,
            resumed_from: 0,
            path: None,
            error: None,
            created_at: 1,
            updated_at: 1,
        }
    }

    #[test]
    fn a_transfer_id_in_use_refuses_the_whole_offer_and_what_is_stored_counts_per_day() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &test_me(), test_key()).unwrap();
        let bob = iroh::SecretKey::from_bytes(&[1; 32]).public();
        let carol = iroh::SecretKey::from_bytes(&[2; 32]).public();
        let mine = incoming_transfer(4, carol, TransferState::Offered);
        let offer = |id: u8, stored_bytes| Changes {
            session: Some((bob, session())),
            message: Some(message(
                id,
                bob,
                Direction::Incoming,
                MessageState::Received,
            )),
            new_transfer: Some(incoming_transfer(4, bob, TransferState::Offered)),
            stored_bytes,
            ..Changes::default()
        };
        store
            .apply(&Changes {
                new_transfer: Some(mine.clone()),
                ..Changes::default()
            })
            .unwrap();
        // Bob's offer reuses Carol's transfer id: nothing of it is stored, nor counted.
        let refused = store.apply(&offer(1, 500));
        assert!(matches!(refused, Err(Error::Protocol(_))), "{refused:?}");
        assert_eq!(store.transfer(&mine.id).unwrap(), Some(mine));
        assert_eq!(store.message(&MessageId([1; 16])).unwrap(), None);
        assert!(store.session(&bob).unwrap().is_none());
        assert_eq!(store.stored_today(&bob).unwrap(), 0);
        // What is taken is counted, per contact, and only for today.
        for stored_bytes in [700, 50] {
            let taken = Changes {
                session: Some((bob, session())),
                stored_bytes,
                ..Changes::default()
            };
            store.apply(&taken).unwrap();
        }
        assert_eq!(store.stored_today(&bob).unwrap(), 750);
        assert_eq!(store.stored_today(&carol).unwrap(), 0);
        let yesterday = day_of(now_ms()) - 1;
        store
            .quotas
            .insert(daily_key(&carol), &daily_value(yesterday, 9_000)[..])
            .unwrap();
        assert_eq!(store.stored_today(&carol).unwrap(), 0);
    }

    fn contact(id: ContactId, name: &str, x25519: u8, paired_at: u64) -> Contact {
        Contact {
            id,
            name: name.into(),
            x25519: [x25519; 32],
            addr: Default::default(),
            paired_at,
            verified: false,
        }
    }

    /// Pairs `who` and stores `n` unread incoming messages from them, ids from `first`.
    fn paired_with_messages(store: &Store, who: ContactId, first: u8, n: u8) {
        store
            .store_pairing(
                &contact(who, "Someone", 3, 1),
                &session(),
                None,
                None,
                1,
                "",
            )
            .unwrap();
        for id in first..first + n {
            let mut m = message(id, who, Direction::Incoming, MessageState::Received);
            m.conversation = ConversationId::direct(&test_me(), &who);
            let changes = Changes {
                session: Some((who, session())),
                message: Some(m),
                ..Changes::default()
            };
            store.apply(&changes).unwrap();
        }
    }

    #[test]
    fn removing_a_contact_takes_all_of_it_and_a_removal_cut_short_finishes_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let me = test_me();
        let bob = iroh::SecretKey::from_bytes(&[1; 32]).public();
        let carol = iroh::SecretKey::from_bytes(&[2; 32]).public();
        let dan = iroh::SecretKey::from_bytes(&[3; 32]).public();
        let direct = |who: &ContactId| ConversationId::direct(&me, who);
        {
            let store = Store::open(dir.path(), &me, test_key()).unwrap();
            paired_with_messages(&store, bob, 10, 3);
            paired_with_messages(&store, carol, 20, 3);
            let offer = incoming_transfer(5, bob, TransferState::Offered);
            store
                .apply(&Changes {
                    new_transfer: Some(offer.clone()),
                    ..Changes::default()
                })
                .unwrap();
            assert!(store.set_blocked(&bob, true, 5).unwrap());
            assert!(!store.set_blocked(&bob, true, 6).unwrap());
            assert!(store.admitted(&bob).unwrap().is_none());

            store.remove_contact(&bob, false).unwrap();
            assert!(store.contact(&bob).unwrap().is_none());
            assert!(store.session(&bob).unwrap().is_none());
            assert!(!store.is_blocked(&bob).unwrap());
            assert!(store.transfer(&offer.id).unwrap().is_none());
            assert!(store.history(&direct(&bob), None, 10).unwrap().is_empty());
            assert!(store.message(&MessageId([10; 16])).unwrap().is_none());
            assert!(store.conversation(&direct(&bob)).unwrap().is_none());
            assert_eq!(store.unread_count(&direct(&bob)).unwrap(), 0);
            // Carol's conversation is untouched.
            assert_eq!(store.history(&direct(&carol), None, 10).unwrap().len(), 3);
            assert_eq!(store.unread_total().unwrap(), 3);

            // Removed with the history kept: the messages stay, read, with their conversation.
            store.remove_contact(&carol, true).unwrap();
            let kept = store.history(&direct(&carol), None, 10).unwrap();
            assert_eq!(kept.len(), 3);
            assert!(kept.iter().all(|m| m.state == MessageState::Seen));
            assert!(store.conversation(&direct(&carol)).unwrap().is_some());
            assert_eq!(store.unread_total().unwrap(), 0);
            assert_eq!(store.unread(&direct(&carol)).unwrap().len(), 0);

            // A removal killed right after its transaction: the records are gone, the messages
            // not yet.
            paired_with_messages(&store, dan, 30, 4);
            store.contacts.remove(dan.as_bytes()).unwrap();
            store
                .meta
                .insert(purge_key(&direct(&dan)), &[0u8][..])
                .unwrap();
            store.db.flush().unwrap();
        }
        let store = Store::open(dir.path(), &me, test_key()).unwrap();
        assert!(store.history(&direct(&dan), None, 10).unwrap().is_empty());
        assert!(store.message(&MessageId([30; 16])).unwrap().is_none());
        assert!(store.meta.scan_prefix(PURGE_PREFIX).next().is_none());
        assert_eq!(store.history(&direct(&carol), None, 10).unwrap().len(), 3);
        sealed::assert_all_sealed(&store.db, &test_key());
    }

    #[test]
    fn pairing_again_replaces_the_pairing_unless_another_one_completed_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &test_me(), test_key()).unwrap();
        let bob = iroh::SecretKey::from_bytes(&[1; 32]).public();
        let mut first = contact(bob, "Bob", 3, 10);
        first.verified = true;
        store
            .store_pairing(&first, &session(), None, None, 10, "")
            .unwrap();
        // A session restored from a backup waits for a reset, or a new pairing.
        store.after_restore().unwrap();
        assert!(store.restored(&bob).unwrap() && !store.sendable(&bob).unwrap());
        let again = store.contact(&bob).unwrap().unwrap();
        store
            .store_pairing(&again, &session(), None, Some(10), 10, "")
            .unwrap();
        assert!(!store.restored(&bob).unwrap() && store.sendable(&bob).unwrap());
        // A pairing that began before the first one was stored is refused, changing nothing.
        let late = store.store_pairing(&contact(bob, "Bob", 4, 11), &session(), None, None, 11, "");
        assert!(matches!(late, Err(Error::PairingRefused(_))), "{late:?}");
        assert_eq!(store.contact(&bob).unwrap(), Some(first.clone()));
        // One that saw it replaces it; the same key keeps the verified mark, a new one drops it.
        store
            .store_pairing(
                &contact(bob, "Bob", 3, 12),
                &session(),
                None,
                Some(10),
                12,
                "",
            )
            .unwrap();
        assert!(store.contact(&bob).unwrap().unwrap().verified);
        // What waited for Bob was sealed with the replaced session: it fails, visibly.
        let s = session();
        let ad = crate::e2e::AssociatedData {
            sender: [0; 32],
            recipient: [0; 32],
            message_id: [0; 16],
        };
        let waiting = message(1, bob, Direction::Outgoing, MessageState::Queued);
        let item = OutboxItem {
            contact: bob,
            message_id: waiting.id,
            envelope: s.clone().seal(b"x", &ad).unwrap(),
            kind: OutboxKind::Message,
            queued_at: 0,
        };
        store
            .queue_outgoing(&s, &item, b"x", Some(&waiting), None)
            .unwrap();
        assert_eq!(store.queued_count(&bob).unwrap(), 1);
        store
            .store_pairing(
                &contact(bob, "Bob", 3, 125),
                &session(),
                None,
                Some(12),
                125,
                "",
            )
            .unwrap();
        assert!(store.outbox().unwrap().is_empty());
        assert_eq!(store.queued_count(&bob).unwrap(), 0);
        assert_eq!(
            store.message(&waiting.id).unwrap().map(|m| m.state),
            Some(MessageState::Failed)
        );
        store
            .store_pairing(
                &contact(bob, "Bob", 5, 13),
                &session(),
                None,
                Some(125),
                13,
                "key changed",
            )
            .unwrap();
        let now = store.contact(&bob).unwrap().unwrap();
        assert_eq!(
            (now.x25519, now.verified, now.paired_at),
            ([5; 32], false, 13)
        );
        // The new key is a key change: sending waits, and the line stays in the history.
        assert!(store.key_changed(&bob).unwrap());
        assert!(!store.sendable(&bob).unwrap());
        let direct = ConversationId::direct(&test_me(), &bob);
        let lines = store.history(&direct, None, 10).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(
            (lines[0].direction, lines[0].body.as_str()),
            (Direction::System, "key changed")
        );
        assert_eq!(store.unread_count(&direct).unwrap(), 0);
        // The key accepted before coming back clears the change; another one sets it again.
        for (key, at, pending) in [(3, 131, false), (5, 132, true)] {
            let seen = store.contact(&bob).unwrap().map(|c| c.paired_at);
            store
                .store_pairing(
                    &contact(bob, "Bob", key, at),
                    &session(),
                    None,
                    seen,
                    at,
                    "key changed",
                )
                .unwrap();
            assert_eq!(store.key_changed(&bob).unwrap(), pending, "key {key}");
        }
        assert_eq!(store.history(&direct, None, 10).unwrap().len(), 2);
        let accepted = store.accept_key(&bob, "accepted", 14).unwrap().unwrap();
        assert_eq!(accepted.direction, Direction::System);
        assert!(store.sendable(&bob).unwrap());
        assert!(store.accept_key(&bob, "again", 14).unwrap().is_none());
        assert_eq!(store.history(&direct, None, 10).unwrap().len(), 3);
        // A blocked contact cannot pair.
        store.set_blocked(&bob, true, 14).unwrap();
        let blocked = store.store_pairing(
            &contact(bob, "Bob", 5, 150),
            &session(),
            None,
            Some(132),
            150,
            "",
        );
        assert!(
            matches!(blocked, Err(Error::PairingRefused(_))),
            "{blocked:?}"
        );
    }

    #[test]
    fn a_reset_seals_again_what_waits_and_an_earlier_release_item_fails_visibly() {
        let dir = tempfile::tempdir().unwrap();
        let bob = iroh::SecretKey::from_bytes(&[1; 32]).public();
        let carol = iroh::SecretKey::from_bytes(&[2; 32]).public();
        let ad = crate::e2e::AssociatedData {
            sender: [0; 32],
            recipient: [0; 32],
            message_id: [0; 16],
        };
        let item = |id: u8, to: ContactId, kind: OutboxKind| OutboxItem {
            contact: to,
            message_id: MessageId([id; 16]),
            envelope: session().seal(&[id], &ad).unwrap(),
            kind,
            queued_at: 0,
        };
        let (seq_kept, seq_old, seq_acked, seq_carol);
        {
            let store = Store::open(dir.path(), &test_me(), test_key()).unwrap();
            for (who, name) in [(bob, "Bob"), (carol, "Carol")] {
                store
                    .store_pairing(&contact(who, name, 3, 10), &session(), None, None, 10, "")
                    .unwrap();
            }
            let s = session();
            let waiting = message(1, bob, Direction::Outgoing, MessageState::Queued);
            seq_kept = store
                .queue_outgoing(
                    &s,
                    &item(1, bob, OutboxKind::Message),
                    b"p1",
                    Some(&waiting),
                    None,
                )
                .unwrap();
            seq_acked = store
                .queue_outgoing(&s, &item(2, bob, OutboxKind::Control), b"p2", None, None)
                .unwrap();
            seq_carol = store
                .queue_outgoing(&s, &item(3, carol, OutboxKind::Control), b"p3", None, None)
                .unwrap();
            // Queued by an earlier release: no plaintext kept. And a plaintext whose item an
            // earlier release already delivered: dropped at the next open.
            let old = message(4, bob, Direction::Outgoing, MessageState::Queued);
            seq_old = store.next_seq().unwrap();
            let mut batch = Batch::default();
            batch.insert(
                seq_old.to_be_bytes(),
                enc(&item(4, bob, OutboxKind::Message)).unwrap(),
            );
            store.outbox.apply_batch(batch).unwrap();
            tx_result(
                (&store.messages, &store.message_ids).transaction(|(m, i)| put_message(m, i, &old)),
            )
            .unwrap();
            store.build_counters().unwrap();
            store
                .outbox_plain
                .insert(999u64.to_be_bytes(), &b"orphan"[..])
                .unwrap();
            store.db.flush().unwrap();
        }
        let store = Store::open(dir.path(), &test_me(), test_key()).unwrap();
        assert!(store
            .outbox_plain
            .get(999u64.to_be_bytes())
            .unwrap()
            .is_none());
        let waiting: Vec<(u64, Option<Vec<u8>>)> = store
            .outbox_for(&bob)
            .unwrap()
            .into_iter()
            .map(|(seq, _, plain)| (seq, plain))
            .collect();
        assert_eq!(
            waiting,
            vec![
                (seq_kept, Some(b"p1".to_vec())),
                (seq_acked, Some(b"p2".to_vec())),
                (seq_old, None)
            ]
        );
        // The receipt is acknowledged while the reset runs: it is not put back.
        let acked = item(2, bob, OutboxKind::Control);
        store.complete_deliveries(&[(seq_acked, &acked)]).unwrap();
        let fresh = item(11, bob, OutboxKind::Message);
        let fresh_receipt = item(12, bob, OutboxKind::Control);
        let new_session = session();
        let bob_contact = store.contact(&bob).unwrap().unwrap();
        let applied = store
            .store_reset(
                &bob_contact,
                &new_session,
                &[
                    (seq_kept, fresh.clone(), b"p1".to_vec()),
                    (seq_acked, fresh_receipt, b"p2".to_vec()),
                ],
                &[(seq_old, item(4, bob, OutboxKind::Message))],
                Some("secured again"),
                20,
            )
            .unwrap();
        assert_eq!(applied.failed, vec![MessageId([4; 16])]);
        let line = applied.line.unwrap();
        assert_eq!(line.direction, Direction::System);
        let after: Vec<(u64, OutboxItem)> = store.outbox().unwrap();
        assert_eq!(after.len(), 2, "{after:?}");
        assert_eq!(after[0], (seq_kept, fresh));
        assert_eq!(after[1].0, seq_carol);
        assert_eq!(store.queued_count(&bob).unwrap(), 1);
        assert_eq!(
            store.message(&MessageId([4; 16])).unwrap().map(|m| m.state),
            Some(MessageState::Failed)
        );
        assert_eq!(
            store.message(&line.id).unwrap().map(|m| m.body),
            Some("secured again".to_string())
        );
        // A reset that began before a pairing again is not stored, nor one with a blocked
        // contact.
        let mut stale = bob_contact.clone();
        stale.paired_at -= 1;
        let refused = store.store_reset(&stale, &session(), &[], &[], None, 30);
        assert!(matches!(refused, Err(Error::Reset(_))), "{refused:?}");
        store.set_blocked(&bob, true, 30).unwrap();
        let refused = store.store_reset(&bob_contact, &session(), &[], &[], None, 30);
        assert!(matches!(refused, Err(Error::Blocked(_))), "{refused:?}");
        sealed::assert_all_sealed(&store.db, &test_key());
    }

    /// A store in a temp folder, paired with Bob.
    fn paired_with_bob() -> (tempfile::TempDir, Store, ContactId) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &test_me(), test_key()).unwrap();
        let bob = iroh::SecretKey::from_bytes(&[1; 32]).public();
        store
            .store_pairing(&contact(bob, "Bob", 3, 10), &session(), None, None, 10, "")
            .unwrap();
        (dir, store, bob)
    }

    /// Bob's change of the timer, as the inbox hands it to the store.
    fn timer_from(store: &Store, bob: ContactId, secs: u64, set_at: u64) -> Changes {
        let line = store
            .system_line(&bob, format!("t{secs}/{set_at}"), 1)
            .unwrap();
        Changes {
            timer: Some((bob, TimerSetting { secs, set_at }, line)),
            ..Changes::default()
        }
    }

    #[test]
    fn the_later_timer_holds_and_only_messages_written_under_it_expire() {
        let (_dir, store, bob) = paired_with_bob();
        let incoming = |id: u8, at: u64| Message {
            stored_at: at,
            ..message(id, bob, Direction::Incoming, MessageState::Received)
        };
        store
            .apply(&Changes {
                message: Some(incoming(1, 1_000)),
                ..Changes::default()
            })
            .unwrap();
        assert!(
            store
                .apply(&timer_from(&store, bob, 300, 50))
                .unwrap()
                .timer
        );
        // An older change arriving late does not undo the newer one.
        assert!(
            !store
                .apply(&timer_from(&store, bob, 3600, 40))
                .unwrap()
                .timer
        );
        assert_eq!(store.timer_secs(&bob).unwrap(), 300);
        store
            .apply(&Changes {
                message: Some(incoming(2, 2_000)),
                ..Changes::default()
            })
            .unwrap();
        assert_eq!(store.next_expiry().unwrap(), Some(2_000 + 300_000));
        assert!(store.expire(2_000 + 299_999, 10).unwrap().is_empty());
        let gone = store.expire(2_000 + 300_000, 10).unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].id, MessageId([2; 16]));
        assert!(store.message(&MessageId([2; 16])).unwrap().is_none());
        assert!(store.message(&MessageId([1; 16])).unwrap().is_some());
        assert_eq!(store.next_expiry().unwrap(), None);
        assert_eq!(store.unread_count(&ConversationId([9; 16])).unwrap(), 1);
    }

    #[test]
    fn timers_stamped_alike_settle_on_the_longer_one_whichever_arrives_first() {
        for order in [[300, 3600], [3600, 300]] {
            let (_dir, store, bob) = paired_with_bob();
            for secs in order {
                store.apply(&timer_from(&store, bob, secs, 50)).unwrap();
            }
            assert_eq!(store.timer_secs(&bob).unwrap(), 3600, "{order:?}");
        }
    }

    #[test]
    fn an_expired_file_message_takes_its_transfer_and_nothing_writes_it_back() {
        let (_dir, store, bob) = paired_with_bob();
        store.apply(&timer_from(&store, bob, 300, 5)).unwrap();
        let offer = incoming_transfer(3, bob, TransferState::Offered);
        store
            .apply(&Changes {
                message: Some(Message {
                    transfer: Some(offer.id),
                    ..message(2, bob, Direction::Incoming, MessageState::Received)
                }),
                new_transfer: Some(offer.clone()),
                ..Changes::default()
            })
            .unwrap();
        // A damaged expiry entry is dropped, not a panic.
        store.expiry.insert([0u8], &[][..]).unwrap();
        let gone = store.expire(1 + 300_000, 10).unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].transfer.as_ref().map(|t| t.id), Some(offer.id));
        assert!(store.transfer(&offer.id).unwrap().is_none());
        assert_eq!(store.expiry.len(), 0);
        assert_eq!(store.unread_count(&ConversationId([9; 16])).unwrap(), 0);
        // A fetch or an update still holding the record cannot bring it back.
        let mut stale = offer.clone();
        assert!(store
            .advance_transfer(&mut stale, TransferState::Accepted)
            .is_err());
        store
            .apply(&Changes {
                transfers: vec![Transfer {
                    state: TransferState::Cancelled,
                    ..offer.clone()
                }],
                ..Changes::default()
            })
            .unwrap();
        assert!(store.transfer(&offer.id).unwrap().is_none());
        store
            .set_message_state(&MessageId([2; 16]), MessageState::Failed)
            .unwrap();
        assert!(store.message(&MessageId([2; 16])).unwrap().is_none());
        sealed::assert_all_sealed(&store.db, &test_key());
    }

    #[test]
    fn a_stale_copy_cannot_move_a_transfer_out_of_a_final_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &test_me(), test_key()).unwrap();
        let contact = iroh::SecretKey::from_bytes(&[2; 32]).public();
        let mut fetching = incoming_transfer(3, contact, TransferState::Accepted);
        store.put_transfer(&fetching).unwrap();
        store
            .advance_transfer(&mut fetching, TransferState::Transferring)
            .unwrap();
        // The sender cancels (another task, its own copy)...
        let mut cancelling = fetching.clone();
        store
            .advance_transfer(&mut cancelling, TransferState::Cancelled)
            .unwrap();
        // ...and the fetch, still holding "transferring", fails a moment later.
        assert!(store
            .advance_transfer(&mut fetching, TransferState::Paused)
            .is_err());
        let stored = store.transfer(&fetching.id).unwrap().unwrap();
        assert_eq!(stored.state, TransferState::Cancelled);
    }

    #[test]
    fn counters_follow_every_change_and_a_rebuild_agrees() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &test_me(), test_key()).unwrap();
        let bob = iroh::SecretKey::from_bytes(&[2; 32]).public();
        let conv = ConversationId([9; 16]);
        let s = session();
        let ad = crate::e2e::AssociatedData {
            sender: [0; 32],
            recipient: [0; 32],
            message_id: [0; 16],
        };
        let envelope = s.clone().seal(b"x", &ad).unwrap();
        let item = |n: u8, kind| OutboxItem {
            contact: bob,
            message_id: MessageId([n; 16]),
            envelope: envelope.clone(),
            kind,
            queued_at: 0,
        };
        // Two outgoing messages and a receipt queued: two queued.
        let out1 = message(1, bob, Direction::Outgoing, MessageState::Queued);
        let out2 = message(2, bob, Direction::Outgoing, MessageState::Queued);
        let seq1 = store
            .queue_outgoing(&s, &item(1, OutboxKind::Message), b"1", Some(&out1), None)
            .unwrap();
        let seq2 = store
            .queue_outgoing(&s, &item(2, OutboxKind::Message), b"2", Some(&out2), None)
            .unwrap();
        store
            .queue_outgoing(&s, &item(3, OutboxKind::Control), b"3", None, None)
            .unwrap();
        assert_eq!(store.queued_count(&bob).unwrap(), 2);
        // Three incoming, one a duplicate: two unread.
        for n in [10, 11, 11] {
            store
                .apply(&Changes {
                    message: Some(message(n, bob, Direction::Incoming, MessageState::Received)),
                    ..Changes::default()
                })
                .unwrap();
        }
        assert_eq!(store.unread_count(&conv).unwrap(), 2);
        // One delivered (and its retry), one refused for good: none queued.
        let one = item(1, OutboxKind::Message);
        assert_eq!(store.complete_deliveries(&[(seq1, &one)]).unwrap(), [true]);
        store.complete_deliveries(&[(seq1, &one)]).unwrap();
        store.drop_outbox_item(seq2).unwrap();
        store.drop_outbox_item(seq2).unwrap();
        assert_eq!(store.queued_count(&bob).unwrap(), 0);
        // Seen twice over: one left unread.
        let seen = message(10, bob, Direction::Incoming, MessageState::Received);
        store
            .mark_seen(
                std::slice::from_ref(&seen),
                &s,
                &item(4, OutboxKind::Control),
                b"4",
            )
            .unwrap();
        store
            .mark_seen(&[seen], &s, &item(5, OutboxKind::Control), b"5")
            .unwrap();
        assert_eq!(store.unread_count(&conv).unwrap(), 1);
        // A rebuild from the records finds the same.
        store.build_counters().unwrap();
        assert_eq!(store.unread_count(&conv).unwrap(), 1);
        assert_eq!(store.queued_count(&bob).unwrap(), 0);
        assert_eq!(store.unread(&conv).unwrap().len(), 1);
        assert_eq!(store.unread_total().unwrap(), 1);
        sealed::assert_all_sealed(&store.db, &test_key());
    }
}
