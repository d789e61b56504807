//! Files and folders over iroh-blobs: offers carried as end-to-end encrypted chat messages,
//! BLAKE3-verified resumable fetches, per-contact access control on the blobs protocol, and
//! safe export into the download folder.
//!
//! Sending imports the file by reference (no copy) and tags it `ferry/out/<id>`; the offer goes
//! through the outbox. Receiving pulls: the receiver fetches what its blob store lacks (so an
//! interrupted fetch resumes where it stopped, also after a crash), then moves the verified data
//! onto a name it reserved exclusively in the download folder (a copy only across file
//! systems), and drops its tag so the store's GC forgets the entry.
//!
//! Access control: the provider serves a hash only to the contact it was offered to, for get,
//! get-many and observe; push is disabled. Connection ids from connect events map requests
//! to endpoint ids.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use iroh_blobs::api::blobs::{AddPathOptions, ExportMode, ExportOptions, ImportMode};
use iroh_blobs::api::remote::GetProgressItem;
use iroh_blobs::format::collection::Collection;
use iroh_blobs::provider::events::{
    AbortReason, ConnectMode, EventMask, EventSender, ObserveMode, ProviderMessage, RequestMode,
    RequestUpdate, ThrottleMode,
};
use iroh_blobs::store::fs::FsStore;
use iroh_blobs::store::GcConfig;
use iroh_blobs::{BlobFormat, Hash, HashAndFormat};

use crate::chat::{outgoing_message, seal_and_queue};
use crate::inbox::{BoxFuture, Handled, Incoming, PayloadHandler, PayloadKind};
use crate::model::{
    now_ms, Contact, ContactId, Direction, Event, Message, MessageId, MessageState, Transfer,
    TransferId, TransferState,
};
use crate::net::{endpoint_addr, DIAL_TIMEOUT};
use crate::node::Engine;
use crate::store::{Changes, OutboxKind};
use crate::wire::Payload;
use crate::Error;
use crate::{files, naming};

/// The blob store's folder inside a home.
pub const BLOBS_DIR: &str = "blobs";
/// How often the blob store collects blobs no tag protects.
pub const GC_INTERVAL: Duration = Duration::from_secs(30);
/// The most files one folder offer may hold.
pub const MAX_FOLDER_FILES: usize = 100_000;
/// Progress events at most this often per transfer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

const SETTING_DOWNLOADS: &str = "downloads";
const AUTO_ACCEPT_PREFIX: &str = "auto_accept/";

/// Which hashes each contact may fetch, and who is behind each provider connection.
#[derive(Debug, Default)]
pub(crate) struct Access {
    conns: Mutex<HashMap<u64, ContactId>>,
    /// contact → hash → whether the hash is a folder's root (children may be requested with it).
    allowed: Mutex<HashMap<ContactId, HashMap<Hash, bool>>>,
}

impl Access {
    fn allow(&self, contact: ContactId, hashes: impl IntoIterator<Item = (Hash, bool)>) {
        if let Ok(mut a) = self.allowed.lock() {
            a.entry(contact).or_default().extend(hashes);
        }
    }

    fn revoke(&self, contact: &ContactId, hashes: &[Hash]) {
        if let Ok(mut a) = self.allowed.lock() {
            if let Some(set) = a.get_mut(contact) {
                for h in hashes {
                    set.remove(h);
                }
            }
        }
    }

    fn peer(&self, connection_id: u64) -> Option<ContactId> {
        self.conns.lock().ok()?.get(&connection_id).copied()
    }

    /// Whether `peer` may get `hash` with these ranges (`children` = asks for more than the root blob).
    fn may_get(&self, peer: &ContactId, hash: &Hash, children: bool) -> bool {
        let Ok(a) = self.allowed.lock() else {
            return false;
        };
        match a.get(peer).and_then(|s| s.get(hash)) {
            Some(is_folder_root) => !children || *is_folder_root,
            None => false,
        }
    }
}

/// The blob side of a node.
pub(crate) struct Blobs {
    pub(crate) store: FsStore,
    pub(crate) access: Arc<Access>,
    running: Mutex<HashMap<TransferId, tokio::task::AbortHandle>>,
    /// Downloads past fetching, writing into the download folder: never aborted.
    saving: Mutex<HashSet<TransferId>>,
    last_progress: Mutex<HashMap<TransferId, (Instant, u64)>>,
    pub(crate) accept_all: bool,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs").finish_non_exhaustive()
    }
}

impl Blobs {
    /// Opens the blob store of a home, with garbage collection of untagged blobs.
    pub(crate) async fn open(home: &Path, accept_all: bool) -> Result<Blobs, Error> {
        let dir = home.join(BLOBS_DIR);
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let mut options = iroh_blobs::store::fs::options::Options::new(&dir);
        options.gc = Some(GcConfig {
            interval: GC_INTERVAL,
            add_protected: None,
        });
        let store = FsStore::load_with_opts(dir.join("blobs.db"), options)
            .await
            .map_err(|e| Error::Corrupt(format!("blob store: {e}")))?;
        Ok(Blobs {
            store,
            access: Arc::default(),
            running: Mutex::default(),
            saving: Mutex::default(),
            last_progress: Mutex::default(),
            accept_all,
        })
    }

    /// The event sender for the blobs protocol: intercepts connects and every request kind.
    pub(crate) fn events(engine: Weak<Engine>) -> EventSender {
        let mask = EventMask {
            connected: ConnectMode::Intercept,
            get: RequestMode::InterceptLog,
            get_many: RequestMode::Intercept,
            push: RequestMode::Disabled,
            observe: ObserveMode::Intercept,
            throttle: if throttle_bps().is_some() {
                ThrottleMode::Intercept
            } else {
                ThrottleMode::None
            },
        };
        let (tx, rx) = EventSender::channel(64, mask);
        tokio::spawn(provider_events(engine, rx));
        tx
    }
}

/// A debug-build-only fault injection: limits what the provider sends, so tests can interrupt
/// a transfer midway. Read from `FERRY_DEBUG_THROTTLE_BPS`; always off in release builds.
fn throttle_bps() -> Option<u64> {
    #[cfg(debug_assertions)]
    {
        std::env::var("FERRY_DEBUG_THROTTLE_BPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0)
    }
    #[cfg(not(debug_assertions))]
    None
}

async fn provider_events(
    engine: Weak<Engine>,
    mut rx: tokio::sync::mpsc::Receiver<ProviderMessage>,
) {
    let deny = Err(AbortReason::Permission);
    while let Some(msg) = rx.recv().await {
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let access = engine.blobs.access.clone();
        match msg {
            ProviderMessage::ClientConnected(msg) => {
                let contact = msg
                    .endpoint_id
                    .filter(|id| matches!(engine.store.contact(id), Ok(Some(_))));
                let res = match contact {
                    Some(id) => {
                        if let Ok(mut c) = access.conns.lock() {
                            c.insert(msg.connection_id, id);
                        }
                        Ok(())
                    }
                    None => {
                        tracing::info!(peer = ?msg.endpoint_id, "refused blobs connection from a stranger");
                        deny
                    }
                };
                msg.tx.send(res).await.ok();
            }
            ProviderMessage::ConnectionClosed(msg) => {
                if let Ok(mut c) = access.conns.lock() {
                    c.remove(&msg.connection_id);
                }
            }
            ProviderMessage::GetRequestReceived(mut msg) => {
                let peer = access.peer(msg.connection_id);
                let ok = peer.is_some_and(|p| {
                    access.may_get(&p, &msg.request.hash, !msg.request.ranges.is_blob())
                });
                if !ok {
                    tracing::warn!(?peer, hash = %msg.request.hash, "refused a get");
                    msg.tx.send(deny).await.ok();
                    continue;
                }
                let root = msg.request.hash;
                msg.tx.send(Ok(())).await.ok();
                let Some(peer) = peer else {
                    continue;
                };
                // Follow the request to show the sender's progress.
                let engine = Arc::downgrade(&engine);
                tokio::spawn(async move {
                    let mut done_before = 0u64;
                    let mut current = 0u64;
                    while let Ok(Some(update)) = msg.rx.recv().await {
                        let Some(engine) = engine.upgrade() else {
                            return;
                        };
                        match update {
                            RequestUpdate::Started(_) => {
                                done_before += current;
                                current = 0;
                            }
                            RequestUpdate::Progress(p) => {
                                current = p.end_offset;
                                outgoing_progress(&engine, &peer, &root, done_before + current);
                            }
                            RequestUpdate::Completed(_) | RequestUpdate::Aborted(_) => break,
                        }
                    }
                });
            }
            ProviderMessage::GetManyRequestReceived(msg) => {
                let peer = access.peer(msg.connection_id);
                let ok = peer.is_some_and(|p| {
                    msg.request
                        .hashes
                        .iter()
                        .all(|h| access.may_get(&p, h, false))
                });
                msg.tx.send(if ok { Ok(()) } else { deny }).await.ok();
            }
            ProviderMessage::ObserveRequestReceived(msg) => {
                let peer = access.peer(msg.connection_id);
                let ok = peer.is_some_and(|p| access.may_get(&p, &msg.request.hash, false));
                msg.tx.send(if ok { Ok(()) } else { deny }).await.ok();
            }
            ProviderMessage::PushRequestReceived(msg) => {
                msg.tx.send(deny).await.ok();
            }
            ProviderMessage::Throttle(msg) => {
                let delay = throttle_bps()
                    .map(|bps| Duration::from_secs_f64(msg.size as f64 / bps as f64))
                    .unwrap_or_default();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    msg.tx.send(Ok(())).await.ok();
                });
            }
            _ => {}
        }
    }
}

fn outgoing_progress(engine: &Arc<Engine>, peer: &ContactId, root: &Hash, bytes: u64) {
    let hex = root.to_hex().to_string();
    let Ok(all) = engine.store.transfers() else {
        return;
    };
    let Some(t) = all.into_iter().rev().find(|t| {
        t.direction == Direction::Outgoing
            && t.contact == *peer
            && t.hash == hex
            && !t.state.is_final()
    }) else {
        return;
    };
    emit_progress(engine, &t, bytes.min(t.size));
}

fn emit_progress(engine: &Engine, t: &Transfer, bytes: u64) {
    let now = Instant::now();
    let rate = {
        let Ok(mut last) = engine.blobs.last_progress.lock() else {
            return;
        };
        let entry = last.entry(t.id).or_insert((now, bytes));
        let elapsed = now.duration_since(entry.0);
        if elapsed < PROGRESS_EVERY && bytes < t.size {
            return;
        }
        let rate = if elapsed.is_zero() {
            0
        } else {
            (bytes.saturating_sub(entry.1) as f64 / elapsed.as_secs_f64()) as u64
        };
        *entry = (now, bytes);
        rate
    };
    engine.emit(Event::TransferProgress {
        id: t.id,
        bytes_done: bytes,
        total: t.size,
        rate,
    });
}

/// A transfer just offered, in either direction; the caller fills in size, hash, files, path.
fn offered(
    id: TransferId,
    contact: ContactId,
    direction: Direction,
    name: String,
    folder: bool,
    kind: naming::FileKind,
) -> Transfer {
    let now = now_ms();
    Transfer {
        id,
        contact,
        direction,
        name,
        size: 0,
        hash: String::new(),
        folder,
        files: 0,
        media_type: if folder {
            "inode/directory".into()
        } else {
            kind.media_type
        },
        dangerous: kind.dangerous,
        state: TransferState::Offered,
        bytes_done: 0,
        resumed_from: 0,
        path: None,
        error: None,
        created_at: now,
        updated_at: now,
    }
}

fn hash_of(t: &Transfer) -> Result<Hash, Error> {
    t.hash
        .parse()
        .map_err(|_| Error::Corrupt(format!("transfer {} has a bad hash", t.id)))
}

fn content(t: &Transfer) -> Result<HashAndFormat, Error> {
    let hash = hash_of(t)?;
    Ok(if t.folder {
        HashAndFormat::hash_seq(hash)
    } else {
        HashAndFormat::raw(hash)
    })
}

fn tag_name(t: &Transfer) -> String {
    let side = match t.direction {
        Direction::Outgoing => "out",
        Direction::Incoming => "in",
    };
    format!("ferry/{side}/{}", t.id)
}

fn blob_err(e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("blob store: {e}"))
}

/// The hashes a contact may fetch for an outgoing transfer: the root, and a folder's children.
async fn offered_hashes(engine: &Engine, t: &Transfer) -> Result<Vec<(Hash, bool)>, Error> {
    let root = hash_of(t)?;
    if !t.folder {
        return Ok(vec![(root, false)]);
    }
    let collection = Collection::load(root, &*engine.blobs.store)
        .await
        .map_err(blob_err)?;
    let mut v = vec![(root, true)];
    v.extend(collection.iter().map(|(_, h)| (*h, false)));
    Ok(v)
}

// ---- sending ----

/// Imports a file or folder and offers it to a contact. Returns once the offer is stored.
pub(crate) async fn send_path(
    engine: &Arc<Engine>,
    contact: &Contact,
    path: &Path,
    name_override: Option<&str>,
) -> Result<Transfer, Error> {
    let path = std::path::absolute(path).map_err(Error::io(format!("{}", path.display())))?;
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(Error::io(format!("reading {}", path.display())))?;
    let name = name_override
        .map(str::to_string)
        .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| Error::InvalidInput(format!("{} has no file name", path.display())))?;
    let store = &engine.blobs.store;
    let (tag, size, files) = if meta.is_dir() {
        let entries = walk(&path)?;
        if entries.is_empty() {
            return Err(Error::InvalidInput(format!(
                "the folder {} has no files",
                path.display()
            )));
        }
        let mut collection = Collection::default();
        let mut tags = Vec::new();
        let mut size = 0u64;
        for (rel, abs, len) in &entries {
            let tt = store
                .blobs()
                .add_path_with_opts(AddPathOptions {
                    path: abs.clone(),
                    format: BlobFormat::Raw,
                    mode: ImportMode::TryReference,
                })
                .temp_tag()
                .await
                .map_err(|e| Error::InvalidInput(format!("importing {}: {e}", abs.display())))?;
            collection.push(rel.clone(), tt.hash());
            tags.push(tt);
            size += len;
        }
        let tt = collection.store(store).await.map_err(blob_err)?;
        drop(tags);
        (tt, size, entries.len() as u32)
    } else if meta.is_file() {
        let tt = store
            .blobs()
            .add_path_with_opts(AddPathOptions {
                path: path.clone(),
                format: BlobFormat::Raw,
                mode: ImportMode::TryReference,
            })
            .temp_tag()
            .await
            .map_err(|e| Error::InvalidInput(format!("importing {}: {e}", path.display())))?;
        (tt, meta.len(), 1)
    } else {
        return Err(Error::InvalidInput(format!(
            "{} is neither a file nor a folder",
            path.display()
        )));
    };
    let t = Transfer {
        size,
        hash: tag.hash().to_hex().to_string(),
        files,
        path: Some(path.clone()),
        ..offered(
            TransferId::random(),
            contact.id,
            Direction::Outgoing,
            name.clone(),
            meta.is_dir(),
            naming::classify_remote(&name),
        )
    };
    store
        .tags()
        .set(tag_name(&t), tag.hash_and_format())
        .await
        .map_err(blob_err)?;
    drop(tag);
    engine
        .blobs
        .access
        .allow(contact.id, offered_hashes(engine, &t).await?);
    let message = outgoing_message(engine, &contact.id, name.clone(), Some(t.id))?;
    let payload = Payload::FileOffer {
        transfer: t.id.0,
        hash: *hash_of(&t)?.as_bytes(),
        folder: t.folder,
        name,
        size,
        files,
    };
    seal_and_queue(
        engine,
        &contact.id,
        message.id,
        &payload,
        OutboxKind::Message,
        Some(&message),
        Some(&t),
    )
    .await?;
    engine.emit(Event::TransferChanged {
        transfer: t.clone(),
    });
    Ok(t)
}

/// Regular files under `root` (symlinks and special files skipped), as
/// (relative path with `/`, absolute path, size), sorted by relative path.
fn walk(root: &Path) -> Result<Vec<(String, PathBuf, u64)>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd =
            std::fs::read_dir(&dir).map_err(Error::io(format!("reading {}", dir.display())))?;
        for entry in rd {
            let entry = entry.map_err(Error::io(format!("reading {}", dir.display())))?;
            let ft = entry
                .file_type()
                .map_err(Error::io(format!("reading {}", entry.path().display())))?;
            let path = entry.path();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .map_err(|_| Error::InvalidInput("path outside the folder".into()))?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let len = entry
                    .metadata()
                    .map_err(Error::io(format!("reading {}", path.display())))?
                    .len();
                out.push((rel, path, len));
                if out.len() > MAX_FOLDER_FILES {
                    return Err(Error::InvalidInput(format!(
                        "the folder has more than {MAX_FOLDER_FILES} files"
                    )));
                }
            } else {
                tracing::info!(path = %path.display(), "skipped (not a regular file)");
            }
        }
    }
    out.sort();
    Ok(out)
}

// ---- receiving ----

/// The transfer feature's part of the inbox: offers and the other side's updates.
struct Offers(Weak<Engine>);

impl PayloadHandler for Offers {
    fn handle(&self, incoming: Incoming) -> BoxFuture<'_, Result<Handled, Error>> {
        Box::pin(async move {
            let engine = self.0.upgrade().ok_or(Error::Closed)?;
            let Incoming { from, id, payload } = incoming;
            match payload {
                Payload::FileOffer {
                    transfer,
                    hash,
                    folder,
                    name,
                    size,
                    files,
                } => {
                    let offer = Offer {
                        id: TransferId(transfer),
                        hash,
                        folder,
                        remote_name: name,
                        size,
                        files,
                    };
                    on_offer(&engine, from, id, offer)
                }
                Payload::TransferUpdate {
                    transfer,
                    state,
                    reason,
                } => on_update(&engine, &from.id, TransferId(transfer), state, reason),
                other => Err(Error::Protocol(format!("transfers cannot take {other:?}"))),
            }
        })
    }
}

/// The payload kinds the transfer feature takes, for the inbox's table.
pub(crate) fn handlers(engine: &Arc<Engine>) -> Vec<(PayloadKind, Arc<dyn PayloadHandler>)> {
    let h: Arc<dyn PayloadHandler> = Arc::new(Offers(Arc::downgrade(engine)));
    vec![
        (PayloadKind::FileOffer, h.clone()),
        (PayloadKind::TransferUpdate, h),
    ]
}

/// What a sender's offer says (all of it chosen by the sender, so cleaned before use).
struct Offer {
    id: TransferId,
    hash: [u8; 32],
    folder: bool,
    remote_name: String,
    size: u64,
    files: u32,
}

/// An incoming offer: its message and transfer record; once stored, it may be accepted at once.
fn on_offer(
    engine: &Arc<Engine>,
    contact: Contact,
    message_id: MessageId,
    offer: Offer,
) -> Result<Handled, Error> {
    let name = naming::safe_name(&offer.remote_name);
    let t = Transfer {
        size: offer.size,
        hash: Hash::from_bytes(offer.hash).to_hex().to_string(),
        files: offer.files,
        ..offered(
            offer.id,
            contact.id,
            Direction::Incoming,
            name.clone(),
            offer.folder,
            naming::classify_remote(&offer.remote_name),
        )
    };
    let now = t.created_at;
    let message = Message {
        id: message_id,
        conversation: engine.conversation_with(&contact.id),
        contact: contact.id,
        seq: engine.store.next_seq()?,
        direction: Direction::Incoming,
        body: name,
        sent_at: now,
        stored_at: now,
        state: MessageState::Received,
        transfer: Some(offer.id),
    };
    let cap = auto_accept_limit(engine, &contact.id)?;
    let accept_now = engine.blobs.accept_all || cap.is_some_and(|cap| offer.size <= cap);
    let (shown, engine) = (message.clone(), engine.clone());
    Ok(Handled {
        changes: Changes {
            message: Some(message),
            new_transfer: Some(t.clone()),
            ..Changes::default()
        },
        after: Some(Box::new(move |_| {
            Box::pin(async move {
                engine.emit(Event::MessageReceived {
                    message: shown,
                    from: contact.name.clone(),
                });
                engine.emit(Event::TransferOffered { transfer: t });
                if accept_now {
                    let id = offer.id;
                    tokio::spawn(async move {
                        if let Err(e) = accept(&engine, &id).await {
                            tracing::warn!(transfer = %id, "automatic accept failed: {e}");
                        }
                    });
                }
            })
        })),
    })
}

/// The other side's update to a transfer.
fn on_update(
    engine: &Arc<Engine>,
    from: &ContactId,
    id: TransferId,
    state: TransferState,
    reason: Option<String>,
) -> Result<Handled, Error> {
    let Some(mut t) = engine.store.transfer(&id)? else {
        return Ok(Handled::nothing());
    };
    if t.contact != *from || t.state.is_final() {
        return Ok(Handled::nothing());
    }
    // The sender learns every outcome; the receiver only hears that the sender cancelled.
    let allowed = match t.direction {
        Direction::Outgoing => matches!(
            state,
            TransferState::Accepted
                | TransferState::Declined
                | TransferState::Done
                | TransferState::Cancelled
                | TransferState::Failed
        ),
        Direction::Incoming => state == TransferState::Cancelled,
    };
    let next = if allowed {
        t.state.next(state).ok()
    } else {
        None
    };
    let Some(next) = next else {
        tracing::warn!(transfer = %id, ?state, "ignored an update that does not fit the transfer");
        return Ok(Handled::nothing());
    };
    t.state = next;
    t.error = reason;
    t.updated_at = now_ms();
    if state == TransferState::Done {
        t.bytes_done = t.size;
    }
    let engine = engine.clone();
    Ok(Handled {
        changes: Changes {
            transfers: vec![t.clone()],
            ..Changes::default()
        },
        after: Some(Box::new(move |_| {
            Box::pin(async move {
                if state.is_final() {
                    finish_locally(&engine, &t).await;
                }
                engine.emit(Event::TransferChanged { transfer: t });
            })
        })),
    })
}

/// Stops serving or fetching a transfer that reached a final state, and drops its blobs' tag.
async fn finish_locally(engine: &Arc<Engine>, t: &Transfer) {
    if let Ok(mut running) = engine.blobs.running.lock() {
        if let Some(h) = running.remove(&t.id) {
            h.abort();
        }
    }
    if t.direction == Direction::Outgoing {
        if let Ok(hashes) = offered_hashes(engine, t).await {
            let hashes: Vec<Hash> = hashes.into_iter().map(|(h, _)| h).collect();
            engine.blobs.access.revoke(&t.contact, &hashes);
        }
    }
    if let Err(e) = engine.blobs.store.tags().delete(tag_name(t)).await {
        tracing::warn!(transfer = %t.id, "dropping the tag: {e}");
    }
}

async fn set_state(
    engine: &Arc<Engine>,
    t: &mut Transfer,
    state: TransferState,
    error: Option<String>,
) -> Result<(), Error> {
    t.state = t.state.next(state)?;
    t.error = error;
    t.updated_at = now_ms();
    engine.store.put_transfer(t)?;
    engine.store.flush().await?;
    engine.emit(Event::TransferChanged {
        transfer: t.clone(),
    });
    Ok(())
}

async fn tell(
    engine: &Arc<Engine>,
    t: &Transfer,
    state: TransferState,
    reason: Option<String>,
) -> Result<(), Error> {
    seal_and_queue(
        engine,
        &t.contact,
        MessageId::random(),
        &Payload::TransferUpdate {
            transfer: t.id.0,
            state,
            reason,
        },
        OutboxKind::Control,
        None,
        None,
    )
    .await
}

/// Finds a transfer by id or id prefix.
pub(crate) fn resolve(engine: &Engine, query: &str) -> Result<Transfer, Error> {
    let q = query.trim().to_ascii_lowercase();
    if q.len() < 4 {
        return Err(Error::InvalidInput(
            "give at least 4 characters of the transfer id".into(),
        ));
    }
    let found: Vec<Transfer> = engine
        .store
        .transfers()?
        .into_iter()
        .filter(|t| t.id.to_string().starts_with(&q))
        .collect();
    match found.len() {
        1 => found
            .into_iter()
            .next()
            .ok_or_else(|| Error::InvalidInput(query.into())),
        0 => Err(Error::InvalidInput(format!("no transfer {query:?}"))),
        _ => Err(Error::InvalidInput(format!(
            "{query:?} matches several transfers"
        ))),
    }
}

/// Where received files go: the stored setting, else the platform's Downloads folder.
pub(crate) fn downloads_dir(engine: &Engine) -> Result<PathBuf, Error> {
    if let Some(p) = engine.store.setting::<PathBuf>(SETTING_DOWNLOADS)? {
        return Ok(p);
    }
    Ok(dirs::download_dir().unwrap_or_else(|| engine.home.join("downloads")))
}

/// Sets where received files go.
pub(crate) async fn set_downloads_dir(engine: &Engine, dir: &Path) -> Result<(), Error> {
    let dir = std::path::absolute(dir).map_err(Error::io(format!("{}", dir.display())))?;
    engine.store.set_setting(SETTING_DOWNLOADS, &dir)?;
    engine.store.flush().await
}

/// The automatic-accept size cap for a contact, if set.
pub(crate) fn auto_accept_limit(engine: &Engine, id: &ContactId) -> Result<Option<u64>, Error> {
    engine
        .store
        .setting::<u64>(&format!("{AUTO_ACCEPT_PREFIX}{id}"))
}

/// Sets (or clears) the automatic-accept size cap for a contact.
pub(crate) async fn set_auto_accept(
    engine: &Engine,
    id: &ContactId,
    max: Option<u64>,
) -> Result<(), Error> {
    let key = format!("{AUTO_ACCEPT_PREFIX}{id}");
    match max {
        Some(m) => engine.store.set_setting(&key, &m)?,
        None => engine.store.remove_setting(&key)?,
    }
    engine.store.flush().await
}

#[cfg(unix)]
fn same_device(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => true,
    }
}

#[cfg(not(unix))]
fn same_device(_: &Path, _: &Path) -> bool {
    true
}

/// Checks there is room for what is still missing in the blob store and for the saved copy.
fn check_space(engine: &Engine, t: &Transfer, have: u64, downloads: &Path) -> Result<(), Error> {
    let blob_dir = engine.home.join(BLOBS_DIR);
    let missing = t.size.saturating_sub(have);
    let free = |p: &Path| fs4::available_space(p).map_err(Error::io(format!("{}", p.display())));
    let (blob_free, dl_free) = (free(&blob_dir)?, free(downloads)?);
    let short = if same_device(&blob_dir, downloads) {
        (missing + t.size).saturating_sub(blob_free)
    } else {
        missing
            .saturating_sub(blob_free)
            .max(t.size.saturating_sub(dl_free))
    };
    if short > 0 {
        return Err(Error::InvalidInput(format!(
            "not enough free space for {}: {short} more bytes needed",
            t.name
        )));
    }
    Ok(())
}

fn load(engine: &Engine, id: &TransferId) -> Result<Transfer, Error> {
    engine
        .store
        .transfer(id)?
        .ok_or_else(|| Error::InvalidInput(format!("no transfer {id}")))
}

/// Accepts an offered transfer and starts fetching it.
pub(crate) async fn accept(engine: &Arc<Engine>, id: &TransferId) -> Result<Transfer, Error> {
    let mut t = load(engine, id)?;
    if t.direction != Direction::Incoming {
        return Err(Error::InvalidInput(
            "only the receiver accepts a transfer".into(),
        ));
    }
    if t.state != TransferState::Offered {
        return Err(Error::InvalidInput(format!(
            "the transfer is {:?}, not waiting for an answer",
            t.state
        )));
    }
    let downloads = downloads_dir(engine)?;
    std::fs::create_dir_all(&downloads)
        .map_err(Error::io(format!("creating {}", downloads.display())))?;
    let have = engine
        .blobs
        .store
        .remote()
        .local(content(&t)?)
        .await
        .map(|l| l.local_bytes())
        .unwrap_or(0);
    check_space(engine, &t, have, &downloads)?;
    // Protect what arrives from garbage collection until it is saved.
    engine
        .blobs
        .store
        .tags()
        .set(tag_name(&t), content(&t)?)
        .await
        .map_err(blob_err)?;
    set_state(engine, &mut t, TransferState::Accepted, None).await?;
    tell(engine, &t, TransferState::Accepted, None).await?;
    start_download(engine, t.clone());
    Ok(t)
}

/// Declines an offered transfer.
pub(crate) async fn decline(engine: &Arc<Engine>, id: &TransferId) -> Result<Transfer, Error> {
    let mut t = load(engine, id)?;
    if t.direction != Direction::Incoming || t.state != TransferState::Offered {
        return Err(Error::InvalidInput(
            "only an offer waiting for an answer can be declined".into(),
        ));
    }
    set_state(engine, &mut t, TransferState::Declined, None).await?;
    tell(engine, &t, TransferState::Declined, None).await?;
    finish_locally(engine, &t).await;
    Ok(t)
}

/// Cancels a transfer from either side.
pub(crate) async fn cancel(engine: &Arc<Engine>, id: &TransferId) -> Result<Transfer, Error> {
    let mut t = load(engine, id)?;
    if t.state.is_final() {
        return Err(Error::InvalidInput(format!(
            "the transfer is already {:?}",
            t.state
        )));
    }
    set_state(engine, &mut t, TransferState::Cancelled, None).await?;
    finish_locally(engine, &t).await;
    tell(engine, &t, TransferState::Cancelled, None).await?;
    Ok(t)
}

/// Resumes the transfers that were under way, and re-grants access to what is still offered.
///
/// At start (`only` = None) every accepted download starts. When a contact comes online again
/// (`only` = that contact, a new connection: it may have restarted) its downloads restart on a
/// fresh connection, since the old one may be dead without knowing it yet.
pub(crate) async fn resume(engine: &Arc<Engine>, only: Option<&ContactId>) {
    let Ok(all) = engine.store.transfers() else {
        return;
    };
    for t in all {
        if t.state.is_final() || only.is_some_and(|c| *c != t.contact) {
            continue;
        }
        match t.direction {
            Direction::Outgoing => {
                if only.is_none() {
                    match offered_hashes(engine, &t).await {
                        Ok(h) => engine.blobs.access.allow(t.contact, h),
                        Err(e) => tracing::warn!(transfer = %t.id, "cannot serve: {e}"),
                    }
                }
            }
            Direction::Incoming => {
                if matches!(
                    t.state,
                    TransferState::Accepted | TransferState::Transferring | TransferState::Paused
                ) {
                    if only.is_some() {
                        abort_fetch(engine, &t.id);
                    }
                    start_download(engine, t);
                }
            }
        }
    }
}

/// Retries paused downloads whose sender is online (called periodically).
pub(crate) fn retry_paused(engine: &Arc<Engine>) {
    let Ok(all) = engine.store.transfers() else {
        return;
    };
    for t in all {
        if t.direction == Direction::Incoming
            && t.state == TransferState::Paused
            && matches!(
                engine.presence_of(&t.contact),
                crate::model::Presence::Online { .. }
            )
        {
            start_download(engine, t);
        }
    }
}

/// Stops a fetch in progress (not a save in progress).
fn abort_fetch(engine: &Engine, id: &TransferId) {
    let saving = engine
        .blobs
        .saving
        .lock()
        .map(|s| s.contains(id))
        .unwrap_or(true);
    if saving {
        return;
    }
    if let Ok(mut running) = engine.blobs.running.lock() {
        if let Some(h) = running.remove(id) {
            h.abort();
        }
    }
}

fn start_download(engine: &Arc<Engine>, t: Transfer) {
    let Ok(mut running) = engine.blobs.running.lock() else {
        return;
    };
    if running.get(&t.id).is_some_and(|h| !h.is_finished()) {
        return;
    }
    let id = t.id;
    let task_engine = engine.clone();
    let handle = tokio::spawn(async move {
        let engine = task_engine;
        let result = download(&engine, t).await;
        if let Err(e) = result {
            tracing::info!(transfer = %id, "transfer interrupted: {e}");
        }
    });
    running.insert(id, handle.abort_handle());
}

/// Fetches what is missing, then saves it. Interruptions leave the transfer `Paused`.
async fn download(engine: &Arc<Engine>, mut t: Transfer) -> Result<(), Error> {
    let contact = engine
        .store
        .contact(&t.contact)?
        .ok_or_else(|| Error::UnknownContact(t.contact.to_string()))?;
    let what = content(&t)?;
    let remote = engine.blobs.store.remote();
    let local = remote.local(what).await.ok();
    let have = local.as_ref().map(|l| l.local_bytes()).unwrap_or(0);
    let fetched = if local.is_some_and(|l| l.is_complete()) {
        true
    } else {
        let conn = tokio::time::timeout(
            DIAL_TIMEOUT,
            engine
                .endpoint
                .connect(endpoint_addr(contact.id, &contact.addr), iroh_blobs::ALPN),
        )
        .await;
        let conn = match conn {
            Ok(Ok(c)) => c,
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer".into(),
                };
                set_state(engine, &mut t, TransferState::Paused, Some(why.clone())).await?;
                return Err(Error::Network(why));
            }
        };
        t.resumed_from = have;
        t.bytes_done = have;
        set_state(engine, &mut t, TransferState::Transferring, None).await?;
        let mut progress = remote.fetch(conn.clone(), what).stream();
        let mut outcome = None;
        while let Some(item) = progress.next().await {
            match item {
                GetProgressItem::Progress(n) => {
                    let done = (have + n).min(t.size);
                    emit_progress(engine, &t, done);
                }
                GetProgressItem::Done(_) => outcome = Some(Ok(())),
                GetProgressItem::Error(e) => outcome = Some(Err(e.to_string())),
            }
        }
        conn.close(0u32.into(), b"done");
        match outcome {
            Some(Ok(())) => true,
            Some(Err(why)) => {
                let local = remote
                    .local(what)
                    .await
                    .map(|l| l.local_bytes())
                    .unwrap_or(0);
                t.bytes_done = local;
                set_state(engine, &mut t, TransferState::Paused, Some(why.clone())).await?;
                return Err(Error::Network(why));
            }
            None => false,
        }
    };
    if !fetched {
        set_state(
            engine,
            &mut t,
            TransferState::Paused,
            Some("interrupted".into()),
        )
        .await?;
        return Err(Error::Network("fetch ended early".into()));
    }
    let saved = match save(engine, &t).await {
        Ok(p) => p,
        Err(e) => {
            let why = e.to_string();
            set_state(engine, &mut t, TransferState::Failed, Some(why.clone())).await?;
            engine.emit(Event::TransferFailed {
                id: t.id,
                reason: why.clone(),
            });
            tell(engine, &t, TransferState::Failed, Some(why)).await?;
            return Err(e);
        }
    };
    t.bytes_done = t.size;
    t.path = Some(saved.clone());
    set_state(engine, &mut t, TransferState::Done, None).await?;
    engine.emit(Event::TransferCompleted {
        id: t.id,
        path: saved,
    });
    tell(engine, &t, TransferState::Done, None).await?;
    finish_locally(engine, &t).await;
    Ok(())
}

/// Saves a verified blob under a name reserved exclusively (never overwriting anything else):
/// the store moves its data file onto the reserved name (no copy on the same file system) and
/// from then on only references it; a copy is made across file systems or for repeated hashes.
async fn save_blob(engine: &Engine, hash: Hash, dir: &Path, name: &str) -> Result<PathBuf, Error> {
    let (file, path) = files::create_unique_file(dir, name)
        .map_err(Error::io(format!("creating a file in {}", dir.display())))?;
    drop(file);
    let exported = engine
        .blobs
        .store
        .blobs()
        .export_with_opts(ExportOptions {
            hash,
            mode: ExportMode::TryReference,
            target: path.clone(),
        })
        .finish()
        .await;
    if let Err(e) = exported {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(Error::Io {
            context: format!("writing {}", path.display()),
            source: std::io::Error::other(e.to_string()),
        });
    }
    // Received files are never executable, whatever mode the store's file had.
    crate::home::restrict(&path, 0o644)?;
    Ok(path)
}

/// Saves a completed transfer into the download folder; never overwrites anything.
async fn save(engine: &Engine, t: &Transfer) -> Result<PathBuf, Error> {
    let downloads = downloads_dir(engine)?;
    std::fs::create_dir_all(&downloads)
        .map_err(Error::io(format!("creating {}", downloads.display())))?;
    let root = hash_of(t)?;
    if !t.folder {
        return save_blob(engine, root, &downloads, &t.name).await;
    }
    let collection = Collection::load(root, &*engine.blobs.store)
        .await
        .map_err(blob_err)?;
    let top = files::create_unique_dir(&downloads, &t.name).map_err(Error::io(format!(
        "creating a folder in {}",
        downloads.display()
    )))?;
    let mut seen_dirs: HashSet<PathBuf> = HashSet::new();
    for (remote_path, hash) in collection.iter() {
        let Some(rel) = naming::safe_relative_path(remote_path) else {
            tracing::warn!(name = %remote_path, "skipped a folder entry with no usable name");
            continue;
        };
        let (parent, file) = match (rel.parent(), rel.file_name()) {
            (Some(p), Some(f)) => (top.join(p), f.to_string_lossy().into_owned()),
            _ => continue,
        };
        if seen_dirs.insert(parent.clone()) {
            // Every component was cleaned and we created `top` just now, so this stays inside it.
            if let Err(e) = std::fs::create_dir_all(&parent) {
                // e.g. the offer has both a file `a` and `a/b`: keep the rest of the folder.
                tracing::warn!(path = %parent.display(), "skipped a folder entry: {e}");
                continue;
            }
        }
        if !parent.is_dir() {
            continue;
        }
        save_blob(engine, *hash, &parent, &file).await?;
    }
    Ok(top)
}

/// Drops the blob-store tags that no live transfer needs: those of transfers in a final state
/// (normally dropped already; this covers a crash in between) and those with no record at all.
/// The store's garbage collection then frees their data within [`GC_INTERVAL`]. Returns how many
/// tags were dropped.
pub(crate) async fn clean(engine: &Arc<Engine>) -> Result<u32, Error> {
    let tags = engine.blobs.store.tags();
    let mut stale = Vec::new();
    let mut list = tags.list_prefix("ferry/").await.map_err(blob_err)?;
    while let Some(info) = list.next().await {
        let info = info.map_err(blob_err)?;
        let name = String::from_utf8_lossy(info.name.as_ref()).into_owned();
        let live = name
            .rsplit('/')
            .next()
            .and_then(|id| id.parse::<TransferId>().ok())
            .map(|id| engine.store.transfer(&id))
            .transpose()?
            .flatten()
            .is_some_and(|t| !t.state.is_final());
        if !live {
            stale.push(info.name);
        }
    }
    for name in &stale {
        tags.delete(name).await.map_err(blob_err)?;
    }
    Ok(stale.len() as u32)
}
