//! The facade: [`Node`] opens a home, runs the iroh endpoint with one protocol handler per
//! ALPN, and offers everything a front end does as one method each.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::protocol::Router;
use iroh::Endpoint;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Events};
use crate::chat::Messaging;
use crate::contacts::Roster;
use crate::groups::Groups;
use crate::home::{HomeLock, STORE_DIR};
use crate::identity::{self, Identity};
use crate::inbox::{Allowances, Inbox};
use crate::model::{
    Contact, ContactId, ContactView, Conversation, ConversationId, Event, GroupView, Message,
    MessageId, Profile, StorageUsage, Transfer, TransferId,
};
use crate::naming::clean_display_name;
use crate::net::{self, ChatProtocol, Links, SETTING_PORT};
use crate::outbox::Outbox;
use crate::pairing::{self, PairProtocol, Pairing};
use crate::reset::{ResetProtocol, Resets, Why};
use crate::sessions::SessionLocks;
use crate::store::GroupRecord;
use crate::store::{Store, SETTING_NAME, SETTING_NET};
use crate::timers::Timers;
use crate::transfer::{self, Blobs, Transfers};
use crate::trust::Trust;
use crate::vault::{self, Passphrase};
use crate::wire::{ALPN_CHAT, ALPN_CHAT_2, ALPN_PAIR, ALPN_RESET};
use crate::Error;

pub use crate::net::{NetSettings, RelayChoice};

/// How long an invite lives unless told otherwise.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How often live links are pinged and absent contacts dialled.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(15);

/// Options for one run; `None` fields fall back to the home's stored settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Relay override.
    pub relay: Option<RelayChoice>,
    /// Bind override.
    pub bind: Option<SocketAddr>,
    /// Local discovery override.
    pub local_discovery: Option<bool>,
    /// When false the endpoint has no direct (IP) transport at all: relay only.
    pub direct: bool,
    /// Ping and re-dial interval.
    pub ping_interval: Duration,
    /// Accept every file offer from every contact (`ferry daemon --accept-files`).
    pub accept_files: bool,
    /// What one contact may make this node store (the `inbox::RATE_*` constants unless a test
    /// lowers them).
    pub allowances: Allowances,
    /// Speak `ferry/chat/2` (deliveries in batches) as well as `ferry/chat/1`. Off, the node
    /// speaks only `ferry/chat/1`, as releases before batches did: the compatibility tests.
    pub batches: bool,
    /// How often the blob store drops what no transfer needs any more
    /// ([`transfer::GC_INTERVAL`] unless a test shortens it).
    pub gc_interval: Duration,
    /// Fault injection for tests: as inviter, store the next pairing and then never send the
    /// joiner the final `Done` (a pairing only this side kept).
    #[doc(hidden)]
    pub drop_next_pair_done: bool,
    /// Reset sessions (`ferry/reset/1`). Off, the node neither speaks it nor starts one, and
    /// refuses for good what it cannot open, as releases before resets did: the
    /// compatibility tests.
    pub resets: bool,
    /// Fault injection for tests: as the responder of a reset, store the next one and then
    /// never send the initiator the final `Done`.
    #[doc(hidden)]
    pub drop_next_reset_done: bool,
    /// How long one second of a disappearing-message timer lasts, in ms (1,000; tests
    /// shorten it so a 5-minute timer runs out in moments).
    #[doc(hidden)]
    pub timer_ms: u64,
    /// The passphrase the home's data key is kept under, if it is (else unused). A home of a
    /// release before sealing is given one at its first open if this is set.
    pub passphrase: Option<Passphrase>,
    /// Fault injection for tests: what this node's blob provider sends at most, in bytes per
    /// second (else `FERRY_DEBUG_THROTTLE_BPS` in debug builds).
    #[doc(hidden)]
    pub throttle_bps: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            relay: None,
            bind: None,
            local_discovery: None,
            direct: true,
            ping_interval: DEFAULT_PING_INTERVAL,
            accept_files: false,
            allowances: Allowances::default(),
            batches: true,
            gc_interval: transfer::GC_INTERVAL,
            drop_next_pair_done: false,
            resets: true,
            drop_next_reset_done: false,
            timer_ms: 1000,
            passphrase: None,
            throttle_bps: None,
        }
    }
}

/// The chat protocols a node speaks, newest (preferred) first.
fn chat_alpns(batches: bool) -> Vec<Vec<u8>> {
    let newest = batches.then(|| ALPN_CHAT_2.to_vec());
    newest.into_iter().chain([ALPN_CHAT.to_vec()]).collect()
}

/// What a name or id prefix names.
enum Target {
    Contact(Contact),
    Group(GroupRecord),
}

/// The first characters of a group's id, as lists show it.
fn short(id: &[u8; 16]) -> String {
    ConversationId(*id).to_string()[..10].to_string()
}

/// A running peer on one home: builds the services and features, and offers everything a
/// front end does as one method each.
pub struct Node {
    home: PathBuf,
    identity: Identity,
    store: Store,
    events: Events,
    links: Links,
    outbox: Outbox,
    roster: Roster,
    messaging: Messaging,
    groups: Groups,
    transfers: Arc<Transfers>,
    pairing: Arc<Pairing>,
    trust: Trust,
    resets: Arc<Resets>,
    timers: Timers,
    backups: Arc<crate::backup::Scheduler>,
    net: NetSettings,
    cancel: CancellationToken,
    router: Router,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    _lock: HomeLock,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("home", &self.home)
            .field("id", &self.identity.id().fmt_short().to_string())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Creates the identity and settings of a new home.
    pub fn init(home: &Path, name: &str) -> Result<ContactId, Error> {
        Self::init_with(home, name, &NetSettings::default())
    }

    /// Creates a new home with explicit network settings; its data key is kept in the OS
    /// keychain, else in a file (see [`vault`]).
    pub fn init_with(home: &Path, name: &str, net: &NetSettings) -> Result<ContactId, Error> {
        Self::init_protected(home, name, net, None)
    }

    /// Creates a new home whose data key is kept under `passphrase` if one is given.
    pub fn init_protected(
        home: &Path,
        name: &str,
        net: &NetSettings,
        passphrase: Option<&Passphrase>,
    ) -> Result<ContactId, Error> {
        let name = clean_display_name(name)?;
        let lock = HomeLock::acquire(home)?;
        if crate::home::has_identity(home) {
            return Err(Error::AlreadyInitialized(home.to_path_buf()));
        }
        let identity = Identity::generate();
        // A key file without an identity is what an `init` cut short left (the identity is
        // written last): its key and store are replaced. Such a store holds no conversation:
        // pairing needs the identity.
        let store_dir = home.join(STORE_DIR);
        if vault::protection(home)?.is_some() && store_dir.exists() {
            crate::home::shred_dir(&store_dir)?;
        }
        let key = Arc::new(vault::create(home, passphrase, true)?);
        let store = Store::open(&home.join(STORE_DIR), &identity.id(), key.clone())?;
        store.set_setting(SETTING_NAME, &name)?;
        store.set_setting(SETTING_NET, net)?;
        store.set_setting(SETTING_PORT, &0u16)?;
        drop(store);
        // Last: the identity marks the home initialised.
        identity::save_sealed(&identity, home, &key)?;
        drop(lock);
        Ok(identity.id())
    }

    /// Whether `home` has an identity.
    pub fn is_initialized(home: &Path) -> bool {
        crate::home::has_identity(home)
    }

    /// Opens a home: takes its lock, opens the store, starts the endpoint, the protocol
    /// handlers, the outbox worker and presence. The control socket is the caller's choice:
    /// [`crate::control::serve`].
    pub async fn open(home: &Path, config: Config) -> Result<Arc<Node>, Error> {
        let lock = HomeLock::acquire(home)?;
        let (key, identity) = identity::open_home(home, config.passphrase.as_ref())?;
        let store = Store::open(&home.join(STORE_DIR), &identity.id(), key)?;
        let stored: NetSettings = store.setting(SETTING_NET)?.unwrap_or_default();
        let net = NetSettings {
            relay: config.relay.clone().unwrap_or(stored.relay),
            bind: config.bind.or(stored.bind),
            local_discovery: config.local_discovery.unwrap_or(stored.local_discovery),
        };
        let endpoint = net::bind_endpoint(&identity, &store, &net, config.direct).await?;
        let blobs = Blobs::open(
            home,
            config.accept_files,
            config.gc_interval,
            config.allowances.daily_bytes,
            config.throttle_bps,
        )
        .await?;
        let me = identity.id();
        let cancel = CancellationToken::new();
        let events = Events::new();
        let bus = Bus::default();
        let chat_alpns = chat_alpns(config.batches);
        // Services, each from what it uses.
        let sessions = Arc::new(SessionLocks::new(config.resets));
        let inbox = Arc::new(Inbox::new(
            me,
            store.clone(),
            sessions.clone(),
            config.allowances,
            events.clone(),
            bus.clone(),
        ));
        let links = Links::new(
            endpoint.clone(),
            store.clone(),
            events.clone(),
            bus.clone(),
            inbox.clone(),
            net.relay.clone(),
            config.ping_interval,
            cancel.clone(),
            chat_alpns.clone(),
        );
        let outbox = Outbox::new(
            me,
            store.clone(),
            sessions.clone(),
            links.clone(),
            events.clone(),
            &bus,
            cancel.clone(),
        );
        let roster = Roster::new(me, identity.x25519_public(), store.clone(), links.clone());
        // Features, which never call each other: payloads reach them through the inbox's
        // table, link changes and ticks through the bus.
        let messaging = Messaging::new(store.clone(), outbox.clone(), events.clone());
        let groups = Groups::new(
            identity.clone(),
            store.clone(),
            outbox.clone(),
            links.clone(),
            events.clone(),
            &bus,
        );
        let transfers = Transfers::new(
            home.to_path_buf(),
            store.clone(),
            outbox.clone(),
            links.clone(),
            events.clone(),
            blobs,
            &bus,
        );
        let pairing = Pairing::new(
            identity.clone(),
            store.clone(),
            links.clone(),
            roster.clone(),
            events.clone(),
            sessions.clone(),
            config.drop_next_pair_done,
        );
        let trust = Trust::new(
            store.clone(),
            links.clone(),
            roster.clone(),
            events.clone(),
            bus.clone(),
            sessions.clone(),
        );
        let resets = Resets::new(
            identity.clone(),
            store.clone(),
            links.clone(),
            events.clone(),
            &bus,
            sessions.clone(),
            config.drop_next_reset_done,
        );
        store.set_timer_ms(config.timer_ms);
        let timers = Timers::new(
            store.clone(),
            outbox.clone(),
            roster.clone(),
            events.clone(),
            bus.clone(),
            cancel.clone(),
        );
        inbox.register(
            messaging
                .handlers()
                .into_iter()
                .chain(transfer::handlers(&transfers))
                .chain(timers.handlers())
                .chain(groups.handlers())
                .collect(),
        );
        let blobs_protocol = iroh_blobs::BlobsProtocol::new(
            &transfers.blobs.store,
            Some(transfers.blobs.events(Arc::downgrade(&transfers))),
        );
        let mut router = Router::builder(endpoint);
        // Preferred first: a contact that offers both gets batches.
        for alpn in chat_alpns {
            router = router.accept(alpn, ChatProtocol(links.clone()));
        }
        if config.resets {
            router = router.accept(ALPN_RESET, ResetProtocol(resets.clone()));
        }
        let router = router
            .accept(ALPN_PAIR, PairProtocol(pairing.clone()))
            .accept(iroh_blobs::ALPN, blobs_protocol)
            .spawn();
        // Messages (and their transfers) whose time ran out while the node was closed go before
        // anything resumes; tags a crash left without a record go too.
        if let Err(e) = timers.sweep().await {
            tracing::error!("deleting expired messages: {e}");
        }
        if let Err(e) = transfer::clean(&transfers).await {
            tracing::warn!("dropping unused blob tags: {e}");
        }
        transfer::resume(&transfers, None).await;
        let backups = crate::backup::Scheduler::new(
            identity.clone(),
            store.clone(),
            events.clone(),
            cancel.clone(),
            config.timer_ms,
        );
        let tasks = vec![
            tokio::spawn(outbox.clone().run()),
            tokio::spawn(links.clone().run_presence()),
            tokio::spawn(timers.clone().run()),
            tokio::spawn(backups.clone().run()),
        ];
        Ok(Arc::new(Node {
            home: home.to_path_buf(),
            identity,
            store,
            events,
            links,
            outbox,
            roster,
            messaging,
            groups,
            transfers,
            pairing,
            trust,
            resets,
            timers,
            backups,
            net,
            cancel,
            router,
            tasks: Mutex::new(tasks),
            _lock: lock,
        }))
    }

    /// Runs `task` until the node shuts down (front ends' own background work, such as the
    /// control socket's server). The task must end once [`Node::shutdown_token`] is cancelled.
    pub fn spawn_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(handle);
        }
    }

    /// Cancelled when the node shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// This home's folder.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// This node's endpoint id.
    pub fn id(&self) -> ContactId {
        self.identity.id()
    }

    /// The network settings in force for this run.
    pub fn net_settings(&self) -> &NetSettings {
        &self.net
    }

    /// The iroh endpoint (for diagnostics and tests).
    pub fn endpoint(&self) -> &Endpoint {
        self.links.endpoint()
    }

    /// The schedule of automatic backups, if one is set, with how the last one went.
    pub fn backup_schedule(&self) -> Result<Option<crate::backup::ScheduleView>, Error> {
        self.backups.view()
    }

    /// Writes a backup into `dir` every `every_secs` (at least an hour), keeping the newest
    /// `keep`, sealed under `passphrase`; `None` turns them off. The first is written at once.
    pub async fn set_backup_schedule(
        &self,
        schedule: Option<(PathBuf, u64, u32, Passphrase)>,
    ) -> Result<Option<crate::backup::ScheduleView>, Error> {
        self.backups.set(schedule).await
    }

    /// Writes a backup of this home to `path` (identity, contacts, sessions, conversations
    /// with their history, the outbox, settings), sealed under `passphrase`, which is not the
    /// home's own. `progress` hears `(entries written, entries in all)` now and then. See
    /// [`crate::backup`].
    pub async fn export_backup(
        &self,
        path: &Path,
        passphrase: &Passphrase,
        progress: impl Fn(u64, u64) + Send + 'static,
    ) -> Result<crate::backup::BackupSummary, Error> {
        let (identity, store) = (self.identity.clone(), self.store.clone());
        let (path, passphrase) = (path.to_path_buf(), passphrase.clone());
        tokio::task::spawn_blocking(move || {
            crate::backup::export(&identity, &store, &path, &passphrase, &progress)
        })
        .await
        .map_err(|e| Error::io("writing the backup")(std::io::Error::other(e)))?
    }

    /// Name, id and current addresses.
    pub async fn profile(&self) -> Result<Profile, Error> {
        Ok(Profile {
            id: self.id(),
            name: self.store.my_name()?,
            addr: self.links.current_addr(Duration::from_secs(2)).await,
            protection: vault::protection(&self.home)?,
        })
    }

    /// Changes the display name (contacts learn it at the next pairing; later issues sync it).
    pub async fn set_name(&self, name: &str) -> Result<(), Error> {
        let name = clean_display_name(name)?;
        self.store.set_setting(SETTING_NAME, &name)?;
        self.store.flush().await
    }

    /// Issues a single-use invite valid for `ttl` (24 h by default), as `ferry:…` text.
    pub async fn create_invite(&self, ttl: Option<Duration>) -> Result<String, Error> {
        pairing::create_invite(&self.pairing, ttl.unwrap_or(DEFAULT_INVITE_TTL)).await
    }

    /// Pairs with the issuer of an invite.
    pub async fn pair(&self, invite: &str) -> Result<ContactView, Error> {
        let contact = pairing::join(&self.pairing, invite).await?;
        self.roster.view(&contact)
    }

    /// All contacts with presence, unread and queued counts.
    pub fn contacts(&self) -> Result<Vec<ContactView>, Error> {
        self.store
            .contacts()?
            .iter()
            .map(|c| self.roster.view(c))
            .collect()
    }

    /// Unread messages over all contacts (what a tray or dock badge shows).
    pub fn unread(&self) -> Result<u64, Error> {
        self.store.unread_total()
    }

    /// One contact, by name or id prefix.
    pub fn contact(&self, query: &str) -> Result<ContactView, Error> {
        let c = self.roster.resolve(query)?;
        self.roster.view(&c)
    }

    /// The stored record of a contact (addresses, keys), by id.
    pub fn stored_contact(&self, id: &ContactId) -> Result<Option<Contact>, Error> {
        self.store.contact(id)
    }

    /// Marks a contact verified (after comparing safety numbers) or not. Marking verified
    /// also accepts a changed identity key.
    pub async fn set_verified(&self, query: &str, verified: bool) -> Result<ContactView, Error> {
        let c = self.roster.resolve(query)?;
        if verified {
            self.trust.accept_key(&c).await?;
        }
        self.trust.set_verified(c, verified).await
    }

    /// Accepts a contact's changed identity key (after comparing the new safety number):
    /// sending resumes, and the conversation says so.
    pub async fn accept_key(&self, query: &str) -> Result<ContactView, Error> {
        let c = self.roster.resolve(query)?;
        self.trust.accept_key(&c).await?;
        self.roster.view(&c)
    }

    /// The text of the QR code that shows this side's safety number with a contact
    /// (`ferry-safety:1:…`): the contact scans it, or opens a picture of it, to verify.
    pub fn safety_text(&self, query: &str) -> Result<String, Error> {
        let c = self.roster.resolve(query)?;
        Ok(identity::safety_text(
            &self.identity.id(),
            &self.roster.safety_number_with(&c),
        ))
    }

    /// Checks a safety number scanned from a contact's screen (its QR text): when it is the
    /// one this side computes for that contact, the contact is marked verified. A mismatch is
    /// an error, and changes nothing.
    pub async fn verify_scanned(&self, text: &str) -> Result<ContactView, Error> {
        let (shower, number) = identity::parse_safety_text(text)?;
        if shower == self.identity.id() {
            return Err(Error::InvalidInput(
                "this is your own safety number: scan the one your contact shows".into(),
            ));
        }
        let c = self.store.contact(&shower)?.ok_or_else(|| {
            Error::InvalidInput("this safety number is from someone who is not your contact".into())
        })?;
        if self.roster.safety_number_with(&c) != number {
            return Err(Error::InvalidInput(format!(
                "this safety number does not match the one you have for {}: do not mark them \
                 verified; the keys one of you sees are not the other's",
                c.name
            )));
        }
        self.trust.accept_key(&c).await?;
        self.trust.set_verified(c, true).await
    }

    /// Blocks a contact: it is refused on every protocol, nothing it sends is taken, and
    /// nothing goes to it (what is queued waits) until it is unblocked.
    pub async fn block(&self, query: &str) -> Result<ContactView, Error> {
        let c = self.roster.resolve(query)?;
        self.trust.block(&c).await
    }

    /// Unblocks a contact: the conversation goes on as it was.
    pub async fn unblock(&self, query: &str) -> Result<ContactView, Error> {
        let c = self.roster.resolve(query)?;
        self.trust.unblock(&c).await
    }

    /// Removes a contact with everything about it (its history too, unless `keep_history`).
    /// Returns the removed record.
    pub async fn remove_contact(&self, query: &str, keep_history: bool) -> Result<Contact, Error> {
        let c = self.roster.resolve(query)?;
        self.trust.remove(&c, keep_history).await?;
        Ok(c)
    }

    /// Resets the session with a contact: a fresh handshake over the identity keys both hold,
    /// with no invite. What waits for them is sealed again and goes out after it, and both
    /// conversations say they are secured again. The contact must be online.
    pub async fn reset_session(&self, query: &str) -> Result<ContactView, Error> {
        let c = self.roster.resolve(query)?;
        self.resets.reset(&c, Why::User).await?;
        self.roster.view(&c)
    }

    /// Sets disappearing messages in the conversation with a contact: `secs` is 0 (off) or one
    /// of [`crate::limits::TIMER_CHOICES`]. Both sides show the change; messages written from
    /// now on are deleted from both stores that long after they were sent or received.
    pub async fn set_timer(&self, query: &str, secs: u64) -> Result<ContactView, Error> {
        let c = self.recipient(query)?;
        self.timers.set(&c, secs).await
    }

    /// A contact something may be sent to: known, and not blocked.
    fn recipient(&self, query: &str) -> Result<Contact, Error> {
        let c = self.roster.resolve(query)?;
        if self.store.is_blocked(&c.id)? {
            return Err(Error::Blocked(c.name));
        }
        if self.store.key_changed(&c.id)? {
            return Err(Error::KeyChanged(c.name));
        }
        Ok(c)
    }

    /// Sends a text message: sealed, stored in the outbox and flushed before this returns;
    /// delivered in the background.
    pub async fn send_text(&self, query: &str, text: &str) -> Result<Message, Error> {
        match self.target(query)? {
            Target::Group(g) => self.groups.send_text(&g, text).await,
            Target::Contact(_) => {
                let contact = self.recipient(query)?;
                self.messaging.send_text(&contact, text).await
            }
        }
    }

    /// What a name or id prefix names where a contact or a group is taken. A name that is
    /// both a contact's and a group's is an error that asks for the id.
    fn target(&self, query: &str) -> Result<Target, Error> {
        let contact = self.roster.resolve(query);
        let mut groups = self.groups.find(query)?;
        let listed = |groups: &[GroupRecord]| {
            groups
                .iter()
                .map(|g| format!("the group {} ({})", g.state.name, short(&g.id)))
                .collect::<Vec<_>>()
        };
        match (contact, groups.len()) {
            (Ok(c), 0) => Ok(Target::Contact(c)),
            (Err(Error::UnknownContact(_)), 1) => Ok(Target::Group(groups.remove(0))),
            (Err(Error::UnknownContact(_)), 0) => Err(Error::UnknownContact(query.into())),
            (Ok(c), _) => Err(Error::Ambiguous {
                query: query.into(),
                candidates: std::iter::once(format!(
                    "the contact {} ({})",
                    c.name,
                    c.id.fmt_short()
                ))
                .chain(listed(&groups))
                .collect::<Vec<_>>()
                .join(" and "),
            }),
            (Err(Error::UnknownContact(_)), _) => Err(Error::Ambiguous {
                query: query.into(),
                candidates: listed(&groups).join(" and "),
            }),
            (Err(e), _) => Err(e),
        }
    }

    /// A group by name or id prefix.
    fn group_record(&self, query: &str) -> Result<GroupRecord, Error> {
        let mut found = self.groups.find(query)?;
        match found.len() {
            0 => Err(Error::UnknownGroup(query.into())),
            1 => Ok(found.remove(0)),
            _ => Err(Error::Ambiguous {
                query: query.into(),
                candidates: found
                    .iter()
                    .map(|g| format!("the group {} ({})", g.state.name, short(&g.id)))
                    .collect::<Vec<_>>()
                    .join(" and "),
            }),
        }
    }

    /// A member of a group by your name for them, the group's name for them, or id prefix.
    fn group_member(&self, g: &GroupRecord, query: &str) -> Result<[u8; 32], Error> {
        let q = query.trim().to_lowercase();
        let mut found = Vec::new();
        for (id, m) in &g.state.members {
            let contact_name = ContactId::from_bytes(id)
                .ok()
                .and_then(|c| self.store.contact(&c).ok().flatten())
                .map(|c| c.name.to_lowercase());
            if m.name.to_lowercase() == q || contact_name.as_deref() == Some(q.as_str()) {
                found.push(*id);
            }
        }
        if found.is_empty() && !q.is_empty() {
            found = g
                .state
                .members
                .keys()
                .filter(|id| data_encoding::HEXLOWER.encode(&id[..]).starts_with(&q))
                .copied()
                .collect();
        }
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::InvalidInput(format!(
                "nobody in {} matches {query:?}",
                g.state.name
            ))),
            _ => Err(Error::Ambiguous {
                query: query.into(),
                candidates: format!("several members of {}", g.state.name),
            }),
        }
    }

    /// Creates a group with these contacts (names or id prefixes); you are its first admin.
    pub async fn create_group(&self, name: &str, members: &[String]) -> Result<GroupView, Error> {
        let mut contacts = Vec::new();
        for m in members {
            contacts.push(self.recipient(m)?);
        }
        self.groups.create(name, &contacts).await
    }

    /// Every group you are or were in, newest first.
    pub fn groups(&self) -> Result<Vec<GroupView>, Error> {
        self.groups.list()
    }

    /// One group, by name or id prefix.
    pub fn group(&self, query: &str) -> Result<GroupView, Error> {
        let g = self.group_record(query)?;
        self.groups.view(&g)
    }

    /// Adds a contact to a group (admins only).
    pub async fn group_add(&self, group: &str, contact: &str) -> Result<GroupView, Error> {
        let g = self.group_record(group)?;
        let c = self.recipient(contact)?;
        self.groups.add(&g, &c).await
    }

    /// Removes a member from a group (admins only): they receive nothing written after it.
    pub async fn group_remove(&self, group: &str, member: &str) -> Result<GroupView, Error> {
        let g = self.group_record(group)?;
        let m = self.group_member(&g, member)?;
        self.groups.remove(&g, &m).await
    }

    /// Makes a member of a group an admin (admins only).
    pub async fn group_make_admin(&self, group: &str, member: &str) -> Result<GroupView, Error> {
        let g = self.group_record(group)?;
        let m = self.group_member(&g, member)?;
        self.groups.make_admin(&g, &m).await
    }

    /// Leaves a group.
    pub async fn group_leave(&self, group: &str) -> Result<GroupView, Error> {
        let g = self.group_record(group)?;
        self.groups.leave(&g).await
    }

    /// Renames a group.
    pub async fn group_rename(&self, group: &str, name: &str) -> Result<GroupView, Error> {
        let g = self.group_record(group)?;
        self.groups.rename(&g, name).await
    }

    /// How far your messages in a group have got: for each of `ids`, how many of the other
    /// members hold it and have read it (receipts are kept in groups of up to
    /// [`MAX_RECEIPT_MEMBERS`](crate::group::MAX_RECEIPT_MEMBERS)).
    pub fn group_receipts(
        &self,
        group: &str,
        ids: &[MessageId],
    ) -> Result<Vec<crate::model::MessageReceipt>, Error> {
        let g = self.group_record(group)?;
        self.groups.receipts(&g, ids)
    }

    /// A group's log as stored (tests of what members accept).
    #[doc(hidden)]
    pub fn group_entries(
        &self,
        group: &str,
    ) -> Result<Vec<ferry_proto::group::SignedEntry>, Error> {
        let g = self.group_record(group)?;
        self.groups.entries(&g)
    }

    /// Takes group entries as if `from` had sent them (tests of forged entries).
    #[doc(hidden)]
    pub async fn inject_group_entries(
        &self,
        from: &str,
        entries: Vec<ferry_proto::group::SignedEntry>,
    ) -> Result<(), Error> {
        let c = self.roster.resolve(from)?;
        let group = entries.first().map(|e| e.entry.group).unwrap_or_default();
        self.groups.inject(&c, group, entries).await
    }

    /// Writes a group entry whatever the rules say here (tests of what other members reject).
    #[doc(hidden)]
    pub async fn group_write_unchecked(
        &self,
        group: &str,
        body: ferry_proto::group::Body,
    ) -> Result<GroupView, Error> {
        let g = self.group_record(group)?;
        self.groups.write_unchecked(&g, body).await
    }

    /// Every conversation this home has (one per contact; groups will add theirs).
    pub fn conversations(&self) -> Result<Vec<Conversation>, Error> {
        self.store.conversations()
    }

    /// A page of the conversation with a contact, oldest first. With `mark_read`, the incoming
    /// messages on the page become seen and a read receipt is queued for the sender.
    pub async fn history(
        &self,
        query: &str,
        before_seq: Option<u64>,
        limit: usize,
        mark_read: bool,
    ) -> Result<Vec<Message>, Error> {
        let contact = match self.target(query)? {
            Target::Group(g) => return self.groups.history(&g, before_seq, limit, mark_read).await,
            Target::Contact(c) => c,
        };
        let conv = self.roster.conversation_with(&contact.id);
        let mut page = self.store.history(&conv, before_seq, limit)?;
        if mark_read {
            self.messaging.mark_seen(&contact, &mut page).await?;
        }
        Ok(page)
    }

    /// Offers a file or folder to a contact or a group; returns once the offer is stored.
    /// Whichever process holds this home serves it (in a group, so does every member who
    /// fetched it, or part of it).
    pub async fn send_file(&self, query: &str, path: &Path) -> Result<Transfer, Error> {
        match self.target(query)? {
            Target::Contact(_) => {
                // Checked as any send is (not blocked, key accepted).
                let contact = self.recipient(query)?;
                transfer::send_path(&self.transfers, &contact, path, None, None).await
            }
            Target::Group(g) => {
                let t =
                    transfer::import_for_group(&self.transfers, self.identity.id(), path).await?;
                self.groups.send_file(&g, t.clone()).await?;
                Ok(t)
            }
        }
    }

    /// The bytes each member sent of a group file this home fetched (since this node started).
    #[doc(hidden)]
    pub fn transfer_sources(&self, query: &str) -> Result<Vec<(ContactId, u64)>, Error> {
        let t = transfer::resolve(&self.transfers, query)?;
        Ok(transfer::sources(&self.transfers, &t.id))
    }

    /// Like [`Node::send_file`] but offering the file under another name (tests of hostile names).
    #[doc(hidden)]
    pub async fn send_file_named(
        &self,
        query: &str,
        path: &Path,
        name: &str,
    ) -> Result<Transfer, Error> {
        let contact = self.recipient(query)?;
        transfer::send_path(&self.transfers, &contact, path, Some(name), None).await
    }

    /// Offers a file with an offer that lies as `claim` says (tests of a hostile sender).
    #[doc(hidden)]
    pub async fn send_file_claiming(
        &self,
        query: &str,
        path: &Path,
        claim: transfer::Claim,
    ) -> Result<Transfer, Error> {
        let contact = self.recipient(query)?;
        transfer::send_path(&self.transfers, &contact, path, None, Some(claim)).await
    }

    /// All transfers, oldest first.
    pub fn transfers(&self) -> Result<Vec<Transfer>, Error> {
        self.store.transfers()
    }

    /// One transfer by id or id prefix (at least 4 characters).
    pub fn transfer(&self, query: &str) -> Result<Transfer, Error> {
        transfer::resolve(&self.transfers, query)
    }

    /// Accepts an offered file or folder (checks free space first) and starts fetching it.
    pub async fn accept_transfer(&self, query: &str) -> Result<Transfer, Error> {
        let t = transfer::resolve(&self.transfers, query)?;
        transfer::accept(&self.transfers, &t.id).await
    }

    /// Declines an offer.
    pub async fn decline_transfer(&self, query: &str) -> Result<Transfer, Error> {
        let t = transfer::resolve(&self.transfers, query)?;
        transfer::decline(&self.transfers, &t.id).await
    }

    /// Cancels a transfer (either side).
    pub async fn cancel_transfer(&self, query: &str) -> Result<Transfer, Error> {
        let t = transfer::resolve(&self.transfers, query)?;
        transfer::cancel(&self.transfers, &t.id).await
    }

    /// Accept offers from a contact automatically up to `max_bytes`, or never (`None`).
    pub async fn set_auto_accept(&self, query: &str, max_bytes: Option<u64>) -> Result<(), Error> {
        let c = self.roster.resolve(query)?;
        transfer::set_auto_accept(&self.transfers, &c.id, max_bytes).await
    }

    /// The automatic-accept cap for a contact.
    pub fn auto_accept(&self, query: &str) -> Result<Option<u64>, Error> {
        let c = self.roster.resolve(query)?;
        transfer::auto_accept_limit(&self.transfers, &c.id)
    }

    /// Where received files are saved.
    pub fn downloads_dir(&self) -> Result<PathBuf, Error> {
        transfer::downloads_dir(&self.transfers)
    }

    /// Sets where received files are saved (a stored setting shared with the desktop app).
    pub async fn set_downloads_dir(&self, dir: &Path) -> Result<(), Error> {
        transfer::set_downloads_dir(&self.transfers, dir).await
    }

    /// The network settings stored in this home (what the next start uses).
    pub fn stored_net_settings(&self) -> Result<NetSettings, Error> {
        Ok(self
            .store
            .setting(SETTING_NET)?
            .unwrap_or_else(|| self.net.clone()))
    }

    /// Stores relay and local-discovery choices for the next start. Returns whether they
    /// differ from what the running node uses (so a restart is needed to apply them).
    pub async fn set_net_settings(
        &self,
        relay: RelayChoice,
        local_discovery: bool,
    ) -> Result<bool, Error> {
        let mut net = self.stored_net_settings()?;
        net.relay = relay;
        net.local_discovery = local_discovery;
        self.store.set_setting(SETTING_NET, &net)?;
        self.store.flush().await?;
        let running = &self.net;
        Ok(running.relay != net.relay || running.local_discovery != net.local_discovery)
    }

    /// Disk space this home uses.
    pub fn storage(&self) -> StorageUsage {
        let home = self.home.clone();
        StorageUsage {
            store_bytes: crate::home::dir_size(&home.join(STORE_DIR)),
            blobs_bytes: crate::home::dir_size(&home.join(transfer::BLOBS_DIR)),
            home,
        }
    }

    /// Lets the blob store free what no live transfer needs (finished, failed, declined or
    /// cancelled transfers; records that no longer exist). Space is freed by the next garbage
    /// collection, within [`transfer::GC_INTERVAL`]. Returns how many blob sets were released.
    pub async fn clean_storage(&self) -> Result<u32, Error> {
        transfer::clean(&self.transfers).await
    }

    /// A transfer by exact id.
    pub fn transfer_by_id(&self, id: &TransferId) -> Result<Option<Transfer>, Error> {
        self.store.transfer(id)
    }

    /// Number of payloads waiting in the outbox (for one contact, or all).
    pub fn outbox_len(&self, contact: Option<&ContactId>) -> Result<usize, Error> {
        self.outbox.len(contact)
    }

    /// Waits until the outbox holds nothing for `contact` (or anyone), up to `timeout`.
    /// Returns whether it drained.
    pub async fn wait_outbox_drained(
        &self,
        contact: Option<&ContactId>,
        timeout: Duration,
    ) -> Result<bool, Error> {
        self.outbox.wait_drained(contact, timeout).await
    }

    /// Dials every contact now and waits (up to `timeout`) so presence is current.
    pub async fn refresh_presence(&self, timeout: Duration) {
        self.links.refresh_all(timeout).await;
    }

    /// A message by id (for tests and front ends following events).
    pub fn message(&self, id: &MessageId) -> Result<Option<Message>, Error> {
        self.store.message(id)
    }

    /// The stream of events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Stops background work, closes connections gracefully and flushes the store.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for (i, mut t) in tasks.into_iter().enumerate() {
            // Every task watches the token; one stuck in I/O is not waited for long.
            if tokio::time::timeout(Duration::from_secs(2), &mut t)
                .await
                .is_err()
            {
                tracing::warn!(task = i, "background task did not stop in time; aborted");
                t.abort();
            }
        }
        tracing::debug!("background tasks stopped");
        if let Err(e) = self.router.shutdown().await {
            tracing::warn!("router shutdown: {e}");
        }
        if let Err(e) = self.transfers.blobs.store.shutdown().await {
            tracing::debug!("blob store shutdown: {e}");
        }
        if let Err(e) = self.store.flush().await {
            tracing::warn!("final flush: {e}");
        }
    }
}
