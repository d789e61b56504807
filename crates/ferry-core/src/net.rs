//! Links and presence, a service: the iroh endpoint, one live link per contact, presence, and
//! the transport of `ferry/chat/1` (requests on bidirectional streams of a link; a delivery goes
//! to the [`Inbox`]).
//!
//! It knows no feature. When a link comes up it says so on the [`Bus`], and every presence
//! round ends with a tick there; the outbox and transfers subscribe.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::endpoint::{presets, BindOpts, ConnectOptions, Connection, PortmapperConfig};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{Endpoint, EndpointAddr, RelayMode, RelayUrl, TransportAddr, Watcher};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Events, Signal};
use crate::identity::Identity;
use crate::inbox::{Inbox, Outcome};
use crate::model::{Contact, ContactId, Event, MessageId, PathKind, Presence};
use crate::store::Store;
use crate::wire::{
    self, ChatRequest, ChatResponse, DeliveryAnswer, WireAddr, ALPN_CHAT, ALPN_PAIR, MAX_BATCH,
};
use crate::Error;

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

/// The setting that keeps this home's UDP port stable across runs.
pub(crate) const SETTING_PORT: &str = "port";

/// How long a dial may take before the contact counts as unreachable.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request on a stream may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most direct addresses kept from a contact's announce.
pub(crate) const MAX_ANNOUNCED_ADDRS: usize = 16;
/// The longest relay URL kept from a contact's announce.
pub(crate) const MAX_RELAY_URL: usize = 512;

/// Binds the endpoint according to the settings; keeps this home's UDP port stable.
pub(crate) async fn bind_endpoint(
    identity: &Identity,
    store: &Store,
    net: &NetSettings,
    direct: bool,
) -> Result<Endpoint, Error> {
    let stable_port: u16 = store.setting(SETTING_PORT)?.unwrap_or(0);
    let mut bind = net
        .bind
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let explicit_port = bind.port() != 0;
    if !explicit_port {
        bind.set_port(stable_port);
    }
    match try_bind(identity, net, direct, bind).await {
        Ok(ep) => finish_bind(ep, store, explicit_port, stable_port),
        Err(e) if !explicit_port && stable_port != 0 => {
            tracing::warn!(
                port = stable_port,
                "stable port unavailable ({e}); using a new one"
            );
            bind.set_port(0);
            let ep = try_bind(identity, net, direct, bind).await?;
            finish_bind(ep, store, false, 0)
        }
        Err(e) => Err(e),
    }
}

fn finish_bind(
    ep: Endpoint,
    store: &Store,
    explicit_port: bool,
    stable_port: u16,
) -> Result<Endpoint, Error> {
    if !explicit_port {
        if let Some(port) = ep.bound_sockets().first().map(|a| a.port()) {
            if port != stable_port {
                store.set_setting(SETTING_PORT, &port)?;
            }
        }
    }
    Ok(ep)
}

async fn try_bind(
    identity: &Identity,
    net: &NetSettings,
    direct: bool,
    bind: SocketAddr,
) -> Result<Endpoint, Error> {
    let err = |e: &dyn std::fmt::Display| Error::Network(format!("binding {bind}: {e}"));
    let mut b = match &net.relay {
        RelayChoice::Default => Endpoint::builder(presets::N0),
        RelayChoice::Custom(url) => {
            let url: RelayUrl = url
                .parse()
                .map_err(|e| Error::InvalidInput(format!("relay URL {url:?}: {e}")))?;
            Endpoint::builder(presets::Minimal).relay_mode(RelayMode::custom([url]))
        }
        RelayChoice::Disabled => Endpoint::builder(presets::Minimal)
            .relay_mode(RelayMode::Disabled)
            .portmapper_config(PortmapperConfig::Disabled),
    };
    b = b
        .secret_key(identity.secret_key().clone())
        .alpns(vec![
            ALPN_CHAT.to_vec(),
            ALPN_PAIR.to_vec(),
            iroh_blobs::ALPN.to_vec(),
        ])
        .clear_ip_transports();
    if direct {
        b = b.bind_addr(bind).map_err(|e| err(&e))?;
        if bind.ip().is_unspecified() && bind.is_ipv4() {
            let v6 = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, bind.port(), 0, 0);
            b = b
                .bind_addr_with_opts(v6, BindOpts::default().set_is_required(false))
                .map_err(|e| err(&e))?;
        }
        if net.local_discovery {
            b = b.address_lookup(iroh_mdns_address_lookup::MdnsAddressLookup::builder());
        }
    }
    b.bind().await.map_err(|e| err(&e))
}

/// What an address looks like for the outside: used in invites and announcements.
pub(crate) fn wire_addr(addr: &EndpointAddr) -> WireAddr {
    WireAddr {
        relay: addr.relay_urls().next().map(|u| u.to_string()),
        direct: addr.ip_addrs().copied().collect(),
    }
}

/// How to dial a stored contact.
pub(crate) fn endpoint_addr(id: ContactId, addr: &WireAddr) -> EndpointAddr {
    let relay = addr
        .relay
        .as_deref()
        .and_then(|u| u.parse::<RelayUrl>().ok())
        .map(TransportAddr::Relay);
    EndpointAddr::from_parts(
        id,
        relay
            .into_iter()
            .chain(addr.direct.iter().copied().map(TransportAddr::Ip)),
    )
}

/// The links service: a cheap handle, cloned into every feature that needs the network.
#[derive(Debug, Clone)]
pub(crate) struct Links(Arc<LinksInner>);

#[derive(Debug)]
struct LinksInner {
    endpoint: Endpoint,
    store: Store,
    events: Events,
    bus: Bus,
    inbox: Arc<Inbox>,
    relay: RelayChoice,
    ping_interval: Duration,
    cancel: CancellationToken,
    /// The chat protocols this node speaks, newest first.
    chat_alpns: Vec<Vec<u8>>,
    /// Live chat connections, one per contact (the newest wins).
    live: Mutex<HashMap<ContactId, Connection>>,
    /// Last presence reported per contact (to emit changes only).
    presence: Mutex<HashMap<ContactId, Presence>>,
}

impl Links {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        endpoint: Endpoint,
        store: Store,
        events: Events,
        bus: Bus,
        inbox: Arc<Inbox>,
        relay: RelayChoice,
        ping_interval: Duration,
        cancel: CancellationToken,
        chat_alpns: Vec<Vec<u8>>,
    ) -> Links {
        Links(Arc::new(LinksInner {
            endpoint,
            store,
            events,
            bus,
            inbox,
            relay,
            ping_interval,
            cancel,
            chat_alpns,
            live: Mutex::default(),
            presence: Mutex::default(),
        }))
    }

    /// The iroh endpoint.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.0.endpoint
    }

    /// Our current address, waiting up to `wait` for at least one way in.
    pub(crate) async fn current_addr(&self, wait: Duration) -> WireAddr {
        let mut watcher = self.0.endpoint.watch_addr();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let addr = watcher.get();
            let usable = addr.ip_addrs().next().is_some()
                && (addr.relay_urls().next().is_some()
                    || !matches!(self.0.relay, RelayChoice::Default | RelayChoice::Custom(_)));
            if usable || tokio::time::Instant::now() >= deadline {
                return wire_addr(&addr);
            }
            if tokio::time::timeout_at(deadline, watcher.updated())
                .await
                .is_err()
            {
                return wire_addr(&watcher.get());
            }
        }
    }

    /// The live link to a contact, dialling if there is none. A blocked contact is never
    /// dialled.
    pub(crate) async fn link(&self, contact: &Contact) -> Result<Connection, Error> {
        if self.0.store.is_blocked(&contact.id)? {
            return Err(Error::Blocked(contact.name.clone()));
        }
        if let Some(conn) = self.live_link(&contact.id) {
            return Ok(conn);
        }
        let addr = endpoint_addr(contact.id, &contact.addr);
        let dial = async {
            // The newest protocol this node speaks first; the contact picks the newest it
            // speaks too (a release before batches has only `ferry/chat/1`).
            let (first, rest) = self
                .0
                .chat_alpns
                .split_first()
                .ok_or_else(|| Error::Network("no chat protocol to dial with".into()))?;
            let options = ConnectOptions::new().with_additional_alpns(rest.to_vec());
            self.0
                .endpoint
                .connect_with_opts(addr, first, options)
                .await
                .map_err(|e| Error::Network(format!("dialling {}: {e}", contact.name)))?
                .await
                .map_err(|e| Error::Network(format!("dialling {}: {e}", contact.name)))
        };
        let conn = tokio::time::timeout(DIAL_TIMEOUT, dial)
            .await
            .map_err(|_| Error::Network(format!("{} did not answer", contact.name)))??;
        self.register(contact.id, conn.clone());
        // Tell them where we are now, so they can reach us later even if our port changed.
        let me = self.current_addr(Duration::ZERO).await;
        if let Err(e) = request(&conn, &ChatRequest::Announce(me)).await {
            tracing::debug!(contact = %contact.id.fmt_short(), "announce failed: {e}");
        }
        Ok(conn)
    }

    /// Closes the live link to a contact, if any (it was blocked or removed); presence shows
    /// it offline at once.
    pub(crate) fn drop_link(&self, id: &ContactId, why: &'static [u8]) {
        let conn = self.0.live.lock().ok().and_then(|mut l| l.remove(id));
        if let Some(conn) = conn {
            conn.close(403u32.into(), why);
        }
        self.update_presence(id);
    }

    fn live_link(&self, id: &ContactId) -> Option<Connection> {
        let links = self.0.live.lock().ok()?;
        links
            .get(id)
            .filter(|c| c.close_reason().is_none())
            .cloned()
    }

    /// Records a new live connection (dialled or accepted), says so on the bus, serves requests
    /// on it, and tracks it until it closes.
    fn register(&self, id: ContactId, conn: Connection) {
        if let Ok(mut links) = self.0.live.lock() {
            links.insert(id, conn.clone());
        }
        self.update_presence(&id);
        self.0.bus.emit(Signal::LinkUp(id));
        let links = self.clone();
        tokio::spawn(async move {
            links.serve(id, &conn).await;
            let same = {
                let Ok(mut live) = links.0.live.lock() else {
                    return;
                };
                let same = live
                    .get(&id)
                    .is_some_and(|c| c.stable_id() == conn.stable_id());
                if same {
                    live.remove(&id);
                }
                same
            };
            if same {
                links.update_presence(&id);
                links.0.bus.emit(Signal::LinkDown(id));
            }
        });
    }

    /// Presence from the live link, if any.
    pub(crate) fn presence_of(&self, id: &ContactId) -> Presence {
        let Some(conn) = self.live_link(id) else {
            return Presence::Offline;
        };
        let paths = conn.paths();
        let selected = paths.iter().find(|p| p.is_selected());
        match selected {
            Some(p) => Presence::Online {
                path: if p.is_relay() {
                    PathKind::Relayed
                } else {
                    PathKind::Direct
                },
                rtt_ms: Some(p.rtt().as_millis() as u64),
            },
            None => Presence::Online {
                path: PathKind::Direct,
                rtt_ms: None,
            },
        }
    }

    /// Emits a presence event if the contact's reachability (or path) changed.
    pub(crate) fn update_presence(&self, id: &ContactId) {
        let now = self.presence_of(id);
        let changed = {
            let Ok(mut last) = self.0.presence.lock() else {
                return;
            };
            let before = last.insert(*id, now);
            let kind = |p: &Option<Presence>| match p {
                Some(Presence::Online { path, .. }) => Some(*path),
                _ => None,
            };
            kind(&before) != kind(&Some(now))
        };
        if changed {
            let name = self
                .0
                .store
                .contact(id)
                .ok()
                .flatten()
                .map(|c| c.name)
                .unwrap_or_default();
            self.0.events.emit(Event::PresenceChanged {
                contact: *id,
                name,
                presence: now,
            });
        }
    }

    /// Pings a contact's live link, or dials it. Returns whether it is reachable.
    async fn check(&self, contact: &Contact) -> bool {
        let ok = match self.live_link(&contact.id) {
            Some(conn) => match request(&conn, &ChatRequest::Ping).await {
                Ok(ChatResponse::Pong) => true,
                other => {
                    tracing::debug!(contact = %contact.id.fmt_short(), "ping failed: {other:?}");
                    conn.close(0u32.into(), b"ping failed");
                    false
                }
            },
            None => self.link(contact).await.is_ok(),
        };
        self.update_presence(&contact.id);
        ok
    }

    /// Checks every contact concurrently, bounded by `timeout`.
    pub(crate) async fn refresh_all(&self, timeout: Duration) {
        let Ok(contacts) = self.0.store.contacts() else {
            return;
        };
        let mut set = tokio::task::JoinSet::new();
        for c in contacts {
            if !matches!(self.0.store.is_blocked(&c.id), Ok(false)) {
                continue;
            }
            let links = self.clone();
            set.spawn(async move { links.check(&c).await });
        }
        let _ =
            tokio::time::timeout(timeout, async { while set.join_next().await.is_some() {} }).await;
    }

    /// Dials a contact in the background (after pairing, so presence shows at once).
    pub(crate) fn dial_soon(&self, id: ContactId) {
        let links = self.clone();
        tokio::spawn(async move {
            if let Ok(Some(c)) = links.0.store.admitted(&id) {
                links.check(&c).await;
            }
        });
    }

    /// Announces this node to every contact at start, then pings links and re-dials absent
    /// contacts; each round ends with [`Signal::Tick`].
    pub(crate) async fn run_presence(self) {
        let mut tick = tokio::time::interval(self.0.ping_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.0.cancel.cancelled() => return,
                _ = async {
                    tick.tick().await;
                    self.refresh_all(DIAL_TIMEOUT + REQUEST_TIMEOUT).await;
                    self.0.bus.emit(Signal::Tick);
                } => {}
            }
        }
    }

    /// Serves requests on a link until it closes.
    async fn serve(&self, from: ContactId, conn: &Connection) {
        loop {
            let (mut send, mut recv) = tokio::select! {
                _ = self.0.cancel.cancelled() => return,
                s = conn.accept_bi() => match s {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(peer = %from.fmt_short(), "link closed: {e}");
                        return;
                    }
                },
            };
            let links = self.clone();
            tokio::spawn(async move {
                let req = match tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    wire::read_frame::<_, ChatRequest>(&mut recv),
                )
                .await
                {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        tracing::warn!(peer = %from.fmt_short(), "dropped a bad request: {e}");
                        return;
                    }
                    Err(_) => return,
                };
                let resp = links.handle(from, req).await;
                if let Err(e) = wire::write_frame(&mut send, &resp).await {
                    tracing::debug!("answer not sent: {e}");
                }
                let _ = send.finish();
            });
        }
    }

    async fn handle(&self, from: ContactId, req: ChatRequest) -> ChatResponse {
        match req {
            ChatRequest::Ping => ChatResponse::Pong,
            ChatRequest::Announce(addr) => {
                // It writes to the store, so it is charged like a delivery, and what is kept
                // of it is bounded.
                let size =
                    postcard::to_allocvec(&addr).map_or(crate::limits::MAX_FRAME, |v| v.len());
                if let Err(wait) = self.0.inbox.allowed(&from, size) {
                    return ChatResponse::RetryAfter { ms: wait_ms(wait) };
                }
                let mut addr = addr;
                addr.direct.truncate(MAX_ANNOUNCED_ADDRS);
                if addr.relay.as_ref().is_some_and(|r| r.len() > MAX_RELAY_URL) {
                    addr.relay = None;
                }
                if !addr.direct.is_empty() || addr.relay.is_some() {
                    if let Err(e) = self
                        .0
                        .store
                        .update_contact(&from, |c| c.addr = addr.clone())
                    {
                        tracing::warn!("storing addresses: {e}");
                    }
                }
                ChatResponse::Ack
            }
            ChatRequest::Deliver {
                message_id,
                envelope,
            } => match self
                .0
                .inbox
                .deliver(from, MessageId(message_id), &envelope)
                .await
            {
                Outcome::Taken => ChatResponse::Ack,
                Outcome::Slow(wait) => {
                    tracing::debug!(peer = %from.fmt_short(), ?wait, "over its allowance");
                    ChatResponse::RetryAfter { ms: wait_ms(wait) }
                }
                Outcome::Refused(e) => {
                    let (reason, retry) = refusal(&from, &e);
                    ChatResponse::Reject { reason, retry }
                }
            },
            ChatRequest::DeliverBatch(batch) if batch.len() > MAX_BATCH => {
                tracing::warn!(peer = %from.fmt_short(), n = batch.len(), "dropped an oversized batch");
                reject(
                    format!("a batch holds at most {MAX_BATCH} deliveries"),
                    false,
                )
            }
            ChatRequest::DeliverBatch(batch) => {
                let outcome = self.0.inbox.deliver_batch(from, &batch).await;
                if let Some(wait) = outcome.retry_after {
                    tracing::debug!(peer = %from.fmt_short(), ?wait, "over its allowance");
                }
                let answers = outcome
                    .results
                    .iter()
                    .map(|r| match r {
                        Ok(()) => DeliveryAnswer::Ack,
                        Err(e) => {
                            let (reason, retry) = refusal(&from, e);
                            DeliveryAnswer::Reject { reason, retry }
                        }
                    })
                    .collect();
                ChatResponse::Batch {
                    answers,
                    retry_after_ms: outcome.retry_after.map(wait_ms),
                }
            }
        }
    }
}

/// How a delivery the inbox did not take is answered (and logged): a failure of our own store
/// or disk, or a session out of step that a reset will repair, lets the sender try again;
/// anything else is refused for good.
fn refusal(from: &ContactId, e: &Error) -> (String, bool) {
    let retry = e.is_transient();
    if matches!(e, Error::OutOfStep { .. }) {
        tracing::info!(peer = %from.fmt_short(), "not taken: {e}");
    } else if retry {
        tracing::warn!(peer = %from.fmt_short(), "could not take a delivery now: {e}");
    } else {
        tracing::warn!(peer = %from.fmt_short(), "dropped a delivery: {e}");
    }
    (e.to_string(), retry)
}

/// A wait as the wire says it: whole milliseconds, at least one.
fn wait_ms(wait: Duration) -> u32 {
    u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1)
}

fn reject(reason: impl Into<String>, retry: bool) -> ChatResponse {
    ChatResponse::Reject {
        reason: reason.into(),
        retry,
    }
}

/// Sends one request on a new stream and waits for the answer.
pub(crate) async fn request(conn: &Connection, req: &ChatRequest) -> Result<ChatResponse, Error> {
    let run = async {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| Error::Network(e.to_string()))?;
        wire::write_frame(&mut send, req)
            .await
            .map_err(|e| Error::Network(e.to_string()))?;
        send.finish().map_err(|e| Error::Network(e.to_string()))?;
        wire::read_frame::<_, ChatResponse>(&mut recv)
            .await
            .map_err(|e| Error::Protocol(e.to_string()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, run)
        .await
        .map_err(|_| Error::Network("no answer in time".into()))?
}

/// The `ferry/chat/1` handler: refuses strangers and blocked contacts, then serves the link.
#[derive(Debug, Clone)]
pub(crate) struct ChatProtocol(pub(crate) Links);

impl ProtocolHandler for ChatProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let remote = conn.remote_id();
        match self.0 .0.store.admitted(&remote) {
            Ok(Some(_)) => {}
            Ok(None) => {
                // A blocked contact is refused exactly like a stranger.
                tracing::info!(peer = %remote.fmt_short(), "refused chat from a stranger or a blocked contact");
                conn.close(403u32.into(), b"not a contact");
                return Ok(());
            }
            Err(e) => {
                tracing::error!("store: {e}");
                conn.close(500u32.into(), b"internal error");
                return Ok(());
            }
        }
        self.0.register(remote, conn.clone());
        // Keep the handler alive as long as the link, so the router shuts it down gracefully.
        conn.closed().await;
        Ok(())
    }
}
