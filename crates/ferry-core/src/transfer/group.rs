//! Files in groups: an offer sealed into a group's log reaches every member; each member who
//! accepts fetches the content with iroh-blobs' [`Downloader`] from the members it can reach
//! (its contacts in the group who are online), and serves what it holds, whole or in part, to
//! the other members. A hash is served only to a current member of a group it was offered in,
//! and only while this home is a member too.

use futures_lite::stream::Boxed;
use iroh_blobs::api::downloader::{
    ContentDiscovery, DownloadProgressItem, DownloadRequest, Downloader, SplitStrategy,
};
use rand_core::RngCore;

use super::*;
use crate::store::GroupFile;

/// A group file's offer, stored: accepted at once when this node accepts every file, or when
/// its author is a contact whose automatic accept covers it (within the daily quota).
pub(super) fn offered_in_group(ctx: &Arc<Transfers>, t: Transfer) {
    let wanted = ctx.blobs.accept_all
        || match (
            auto_accept_limit(ctx, &t.contact),
            ctx.store.key_changed(&t.contact),
            ctx.store.stored_today(&t.contact),
        ) {
            (Ok(Some(cap)), Ok(false), Ok(today)) => {
                t.size <= cap && today.saturating_add(t.size) <= ctx.blobs.daily_bytes
            }
            _ => false,
        };
    if !wanted {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        if let Err(e) = accept(&ctx, &t.id).await {
            tracing::warn!(transfer = %t.id, "automatic accept failed: {e}");
        }
    });
}

/// Whether `peer` may fetch `hash` from this home as a group file: it was offered in a group
/// both are members of now, and this home's transfer of it still stands (an author who
/// cancelled stops sharing; a member serves what it holds, whole or in part).
pub(super) fn group_may_get(
    ctx: &Transfers,
    peer: &ContactId,
    hash: &Hash,
    children: bool,
) -> bool {
    let me = ctx.links.endpoint().id();
    let Ok(files) = ctx.store.group_files() else {
        return false;
    };
    files.iter().any(|(id, gf)| {
        gf.hash == *hash.as_bytes()
            && (!children || gf.folder)
            && matches!(ctx.store.transfer(id), Ok(Some(t)) if serves(&t))
            && matches!(ctx.store.group(&gf.group), Ok(Some(rec))
                if rec.state.members.contains_key(peer.as_bytes())
                    && rec.state.members.contains_key(me.as_bytes()))
    })
}

/// Whether this home's transfer of a group file lets it serve the content.
fn serves(t: &Transfer) -> bool {
    !matches!(
        t.state,
        TransferState::Cancelled | TransferState::Declined | TransferState::Failed
    )
}

/// Whether a transfer is of a file offered in a group.
pub(super) fn in_group(ctx: &Transfers, id: &TransferId) -> bool {
    matches!(ctx.store.group_file(id), Ok(Some(_)))
}

/// The members a group file may come from: this home's contacts in the group who are online
/// and not blocked, the author last (the others may hold it already, and spare the author).
fn providers(ctx: &Transfers, gf: &GroupFile) -> Result<Vec<Contact>, Error> {
    let me = ctx.links.endpoint().id();
    let Some(rec) = ctx.store.group(&gf.group)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for id in rec.state.members.keys() {
        let Ok(id) = ContactId::from_bytes(id) else {
            continue;
        };
        if id == me {
            continue;
        }
        let Some(c) = ctx.store.admitted(&id)? else {
            continue;
        };
        if matches!(
            ctx.links.presence_of(&id),
            crate::model::Presence::Online { .. }
        ) {
            out.push(c);
        }
    }
    // Members in a random order, so that many fetching at once spread over them.
    let mut keyed: Vec<(bool, u64, Contact)> = out
        .into_iter()
        .map(|c| {
            (
                c.id.as_bytes() == &gf.author,
                rand_core::OsRng.next_u64(),
                c,
            )
        })
        .collect();
    keyed.sort_by_key(|(author, r, _)| (*author, *r));
    Ok(keyed.into_iter().map(|(_, _, c)| c).collect())
}

/// The providers of one download, in the order they are tried.
#[derive(Debug)]
struct Members(Vec<iroh::EndpointId>);

impl ContentDiscovery for Members {
    fn find_providers(&self, _: HashAndFormat) -> Boxed<iroh::EndpointId> {
        Box::pin(futures_lite::stream::iter(self.0.clone()))
    }
}

/// Fetches what the store lacks of a group file from the members who are online. A file: each
/// member is asked what it holds (`observe`), and the missing parts are shared out, each part to
/// the first member (in the order of [`providers`]) who holds it, and fetched from all of them at
/// once, one [`Downloader`] request per member; a member still fetching it itself sends the
/// part it has. Rounds repeat while a member held something new. A folder: its files come from
/// several members at once (the downloader's split), each from one member after another.
/// Stops as soon as more arrives than the offer allows. An interruption leaves the transfer
/// `Paused`.
pub(super) async fn fetch_group(
    ctx: &Arc<Transfers>,
    t: &mut Transfer,
    gf: &GroupFile,
) -> Result<(), Error> {
    let what = content(t)?;
    let providers = providers(ctx, gf)?;
    if providers.is_empty() {
        let why = "waiting for a member who may have it to come online".to_string();
        set_state(ctx, t, TransferState::Paused, Some(why.clone())).await?;
        return Err(Error::Network(why));
    }
    for c in &providers {
        ctx.lookup.add_endpoint_info(endpoint_addr(c.id, &c.addr));
    }
    let have = local_bytes(ctx, what).await;
    let downloads = downloads_dir(ctx)?;
    if let Err(e) = check_space(ctx, t, have, &downloads) {
        set_state(ctx, t, TransferState::Paused, Some(e.to_string())).await?;
        return Err(e);
    }
    t.resumed_from = have;
    t.bytes_done = have;
    set_state(ctx, t, TransferState::Transferring, None).await?;
    let fetched = if t.folder {
        // The most a folder's fetch may store: the offered bytes and its lists.
        let cap = t
            .size
            .saturating_add(MAX_FOLDER_LIST)
            .saturating_add(MAX_FOLDER_LISTING);
        let order = Members(providers.iter().map(|c| c.id).collect());
        let request = DownloadRequest::new(what, order, SplitStrategy::Split);
        run(ctx, t, vec![(None, request)], have, cap).await
    } else {
        fetch_parts(ctx, t, &providers).await
    };
    let complete = ctx
        .blobs
        .store
        .remote()
        .local(what)
        .await
        .is_ok_and(|l| l.is_complete());
    let why = match fetched {
        Err(e @ Error::Protocol(_)) => return Err(e),
        _ if complete => return Ok(()),
        Ok(()) => "no member online holds all of it".to_string(),
        Err(e) => e.to_string(),
    };
    t.bytes_done = local_bytes(ctx, what).await;
    set_state(ctx, t, TransferState::Paused, Some(why.clone())).await?;
    Err(Error::Network(why))
}

/// How many times the members are asked again what they hold, in one fetch of a file.
const ROUNDS: usize = 8;

/// Fetches a file's missing parts from the members who hold them, all at once (see
/// [`fetch_group`]). Returns when it is complete, or when no member has more of what is missing.
async fn fetch_parts(
    ctx: &Arc<Transfers>,
    t: &Transfer,
    providers: &[Contact],
) -> Result<(), Error> {
    use iroh_blobs::protocol::{ChunkRanges, GetRequest, ObserveRequest};
    let hash = hash_of(t)?;
    let what = HashAndFormat::raw(hash);
    let remote = ctx.blobs.store.remote();
    for _ in 0..ROUNDS {
        let local = remote.local(what).await.map_err(blob_err)?;
        if local.is_complete() {
            return Ok(());
        }
        let held = local.local_bytes();
        let missing = local.missing();
        let Some(mut want) = missing.ranges.iter().next().cloned() else {
            return Ok(());
        };
        // Who holds what of it, asked of each member in turn (each answers at once).
        let mut holdings: Vec<(ContactId, Option<ChunkRanges>)> = Vec::new();
        for c in providers {
            let bitfield = async {
                let conn = ctx
                    .links
                    .endpoint()
                    .connect(endpoint_addr(c.id, &c.addr), iroh_blobs::ALPN)
                    .await
                    .ok()?;
                let first = remote
                    .observe(conn.clone(), ObserveRequest::new(hash))
                    .next()
                    .await;
                conn.close(0u32.into(), b"done");
                first?.ok()
            };
            let ranges = tokio::time::timeout(DIAL_TIMEOUT, bitfield)
                .await
                .ok()
                .flatten()
                .map(|b| b.ranges);
            holdings.push((c.id, ranges));
        }
        // Each missing part goes to the first member who holds it.
        let mut requests = Vec::new();
        for (id, ranges) in holdings {
            let Some(ranges) = ranges else { continue };
            let part = &want & &ranges;
            if part.is_empty() {
                continue;
            }
            want = &want - &part;
            let request = DownloadRequest::new(
                GetRequest::blob_ranges(hash, part),
                Members(vec![id]),
                SplitStrategy::None,
            );
            requests.push((Some(id), request));
        }
        if requests.is_empty() {
            return Ok(());
        }
        match run(ctx, t, requests, held, t.size).await {
            Err(e @ Error::Protocol(_)) => return Err(e),
            // A member that stopped part way: ask again, unless nothing came at all.
            Err(e) if local_bytes(ctx, what).await <= held => return Err(e),
            Err(e) => tracing::debug!(transfer = %t.id, "a part did not come: {e}; asking again"),
            Ok(()) => {}
        }
    }
    Ok(())
}

/// Runs downloader requests at once, following their progress (from `held` bytes) and
/// stopping them all if more than `cap` bytes would be held. `from` names the member a
/// request asks (else the downloader's `TryProvider` says).
async fn run(
    ctx: &Arc<Transfers>,
    t: &Transfer,
    requests: Vec<(Option<ContactId>, DownloadRequest)>,
    held: u64,
    cap: u64,
) -> Result<(), Error> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (from, request)) in requests.into_iter().enumerate() {
        let mut stream = ctx
            .downloader
            .download_with_opts(request)
            .stream()
            .await
            .map_err(|e| Error::Network(format!("starting the download: {e}")))?;
        let tx = tx.clone();
        tasks.spawn(async move {
            while let Some(item) = stream.next().await {
                if tx.send((i, from, item)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    // Bytes each request brought so far, and who it is from now.
    let mut brought: Vec<u64> = Vec::new();
    let mut current: Vec<Option<ContactId>> = Vec::new();
    let mut failure = None;
    // Dropping `tasks` (returning early) stops every request.
    while let Some((i, from, item)) = rx.recv().await {
        if brought.len() <= i {
            brought.resize(i + 1, 0);
            current.resize(i + 1, None);
        }
        match item {
            DownloadProgressItem::TryProvider { id, .. } => current[i] = from.or(Some(id)),
            DownloadProgressItem::Progress(n) => {
                let gained = n.saturating_sub(brought[i]);
                brought[i] = brought[i].max(n);
                let now = held.saturating_add(brought.iter().sum::<u64>());
                if now > cap {
                    let why = format!(
                        "the members sent more than was offered ({now} bytes, offered {cap}); \
                         stopped"
                    );
                    tracing::warn!(transfer = %t.id, "{why}");
                    return Err(Error::Protocol(why));
                }
                if let (Some(who), true) = (current[i].or(from), gained > 0) {
                    if let Ok(mut sources) = ctx.blobs.sources.lock() {
                        *sources.entry(t.id).or_default().entry(who).or_default() += gained;
                    }
                }
                emit_progress(ctx, t, now.min(t.size));
            }
            DownloadProgressItem::ProviderFailed { id, .. } => {
                tracing::debug!(transfer = %t.id, provider = %id.fmt_short(), "a member could not send its part");
            }
            DownloadProgressItem::PartComplete { .. } => {}
            DownloadProgressItem::DownloadError => {
                failure = Some("no member online could send all of it".to_string());
            }
            DownloadProgressItem::Error(e) => failure = Some(e.to_string()),
        }
    }
    match failure {
        Some(why) => Err(Error::Network(why)),
        None => Ok(()),
    }
}

/// Whether a paused group download may go on now: a member who may have it is online.
pub(super) fn group_can_resume(ctx: &Transfers, id: &TransferId) -> bool {
    match ctx.store.group_file(id) {
        Ok(Some(gf)) => providers(ctx, &gf).is_ok_and(|p| !p.is_empty()),
        _ => false,
    }
}

/// Whether this home still keeps a finished group download's content for the other members:
/// it is still in the group.
pub(super) fn keeps_for_group(ctx: &Transfers, t: &Transfer) -> bool {
    let me = ctx.links.endpoint().id();
    t.direction == Direction::Incoming
        && t.state == TransferState::Done
        && matches!(ctx.store.group_file(&t.id), Ok(Some(gf))
            if matches!(ctx.store.group(&gf.group), Ok(Some(rec))
                if rec.state.members.contains_key(me.as_bytes())))
}

/// Builds the downloader group files are fetched with: dials by endpoint id, the addresses
/// coming from the contacts (added to `lookup` before each download).
pub(super) fn downloader(store: &FsStore, endpoint: &iroh::Endpoint) -> Downloader {
    let mut pool = iroh_blobs::util::connection_pool::Options::default();
    pool.connect_timeout = DIAL_TIMEOUT;
    Downloader::builder(store, endpoint)
        .pool_options(pool)
        .build()
}
