//! The facade: [`Node`] opens a home, runs the iroh endpoint with one protocol handler per
//! ALPN, and offers everything a front end does as one method each.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::endpoint::Connection;
use iroh::protocol::Router;
use iroh::Endpoint;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::home::{HomeLock, STORE_DIR};
use crate::identity::{self, safety_number, Identity};
use crate::inbox::Inbox;
use crate::model::{
    Contact, ContactId, ContactView, ConversationId, Event, Message, MessageId, Presence, Profile,
    StorageUsage,
};
use crate::model::{Transfer, TransferId};
use crate::naming::clean_display_name;
use crate::sessions::SessionLocks;
use crate::store::Store;
use crate::wire::{WireAddr, ALPN_CHAT, ALPN_PAIR};
use crate::{chat, control, net, pairing, transfer, Error};

/// How long an invite lives unless told otherwise.
pub const DEFAULT_INVITE_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How often live links are pinged and absent contacts dialled.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(15);

/// Which relay servers to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum RelayChoice {
    /// iroh's public relays and address lookup.
    Default,
    /// One self-hosted relay (e.g. `iroh-relay`), by URL.
    Custom(String),
    /// No relay, no DNS lookup, no port mapping: direct addresses only.
    Disabled,
}

impl std::str::FromStr for RelayChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "default" => Ok(RelayChoice::Default),
            "disabled" | "none" | "off" => Ok(RelayChoice::Disabled),
            url if url.starts_with("http://") || url.starts_with("https://") => {
                url.parse::<iroh::RelayUrl>()
                    .map_err(|e| Error::InvalidInput(format!("relay URL {url:?}: {e}")))?;
                Ok(RelayChoice::Custom(url.to_string()))
            }
            other => Err(Error::InvalidInput(format!(
                "relay must be `default`, `disabled` or an http(s) URL, not {other:?}"
            ))),
        }
    }
}

impl std::fmt::Display for RelayChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RelayChoice::Default => f.write_str("default"),
            RelayChoice::Custom(url) => f.write_str(url),
            RelayChoice::Disabled => f.write_str("disabled"),
        }
    }
}

/// Network settings stored in a home by `init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct NetSettings {
    /// Relay servers.
    pub relay: RelayChoice,
    /// Socket address to bind; port 0 means "this home's stable port".
    #[cfg_attr(feature = "specta", specta(type = Option<String>))]
    pub bind: Option<SocketAddr>,
    /// Local-network discovery (mDNS).
    pub local_discovery: bool,
}

impl Default for NetSettings {
    fn default() -> Self {
        NetSettings {
            relay: RelayChoice::Default,
            bind: None,
            local_discovery: true,
        }
    }
}

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
    /// Serve the control socket for other processes on this home.
    pub control_socket: bool,
    /// Accept every file offer from every contact (`ferry daemon --accept-files`).
    pub accept_files: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            relay: None,
            bind: None,
            local_discovery: None,
            direct: true,
            ping_interval: DEFAULT_PING_INTERVAL,
            control_socket: true,
            accept_files: false,
        }
    }
}

pub(crate) const SETTING_NAME: &str = "name";
pub(crate) const SETTING_NET: &str = "net";
pub(crate) const SETTING_PORT: &str = "port";

/// Everything the protocol handlers and background tasks share.
pub(crate) struct Engine {
    pub(crate) home: PathBuf,
    pub(crate) identity: Identity,
    pub(crate) store: Store,
    pub(crate) endpoint: Endpoint,
    pub(crate) events: broadcast::Sender<Event>,
    /// Live chat connections, one per contact (the newest wins).
    pub(crate) links: Mutex<HashMap<ContactId, Connection>>,
    /// Last presence reported per contact (to emit changes only).
    pub(crate) presence: Mutex<HashMap<ContactId, Presence>>,
    /// Wakes the outbox worker (new item, contact came online).
    pub(crate) outbox_wake: Notify,
    /// Signalled after each outbox pass.
    pub(crate) outbox_drained: Notify,
    /// One lock per contact's ratchet session (shared with the inbox).
    pub(crate) sessions: Arc<SessionLocks>,
    /// Where every sealed delivery from a contact comes in.
    pub(crate) inbox: Inbox,
    pub(crate) backoff: Mutex<HashMap<ContactId, chat::Backoff>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) ping_interval: Duration,
    pub(crate) net: NetSettings,
    pub(crate) blobs: transfer::Blobs,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("home", &self.home)
            .field("id", &self.identity.id().fmt_short().to_string())
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub(crate) fn id(&self) -> ContactId {
        self.identity.id()
    }

    pub(crate) fn name(&self) -> Result<String, Error> {
        Ok(self.store.setting(SETTING_NAME)?.unwrap_or_default())
    }

    pub(crate) fn emit(&self, event: Event) {
        // No subscriber is fine: events are a view, the store is the truth.
        let _ = self.events.send(event);
    }

    pub(crate) fn conversation_with(&self, contact: &ContactId) -> ConversationId {
        ConversationId::direct(&self.id(), contact)
    }

    pub(crate) fn safety_number_with(&self, c: &Contact) -> String {
        safety_number(
            (&self.id(), &self.identity.x25519_public()),
            (&c.id, &c.x25519),
        )
    }

    pub(crate) fn contact_view(&self, c: &Contact) -> Result<ContactView, Error> {
        let conv = self.conversation_with(&c.id);
        let queued = self
            .store
            .outbox()?
            .iter()
            .filter(|(_, i)| i.contact == c.id && i.kind == crate::store::OutboxKind::Message)
            .count() as u64;
        Ok(ContactView {
            id: c.id,
            name: c.name.clone(),
            presence: self.presence_of(&c.id),
            safety_number: self.safety_number_with(c),
            verified: c.verified,
            unread: self.store.unread(&conv)?.len() as u64,
            queued,
        })
    }

    /// Finds a contact by display name (case-insensitive) or id prefix.
    pub(crate) fn resolve(&self, query: &str) -> Result<Contact, Error> {
        let q = query.trim();
        if q.is_empty() {
            return Err(Error::UnknownContact(query.into()));
        }
        let contacts = self.store.contacts()?;
        let lower = q.to_lowercase();
        let by_name: Vec<_> = contacts
            .iter()
            .filter(|c| c.name.to_lowercase() == lower)
            .collect();
        let found: Vec<_> = if by_name.is_empty() {
            contacts
                .iter()
                .filter(|c| c.id.to_string().starts_with(&lower))
                .collect()
        } else {
            by_name
        };
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::UnknownContact(query.into())),
            many => Err(Error::AmbiguousContact {
                query: query.into(),
                candidates: many
                    .iter()
                    .map(|c| format!("{} ({})", c.name, c.id.fmt_short()))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

/// A running peer on one home.
pub struct Node {
    engine: Arc<Engine>,
    router: Router,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    _lock: HomeLock,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Creates the identity and settings of a new home.
    pub fn init(home: &Path, name: &str) -> Result<ContactId, Error> {
        Self::init_with(home, name, &NetSettings::default())
    }

    /// Creates a new home with explicit network settings.
    pub fn init_with(home: &Path, name: &str, net: &NetSettings) -> Result<ContactId, Error> {
        let name = clean_display_name(name)?;
        let lock = HomeLock::acquire(home)?;
        if identity::load(home)?.is_some() {
            return Err(Error::AlreadyInitialized(home.to_path_buf()));
        }
        let store = Store::open(&home.join(STORE_DIR))?;
        store.set_setting(SETTING_NAME, &name)?;
        store.set_setting(SETTING_NET, net)?;
        store.set_setting(SETTING_PORT, &0u16)?;
        drop(store);
        let identity = Identity::generate();
        identity::save_new(&identity, home)?;
        drop(lock);
        Ok(identity.id())
    }

    /// Whether `home` has an identity.
    pub fn is_initialized(home: &Path) -> bool {
        matches!(identity::load(home), Ok(Some(_)))
    }

    /// Opens a home: takes its lock, opens the store, starts the endpoint, the protocol
    /// handlers, the outbox worker, presence, and (unless disabled) the control socket.
    pub async fn open(home: &Path, config: Config) -> Result<Arc<Node>, Error> {
        let lock = HomeLock::acquire(home)?;
        let identity =
            identity::load(home)?.ok_or_else(|| Error::NotInitialized(home.to_path_buf()))?;
        let store = Store::open(&home.join(STORE_DIR))?;
        let stored: NetSettings = store.setting(SETTING_NET)?.unwrap_or_default();
        let net = NetSettings {
            relay: config.relay.clone().unwrap_or(stored.relay),
            bind: config.bind.or(stored.bind),
            local_discovery: config.local_discovery.unwrap_or(stored.local_discovery),
        };
        let endpoint = net::bind_endpoint(&identity, &store, &net, config.direct).await?;
        let blobs = transfer::Blobs::open(home, config.accept_files).await?;
        let (events, _) = broadcast::channel(1024);
        let sessions = Arc::new(SessionLocks::default());
        let inbox = Inbox::new(identity.id(), store.clone(), sessions.clone());
        let engine = Arc::new(Engine {
            home: home.to_path_buf(),
            identity,
            store,
            endpoint: endpoint.clone(),
            events,
            links: Mutex::default(),
            presence: Mutex::default(),
            outbox_wake: Notify::new(),
            outbox_drained: Notify::new(),
            sessions: sessions.clone(),
            inbox,
            backoff: Mutex::default(),
            cancel: CancellationToken::new(),
            ping_interval: config.ping_interval,
            net,
            blobs,
        });
        // Each feature takes its payload kinds; none of them calls another.
        engine.inbox.register(
            chat::handlers(&engine)
                .into_iter()
                .chain(transfer::handlers(&engine))
                .collect(),
        );
        let blobs_protocol = iroh_blobs::BlobsProtocol::new(
            &engine.blobs.store,
            Some(transfer::Blobs::events(Arc::downgrade(&engine))),
        );
        let router = Router::builder(endpoint)
            .accept(ALPN_CHAT, chat::ChatProtocol(engine.clone()))
            .accept(ALPN_PAIR, pairing::PairProtocol(engine.clone()))
            .accept(iroh_blobs::ALPN, blobs_protocol)
            .spawn();
        transfer::resume(&engine, None).await;
        let mut tasks = vec![
            tokio::spawn(chat::run_outbox(engine.clone())),
            tokio::spawn(net::run_presence(engine.clone())),
        ];
        // The control server learns the node once it exists; it only holds a weak reference.
        let node_slot = Arc::new(tokio::sync::OnceCell::new());
        if config.control_socket {
            let server = control::Server::bind(home).await?;
            tasks.push(tokio::spawn(
                server.run(node_slot.clone(), engine.cancel.clone()),
            ));
        }
        let node = Arc::new(Node {
            engine,
            router,
            tasks: Mutex::new(tasks),
            _lock: lock,
        });
        let _ = node_slot.set(Arc::downgrade(&node));
        Ok(node)
    }

    /// This home's folder.
    pub fn home(&self) -> &Path {
        &self.engine.home
    }

    /// This node's endpoint id.
    pub fn id(&self) -> ContactId {
        self.engine.id()
    }

    /// The network settings in force for this run.
    pub fn net_settings(&self) -> &NetSettings {
        &self.engine.net
    }

    /// The iroh endpoint (for diagnostics and tests).
    pub fn endpoint(&self) -> &Endpoint {
        &self.engine.endpoint
    }

    /// Name, id and current addresses.
    pub async fn profile(&self) -> Result<Profile, Error> {
        Ok(Profile {
            id: self.id(),
            name: self.engine.name()?,
            addr: net::current_addr(&self.engine, Duration::from_secs(2)).await,
        })
    }

    /// Changes the display name (contacts learn it at the next pairing; later issues sync it).
    pub async fn set_name(&self, name: &str) -> Result<(), Error> {
        let name = clean_display_name(name)?;
        self.engine.store.set_setting(SETTING_NAME, &name)?;
        self.engine.store.flush().await
    }

    /// Issues a single-use invite valid for `ttl` (24 h by default), as `ferry:…` text.
    pub async fn create_invite(&self, ttl: Option<Duration>) -> Result<String, Error> {
        pairing::create_invite(&self.engine, ttl.unwrap_or(DEFAULT_INVITE_TTL)).await
    }

    /// Pairs with the issuer of an invite.
    pub async fn pair(&self, invite: &str) -> Result<ContactView, Error> {
        let contact = pairing::join(&self.engine, invite).await?;
        net::dial_soon(&self.engine, contact.id);
        self.engine.contact_view(&contact)
    }

    /// All contacts with presence, unread and queued counts.
    pub fn contacts(&self) -> Result<Vec<ContactView>, Error> {
        self.engine
            .store
            .contacts()?
            .iter()
            .map(|c| self.engine.contact_view(c))
            .collect()
    }

    /// Unread messages over all contacts (what a tray or dock badge shows).
    pub fn unread(&self) -> Result<u64, Error> {
        Ok(self.contacts()?.iter().map(|c| c.unread).sum())
    }

    /// One contact, by name or id prefix.
    pub fn contact(&self, query: &str) -> Result<ContactView, Error> {
        let c = self.engine.resolve(query)?;
        self.engine.contact_view(&c)
    }

    /// The stored record of a contact (addresses, keys), by id.
    pub fn stored_contact(&self, id: &ContactId) -> Result<Option<Contact>, Error> {
        self.engine.store.contact(id)
    }

    /// Marks a contact verified (after comparing safety numbers) or not.
    pub async fn set_verified(&self, query: &str, verified: bool) -> Result<ContactView, Error> {
        let mut c = self.engine.resolve(query)?;
        c.verified = verified;
        self.engine.store.put_contact(&c)?;
        self.engine.store.flush().await?;
        self.engine.contact_view(&c)
    }

    /// Sends a text message: sealed, stored in the outbox and flushed before this returns;
    /// delivered in the background.
    pub async fn send_text(&self, query: &str, text: &str) -> Result<Message, Error> {
        let contact = self.engine.resolve(query)?;
        chat::send_text(&self.engine, &contact, text).await
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
        let contact = self.engine.resolve(query)?;
        let conv = self.engine.conversation_with(&contact.id);
        let mut page = self.engine.store.history(&conv, before_seq, limit)?;
        if mark_read {
            chat::mark_seen(&self.engine, &contact, &mut page).await?;
        }
        Ok(page)
    }

    /// Offers a file or folder to a contact; returns once the offer is stored. Whichever process
    /// holds this home serves it.
    pub async fn send_file(&self, query: &str, path: &Path) -> Result<Transfer, Error> {
        let contact = self.engine.resolve(query)?;
        transfer::send_path(&self.engine, &contact, path, None).await
    }

    /// Like [`Node::send_file`] but offering the file under another name (tests of hostile names).
    #[doc(hidden)]
    pub async fn send_file_named(
        &self,
        query: &str,
        path: &Path,
        name: &str,
    ) -> Result<Transfer, Error> {
        let contact = self.engine.resolve(query)?;
        transfer::send_path(&self.engine, &contact, path, Some(name)).await
    }

    /// All transfers, oldest first.
    pub fn transfers(&self) -> Result<Vec<Transfer>, Error> {
        self.engine.store.transfers()
    }

    /// One transfer by id or id prefix (at least 4 characters).
    pub fn transfer(&self, query: &str) -> Result<Transfer, Error> {
        transfer::resolve(&self.engine, query)
    }

    /// Accepts an offered file or folder (checks free space first) and starts fetching it.
    pub async fn accept_transfer(&self, query: &str) -> Result<Transfer, Error> {
        let t = transfer::resolve(&self.engine, query)?;
        transfer::accept(&self.engine, &t.id).await
    }

    /// Declines an offer.
    pub async fn decline_transfer(&self, query: &str) -> Result<Transfer, Error> {
        let t = transfer::resolve(&self.engine, query)?;
        transfer::decline(&self.engine, &t.id).await
    }

    /// Cancels a transfer (either side).
    pub async fn cancel_transfer(&self, query: &str) -> Result<Transfer, Error> {
        let t = transfer::resolve(&self.engine, query)?;
        transfer::cancel(&self.engine, &t.id).await
    }

    /// Accept offers from a contact automatically up to `max_bytes`, or never (`None`).
    pub async fn set_auto_accept(&self, query: &str, max_bytes: Option<u64>) -> Result<(), Error> {
        let c = self.engine.resolve(query)?;
        transfer::set_auto_accept(&self.engine, &c.id, max_bytes).await
    }

    /// The automatic-accept cap for a contact.
    pub fn auto_accept(&self, query: &str) -> Result<Option<u64>, Error> {
        let c = self.engine.resolve(query)?;
        transfer::auto_accept_limit(&self.engine, &c.id)
    }

    /// Where received files are saved.
    pub fn downloads_dir(&self) -> Result<PathBuf, Error> {
        transfer::downloads_dir(&self.engine)
    }

    /// Sets where received files are saved (a stored setting shared with the desktop app).
    pub async fn set_downloads_dir(&self, dir: &Path) -> Result<(), Error> {
        transfer::set_downloads_dir(&self.engine, dir).await
    }

    /// The network settings stored in this home (what the next start uses).
    pub fn stored_net_settings(&self) -> Result<NetSettings, Error> {
        Ok(self
            .engine
            .store
            .setting(SETTING_NET)?
            .unwrap_or_else(|| self.engine.net.clone()))
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
        self.engine.store.set_setting(SETTING_NET, &net)?;
        self.engine.store.flush().await?;
        let running = &self.engine.net;
        Ok(running.relay != net.relay || running.local_discovery != net.local_discovery)
    }

    /// Disk space this home uses.
    pub fn storage(&self) -> StorageUsage {
        let home = self.engine.home.clone();
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
        transfer::clean(&self.engine).await
    }

    /// A transfer by exact id.
    pub fn transfer_by_id(&self, id: &TransferId) -> Result<Option<Transfer>, Error> {
        self.engine.store.transfer(id)
    }

    /// Number of payloads waiting in the outbox (for one contact, or all).
    pub fn outbox_len(&self, contact: Option<&ContactId>) -> Result<usize, Error> {
        Ok(self
            .engine
            .store
            .outbox()?
            .iter()
            .filter(|(_, i)| contact.is_none_or(|c| *c == i.contact))
            .count())
    }

    /// Waits until the outbox holds nothing for `contact` (or anyone), up to `timeout`.
    /// Returns whether it drained.
    pub async fn wait_outbox_drained(
        &self,
        contact: Option<&ContactId>,
        timeout: Duration,
    ) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let drained = self.engine.outbox_drained.notified();
            if self.outbox_len(contact)? == 0 {
                return Ok(true);
            }
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                return Ok(self.outbox_len(contact)? == 0);
            }
        }
    }

    /// Dials every contact now and waits (up to `timeout`) so presence is current.
    pub async fn refresh_presence(&self, timeout: Duration) {
        net::refresh_all(&self.engine, timeout).await;
    }

    /// A message by id (for tests and front ends following events).
    pub fn message(&self, id: &MessageId) -> Result<Option<Message>, Error> {
        self.engine.store.message(id)
    }

    /// The stream of events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.engine.events.subscribe()
    }

    /// Stops background work, closes connections gracefully and flushes the store.
    pub async fn shutdown(&self) {
        self.engine.cancel.cancel();
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
        if let Err(e) = self.engine.blobs.store.shutdown().await {
            tracing::debug!("blob store shutdown: {e}");
        }
        if let Err(e) = self.engine.store.flush().await {
            tracing::warn!("final flush: {e}");
        }
        control::Server::remove_socket(&self.engine.home);
    }
}

/// What an address looks like for the outside: used in invites and announcements.
pub(crate) fn wire_addr(addr: &iroh::EndpointAddr) -> WireAddr {
    WireAddr {
        relay: addr.relay_urls().next().map(|u| u.to_string()),
        direct: addr.ip_addrs().copied().collect(),
    }
}
