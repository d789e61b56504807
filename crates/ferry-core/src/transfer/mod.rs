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
//! Access control: the provider serves a hash only to the contact it was offered to (get,
//! get-many and observe), or, for a file offered in a group, to a contact who is a member of
//! that group now (get and observe; `group.rs`); push is disabled. Connection ids from connect events map requests
//! to endpoint ids.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use iroh_blobs::api::blobs::{AddPathOptions, BlobStatus, ExportMode, ExportOptions, ImportMode};
use iroh_blobs::api::remote::GetProgressItem;
use iroh_blobs::format::collection::Collection;
use iroh_blobs::provider::events::{
    AbortReason, ConnectMode, EventMask, EventSender, ObserveMode, ProviderMessage, RequestMode,
    RequestUpdate, ThrottleMode,
};
use iroh_blobs::store::fs::FsStore;
use iroh_blobs::store::GcConfig;
use iroh_blobs::{BlobFormat, Hash, HashAndFormat};

use crate::bus::{Bus, Events, Signal};
use crate::inbox::{received_message, BoxFuture, Handled, Incoming, PayloadHandler, PayloadKind};
use crate::model::{
    now_ms, Contact, ContactId, ConversationId, Direction, Event, MessageId, Transfer, TransferId,
    TransferState,
};
use crate::net::{endpoint_addr, Links, DIAL_TIMEOUT};
use crate::outbox::Outbox;
use crate::store::{Changes, OutboxKind, Store};
use crate::wire::Payload;
use crate::Error;
use crate::{files, naming};

mod access;
mod export;
mod fetch;
mod group;
mod offer;
mod send;

pub(crate) use access::*;
use export::*;
pub(crate) use fetch::*;
use group::{fetch_group, group_can_resume, group_may_get, in_group, keeps_for_group};
pub(crate) use offer::*;
pub use send::Claim;
pub(crate) use send::*;

/// The blob store's folder inside a home.
pub const BLOBS_DIR: &str = "blobs";
/// How often the blob store collects blobs no tag protects: what a finished, cancelled or
/// failed transfer left in the store (a partial download, a copy saved across file systems,
/// a folder's list of names) is gone at most this long after the transfer ended. iroh-blobs
/// deletes only through its collection, so this is as prompt as it gets; a pass over a store
/// of a few thousand blobs takes milliseconds.
pub const GC_INTERVAL: Duration = Duration::from_secs(5);
pub use ferry_proto::limits::{MAX_FOLDER_FILES, MAX_PENDING_OFFERS};
/// The longest list of names (a folder offer's collection metadata) a receiver reads.
pub const MAX_FOLDER_LISTING: u64 = 64 * 1024 * 1024;
/// Progress events at most this often per transfer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

const SETTING_DOWNLOADS: &str = "downloads";
const AUTO_ACCEPT_PREFIX: &str = "auto_accept/";

/// The transfer feature: what it uses, and nothing else. Shared as `Arc<Transfers>`; the blobs
/// protocol's event task and the inbox's handler table hold it weakly.
pub(crate) struct Transfers {
    pub(crate) home: PathBuf,
    pub(crate) store: Store,
    pub(crate) outbox: Outbox,
    pub(crate) links: Links,
    pub(crate) events: Events,
    pub(crate) blobs: Blobs,
    /// Fetches group files from several members.
    downloader: iroh_blobs::api::downloader::Downloader,
    /// Where the downloader finds the addresses of the members it dials (contacts').
    lookup: iroh::address_lookup::memory::MemoryLookup,
}

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfers")
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

impl Transfers {
    pub(crate) fn new(
        home: PathBuf,
        store: Store,
        outbox: Outbox,
        links: Links,
        events: Events,
        blobs: Blobs,
        bus: &Bus,
    ) -> Arc<Transfers> {
        let lookup = iroh::address_lookup::memory::MemoryLookup::new();
        match links.endpoint().address_lookup() {
            Ok(services) => services.add(lookup.clone()),
            Err(e) => tracing::warn!("group files cannot dial members: {e}"),
        }
        let downloader = group::downloader(&blobs.store, links.endpoint());
        let ctx = Arc::new(Transfers {
            home,
            store,
            outbox,
            links,
            events,
            blobs,
            downloader,
            lookup,
        });
        // A contact that comes online gets its paused fetches resumed; every presence round
        // retries what paused while the contact looked online.
        let weak = Arc::downgrade(&ctx);
        bus.subscribe(move |signal| {
            let Some(ctx) = weak.upgrade() else {
                return;
            };
            match signal {
                Signal::LinkUp(id) => {
                    tokio::spawn(async move { resume(&ctx, Some(&id)).await });
                }
                Signal::Tick => retry_paused(&ctx),
                // A fetch notices a lost link itself and pauses.
                Signal::LinkDown(_) => {}
                Signal::Blocked(id) => stop_for(&ctx, &id, false),
                Signal::Unblocked(id) => {
                    tokio::spawn(async move { resume(&ctx, Some(&id)).await });
                }
                Signal::Removing(id) => stop_for(&ctx, &id, true),
                Signal::TransferExpired(t) => {
                    tokio::spawn(async move { expired(&ctx, *t).await });
                }
                Signal::GroupFileOffered(t) => group::offered_in_group(&ctx, *t),
                Signal::KeyAccepted(_) | Signal::SessionBroken(_) | Signal::SessionReset(_) => {}
            }
        });
        ctx
    }

    fn emit(&self, event: Event) {
        self.events.emit(event);
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
    /// A contact's daily quota, which files accepted automatically count against.
    pub(crate) daily_bytes: u64,
    /// How often the store drops untagged blobs.
    gc_interval: Duration,
    /// Group downloads: the bytes each member sent.
    sources: Mutex<HashMap<TransferId, BTreeMap<ContactId, u64>>>,
    /// Fault injection for tests: what the provider sends at most, in bytes per second.
    throttle_bps: Option<u64>,
}

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobs").finish_non_exhaustive()
    }
}

impl Blobs {
    /// Opens the blob store of a home, with garbage collection of untagged blobs.
    pub(crate) async fn open(
        home: &Path,
        accept_all: bool,
        gc_interval: Duration,
        daily_bytes: u64,
        throttle_bps: Option<u64>,
    ) -> Result<Blobs, Error> {
        let dir = home.join(BLOBS_DIR);
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let mut options = iroh_blobs::store::fs::options::Options::new(&dir);
        options.gc = Some(GcConfig {
            interval: gc_interval,
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
            daily_bytes,
            gc_interval,
            sources: Mutex::default(),
            throttle_bps: throttle_bps.or_else(throttle_bps_env),
        })
    }

    /// The event sender for the blobs protocol: intercepts connects and every request kind.
    pub(crate) fn events(&self, ctx: Weak<Transfers>) -> EventSender {
        let mask = EventMask {
            connected: ConnectMode::Intercept,
            get: RequestMode::InterceptLog,
            get_many: RequestMode::Intercept,
            push: RequestMode::Disabled,
            observe: ObserveMode::Intercept,
            throttle: if self.throttle_bps.is_some() {
                ThrottleMode::Intercept
            } else {
                ThrottleMode::None
            },
        };
        let (tx, rx) = EventSender::channel(64, mask);
        tokio::spawn(provider_events(ctx, rx));
        tx
    }
}

fn emit_progress(ctx: &Transfers, t: &Transfer, bytes: u64) {
    let now = Instant::now();
    let rate = {
        let Ok(mut last) = ctx.blobs.last_progress.lock() else {
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
    ctx.emit(Event::TransferProgress {
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
    Transfer::offered(
        id,
        contact,
        direction,
        name,
        folder,
        kind.media_type,
        kind.dangerous,
    )
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
        Direction::Incoming | Direction::System => "in",
    };
    format!("ferry/{side}/{}", t.id)
}

fn blob_err(e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("blob store: {e}"))
}

/// The hashes a contact may fetch for an outgoing transfer: the root, and a folder's children.
async fn offered_hashes(ctx: &Transfers, t: &Transfer) -> Result<Vec<(Hash, bool)>, Error> {
    let root = hash_of(t)?;
    if !t.folder {
        return Ok(vec![(root, false)]);
    }
    let collection = Collection::load(root, &*ctx.blobs.store)
        .await
        .map_err(blob_err)?;
    let mut v = vec![(root, true)];
    v.extend(collection.iter().map(|(_, h)| (*h, false)));
    Ok(v)
}

/// Stops serving or fetching a transfer that reached a final state, and drops its blobs' tag.
async fn finish_locally(ctx: &Arc<Transfers>, t: &Transfer) {
    if let Ok(mut running) = ctx.blobs.running.lock() {
        if let Some(h) = running.remove(&t.id) {
            h.abort();
        }
    }
    if t.direction == Direction::Outgoing {
        if let Ok(hashes) = offered_hashes(ctx, t).await {
            let hashes: Vec<Hash> = hashes.into_iter().map(|(h, _)| h).collect();
            ctx.blobs.access.revoke(&t.contact, &t.id, &hashes);
        }
    }
    // A group file this home finished stays in the store for the other members.
    if keeps_for_group(ctx, t) {
        return;
    }
    if let Err(e) = ctx.blobs.store.tags().delete(tag_name(t)).await {
        tracing::warn!(transfer = %t.id, "dropping the tag: {e}");
    }
}

async fn set_state(
    ctx: &Arc<Transfers>,
    t: &mut Transfer,
    state: TransferState,
    error: Option<String>,
) -> Result<(), Error> {
    t.error = error;
    t.updated_at = now_ms();
    ctx.store.advance_transfer(t, state)?;
    ctx.store.flush().await?;
    ctx.emit(Event::TransferChanged {
        transfer: t.clone(),
    });
    Ok(())
}

async fn tell(
    ctx: &Arc<Transfers>,
    t: &Transfer,
    state: TransferState,
    reason: Option<String>,
) -> Result<(), Error> {
    // A group file's author learns nothing of each member's answer (it may not even be a
    // contact): members fetch from whoever has it.
    if in_group(ctx, &t.id) {
        return Ok(());
    }
    ctx.outbox
        .queue(
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

/// The bytes each member sent of a group download (since the node started).
pub(crate) fn sources(ctx: &Transfers, id: &TransferId) -> Vec<(ContactId, u64)> {
    ctx.blobs
        .sources
        .lock()
        .ok()
        .and_then(|s| s.get(id).map(|m| m.iter().map(|(c, b)| (*c, *b)).collect()))
        .unwrap_or_default()
}

/// Finds a transfer by id or id prefix.
pub(crate) fn resolve(ctx: &Transfers, query: &str) -> Result<Transfer, Error> {
    let q = query.trim().to_ascii_lowercase();
    if q.len() < 4 {
        return Err(Error::InvalidInput(
            "give at least 4 characters of the transfer id".into(),
        ));
    }
    let found: Vec<Transfer> = ctx
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
pub(crate) fn downloads_dir(ctx: &Transfers) -> Result<PathBuf, Error> {
    if let Some(p) = ctx.store.setting::<PathBuf>(SETTING_DOWNLOADS)? {
        return Ok(p);
    }
    Ok(dirs::download_dir().unwrap_or_else(|| ctx.home.join("downloads")))
}

/// Sets where received files go.
pub(crate) async fn set_downloads_dir(ctx: &Transfers, dir: &Path) -> Result<(), Error> {
    let dir = std::path::absolute(dir).map_err(Error::io(format!("{}", dir.display())))?;
    ctx.store.set_setting(SETTING_DOWNLOADS, &dir)?;
    ctx.store.flush().await
}

/// The automatic-accept size cap for a contact, if set.
pub(crate) fn auto_accept_limit(ctx: &Transfers, id: &ContactId) -> Result<Option<u64>, Error> {
    ctx.store
        .setting::<u64>(&format!("{AUTO_ACCEPT_PREFIX}{id}"))
}

/// Sets (or clears) the automatic-accept size cap for a contact.
pub(crate) async fn set_auto_accept(
    ctx: &Transfers,
    id: &ContactId,
    max: Option<u64>,
) -> Result<(), Error> {
    let key = format!("{AUTO_ACCEPT_PREFIX}{id}");
    match max {
        Some(m) => ctx.store.set_setting(&key, &m)?,
        None => ctx.store.remove_setting(&key)?,
    }
    ctx.store.flush().await
}

fn load(ctx: &Transfers, id: &TransferId) -> Result<Transfer, Error> {
    ctx.store
        .transfer(id)?
        .ok_or_else(|| Error::InvalidInput(format!("no transfer {id}")))
}

/// Accepts an offered transfer and starts fetching it.
pub(crate) async fn accept(ctx: &Arc<Transfers>, id: &TransferId) -> Result<Transfer, Error> {
    let mut t = load(ctx, id)?;
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
    if ctx.store.is_blocked(&t.contact)? {
        let name = ctx.store.contact(&t.contact)?.map(|c| c.name);
        return Err(Error::Blocked(
            name.unwrap_or_else(|| t.contact.to_string()),
        ));
    }
    let downloads = downloads_dir(ctx)?;
    std::fs::create_dir_all(&downloads)
        .map_err(Error::io(format!("creating {}", downloads.display())))?;
    let have = ctx
        .blobs
        .store
        .remote()
        .local(content(&t)?)
        .await
        .map(|l| l.local_bytes())
        .unwrap_or(0);
    check_space(ctx, &t, have, &downloads)?;
    // Protect what arrives from garbage collection until it is saved.
    ctx.blobs
        .store
        .tags()
        .set(tag_name(&t), content(&t)?)
        .await
        .map_err(blob_err)?;
    set_state(ctx, &mut t, TransferState::Accepted, None).await?;
    tell(ctx, &t, TransferState::Accepted, None).await?;
    start_download(ctx, t.clone());
    Ok(t)
}

/// Declines an offered transfer.
pub(crate) async fn decline(ctx: &Arc<Transfers>, id: &TransferId) -> Result<Transfer, Error> {
    let mut t = load(ctx, id)?;
    if t.direction != Direction::Incoming || t.state != TransferState::Offered {
        return Err(Error::InvalidInput(
            "only an offer waiting for an answer can be declined".into(),
        ));
    }
    set_state(ctx, &mut t, TransferState::Declined, None).await?;
    tell(ctx, &t, TransferState::Declined, None).await?;
    finish_locally(ctx, &t).await;
    Ok(t)
}

/// Cancels a transfer from either side.
pub(crate) async fn cancel(ctx: &Arc<Transfers>, id: &TransferId) -> Result<Transfer, Error> {
    let mut t = load(ctx, id)?;
    if t.state.is_final() {
        return Err(Error::InvalidInput(format!(
            "the transfer is already {:?}",
            t.state
        )));
    }
    set_state(ctx, &mut t, TransferState::Cancelled, None).await?;
    finish_locally(ctx, &t).await;
    tell(ctx, &t, TransferState::Cancelled, None).await?;
    Ok(t)
}

/// Stops a contact's transfers: its fetches end (a blocked contact's pause, to resume when it
/// is unblocked; the providing side refuses it by itself). For a contact being `removed`, its
/// grants and the blob-store tags of its transfers go too (the records go with the contact).
fn stop_for(ctx: &Arc<Transfers>, contact: &ContactId, removed: bool) {
    let Ok(all) = ctx.store.transfers() else {
        return;
    };
    let mine: Vec<Transfer> = all
        .into_iter()
        .filter(|t| t.contact == *contact && !t.state.is_final())
        .collect();
    for t in &mine {
        if t.direction == Direction::Incoming {
            abort_fetch(ctx, &t.id);
        }
    }
    if removed {
        ctx.blobs.access.revoke_all(contact);
        // Pairing again later starts without this contact's automatic accept.
        let key = format!("{AUTO_ACCEPT_PREFIX}{contact}");
        if let Err(e) = ctx.store.remove_setting(&key) {
            tracing::warn!("dropping the automatic accept: {e}");
        }
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        for mut t in mine {
            if removed {
                let _ = ctx.blobs.store.tags().delete(tag_name(&t)).await;
            } else if t.direction == Direction::Incoming
                && matches!(
                    t.state,
                    TransferState::Accepted | TransferState::Transferring
                )
            {
                let why = Some("the sender is blocked".to_string());
                if let Err(e) = set_state(&ctx, &mut t, TransferState::Paused, why).await {
                    tracing::debug!(transfer = %t.id, "not paused: {e}");
                }
            }
        }
    });
}

/// A transfer whose message expired, its record deleted with the message: stopped, its grant
/// and blob-store copy dropped. (A file already saved to the downloads folder is the user's
/// and stays.) After a crash before this ran, the tag has no record, and the clean-up at the
/// next start drops it.
async fn expired(ctx: &Arc<Transfers>, t: Transfer) {
    if t.direction == Direction::Incoming {
        abort_fetch(ctx, &t.id);
    }
    finish_locally(ctx, &t).await;
    ctx.events.emit(Event::TransferChanged {
        transfer: Transfer {
            state: TransferState::Cancelled,
            error: Some("the message disappeared".into()),
            ..t
        },
    });
}

/// Drops the blob-store tags that no live transfer needs: those of transfers in a final state
/// (normally dropped already; this covers a crash in between) and those with no record at all.
/// The store's garbage collection then frees their data within [`GC_INTERVAL`]. Returns how many
/// tags were dropped.
pub(crate) async fn clean(ctx: &Arc<Transfers>) -> Result<u32, Error> {
    let tags = ctx.blobs.store.tags();
    let mut stale = Vec::new();
    let mut list = tags.list_prefix("ferry/").await.map_err(blob_err)?;
    while let Some(info) = list.next().await {
        let info = info.map_err(blob_err)?;
        let name = String::from_utf8_lossy(info.name.as_ref()).into_owned();
        let live = name
            .rsplit('/')
            .next()
            .and_then(|id| id.parse::<TransferId>().ok())
            .map(|id| ctx.store.transfer(&id))
            .transpose()?
            .flatten()
            .is_some_and(|t| !t.state.is_final() || keeps_for_group(ctx, &t));
        if !live {
            stale.push(info.name);
        }
    }
    for name in &stale {
        tags.delete(name).await.map_err(blob_err)?;
    }
    Ok(stale.len() as u32)
}
