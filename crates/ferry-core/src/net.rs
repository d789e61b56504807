//! The network side of the node: the iroh endpoint, live links to contacts, presence.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use iroh::endpoint::{presets, BindOpts, Connection, PortmapperConfig};
use iroh::{Endpoint, EndpointAddr, RelayMode, RelayUrl, TransportAddr, Watcher};

use crate::chat;
use crate::identity::Identity;
use crate::model::{Contact, ContactId, Event, PathKind, Presence};
use crate::node::{wire_addr, Engine, NetSettings, RelayChoice, SETTING_PORT};
use crate::store::Store;
use crate::wire::{ChatRequest, ChatResponse, WireAddr, ALPN_CHAT, ALPN_PAIR};
use crate::Error;

/// How long a dial may take before the contact counts as unreachable.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request on a stream may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Our current address, waiting up to `wait` for at least one way in.
pub(crate) async fn current_addr(engine: &Engine, wait: Duration) -> WireAddr {
    let mut watcher = engine.endpoint.watch_addr();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let addr = watcher.get();
        let usable = addr.ip_addrs().next().is_some()
            && (addr.relay_urls().next().is_some()
                || !matches!(
                    engine.net.relay,
                    RelayChoice::Default | RelayChoice::Custom(_)
                ));
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

/// The live link to a contact, dialling if there is none.
pub(crate) async fn link(engine: &Arc<Engine>, contact: &Contact) -> Result<Connection, Error> {
    if let Some(conn) = live_link(engine, &contact.id) {
        return Ok(conn);
    }
    let addr = endpoint_addr(contact.id, &contact.addr);
    let conn = tokio::time::timeout(DIAL_TIMEOUT, engine.endpoint.connect(addr, ALPN_CHAT))
        .await
        .map_err(|_| Error::Network(format!("{} did not answer", contact.name)))?
        .map_err(|e| Error::Network(format!("dialling {}: {e}", contact.name)))?;
    register_link(engine, contact.id, conn.clone());
    // Tell them where we are now, so they can reach us later even if our port changed.
    let me = current_addr(engine, Duration::ZERO).await;
    if let Err(e) = chat::request(&conn, &ChatRequest::Announce(me)).await {
        tracing::debug!(contact = %contact.id.fmt_short(), "announce failed: {e}");
    }
    Ok(conn)
}

fn live_link(engine: &Engine, id: &ContactId) -> Option<Connection> {
    let links = engine.links.lock().ok()?;
    links
        .get(id)
        .filter(|c| c.close_reason().is_none())
        .cloned()
}

/// Records a new live connection (dialled or accepted), serves requests on it, and tracks it
/// until it closes.
pub(crate) fn register_link(engine: &Arc<Engine>, id: ContactId, conn: Connection) {
    if let Ok(mut links) = engine.links.lock() {
        links.insert(id, conn.clone());
    }
    chat::clear_backoff(engine, &id);
    engine.outbox_wake.notify_one();
    update_presence(engine, &id);
    let resume = engine.clone();
    tokio::spawn(async move { crate::transfer::resume(&resume, Some(&id)).await });
    let engine = engine.clone();
    tokio::spawn(async move {
        chat::serve_link(&engine, id, &conn).await;
        let same = {
            let Ok(mut links) = engine.links.lock() else {
                return;
            };
            let same = links
                .get(&id)
                .is_some_and(|c| c.stable_id() == conn.stable_id());
            if same {
                links.remove(&id);
            }
            same
        };
        if same {
            update_presence(&engine, &id);
        }
    });
}

impl Engine {
    /// Presence from the live link, if any.
    pub(crate) fn presence_of(&self, id: &ContactId) -> Presence {
        let Some(conn) = live_link(self, id) else {
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
}

/// Emits a presence event if the contact's reachability (or path) changed.
pub(crate) fn update_presence(engine: &Engine, id: &ContactId) {
    let now = engine.presence_of(id);
    let changed = {
        let Ok(mut last) = engine.presence.lock() else {
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
        let name = engine
            .store
            .contact(id)
            .ok()
            .flatten()
            .map(|c| c.name)
            .unwrap_or_default();
        engine.emit(Event::PresenceChanged {
            contact: *id,
            name,
            presence: now,
        });
    }
}

/// Pings a contact's live link, or dials it. Returns whether it is reachable.
async fn check(engine: &Arc<Engine>, contact: &Contact) -> bool {
    let ok = match live_link(engine, &contact.id) {
        Some(conn) => match chat::request(&conn, &ChatRequest::Ping).await {
            Ok(ChatResponse::Pong) => true,
            other => {
                tracing::debug!(contact = %contact.id.fmt_short(), "ping failed: {other:?}");
                conn.close(0u32.into(), b"ping failed");
                false
            }
        },
        None => link(engine, contact).await.is_ok(),
    };
    update_presence(engine, &contact.id);
    ok
}

/// Checks every contact concurrently, bounded by `timeout`.
pub(crate) async fn refresh_all(engine: &Arc<Engine>, timeout: Duration) {
    let Ok(contacts) = engine.store.contacts() else {
        return;
    };
    let mut set = tokio::task::JoinSet::new();
    for c in contacts {
        let engine = engine.clone();
        set.spawn(async move { check(&engine, &c).await });
    }
    let _ = tokio::time::timeout(timeout, async { while set.join_next().await.is_some() {} }).await;
}

/// Dials a contact in the background (after pairing, so presence shows at once).
pub(crate) fn dial_soon(engine: &Arc<Engine>, id: ContactId) {
    let engine = engine.clone();
    tokio::spawn(async move {
        if let Ok(Some(c)) = engine.store.contact(&id) {
            check(&engine, &c).await;
        }
    });
}

/// Announces this node to every contact at start, then pings links and re-dials absent contacts.
pub(crate) async fn run_presence(engine: Arc<Engine>) {
    let mut tick = tokio::time::interval(engine.ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = engine.cancel.cancelled() => return,
            _ = async {
                tick.tick().await;
                refresh_all(&engine, DIAL_TIMEOUT + REQUEST_TIMEOUT).await;
                crate::transfer::retry_paused(&engine);
            } => {}
        }
    }
}
