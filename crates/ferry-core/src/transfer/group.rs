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
        return wait_for_members(ctx, t).await;
    }
    for c in &providers {
        ctx.lookup.add_endpoint_info(endpoint_addr(c.id, &c.addr));
    }
    // A file none of them holds any missing part of: wait. What they hold is the first round.
    let holders = if t.folder {
        Vec::new()
    } else {
        let hash = hash_of(t)?;
        let want = missing_ranges(ctx, hash).await?;
        let holders = holdings(ctx, hash, &providers, &t.contact).await;
        if !holders.iter().any(|h| !(&want & &h.ranges).is_empty()) {
            return wait_for_members(ctx, t).await;
        }
        holders
    };
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
        let author = t.contact;
        fetch_parts(ctx, t, &providers, &author, holders).await
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
/// A file's missing bytes are shared out among the members in pieces of this many chunks
/// (1 KiB each): 1 MiB.
const PIECE_CHUNKS: u64 = 1024;

/// Fetches a file's missing parts from the members who hold them, all at once (see
/// [`fetch_group`]). Returns when it is complete, or when no member has more of what is missing.
async fn fetch_parts(
    ctx: &Arc<Transfers>,
    t: &Transfer,
    providers: &[Contact],
    author: &ContactId,
    first: Vec<Holder>,
) -> Result<(), Error> {
    use iroh_blobs::protocol::GetRequest;
    let hash = hash_of(t)?;
    let what = HashAndFormat::raw(hash);
    let remote = ctx.blobs.store.remote();
    let mut asked = Some(first);
    for _ in 0..ROUNDS {
        let local = remote.local(what).await.map_err(blob_err)?;
        if local.is_complete() {
            return Ok(());
        }
        let held = local.local_bytes();
        let want = missing_of(&local);
        let holders = match asked.take() {
            Some(holders) => holders,
            None => holdings(ctx, hash, providers, author).await,
        };
        let requests: Vec<_> = share_out(&want, &holders, t.size.div_ceil(1024))
            .into_iter()
            .map(|(id, part)| {
                let request = DownloadRequest::new(
                    GetRequest::blob_ranges(hash, part),
                    Members(vec![id]),
                    SplitStrategy::None,
                );
                (Some(id), request)
            })
            .collect();
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

/// The chunks of a blob the store lacks.
async fn missing_ranges(
    ctx: &Transfers,
    hash: Hash,
) -> Result<iroh_blobs::protocol::ChunkRanges, Error> {
    let local = ctx
        .blobs
        .store
        .remote()
        .local(HashAndFormat::raw(hash))
        .await
        .map_err(blob_err)?;
    Ok(missing_of(&local))
}

/// The chunks of a blob that `local` (what the store holds of it) lacks.
fn missing_of(local: &iroh_blobs::api::remote::LocalInfo) -> iroh_blobs::protocol::ChunkRanges {
    local
        .missing()
        .ranges
        .iter()
        .next()
        .cloned()
        .unwrap_or_default()
}

/// Pauses a group download until a member who holds it is online (said once, not again at
/// each try), and says so as the error.
async fn wait_for_members(ctx: &Arc<Transfers>, t: &mut Transfer) -> Result<(), Error> {
    let why = "waiting for a member who has it to come online".to_string();
    if t.state != TransferState::Paused || t.error.as_deref() != Some(why.as_str()) {
        set_state(ctx, t, TransferState::Paused, Some(why.clone())).await?;
    }
    Err(Error::Network(why))
}

/// What each provider holds of a blob (asked with `observe`, each in turn; one that does not
/// answer within [`DIAL_TIMEOUT`] holds nothing), and whether it is the author.
async fn holdings(
    ctx: &Transfers,
    hash: Hash,
    providers: &[Contact],
    author: &ContactId,
) -> Vec<Holder> {
    use iroh_blobs::protocol::ObserveRequest;
    let remote = ctx.blobs.store.remote();
    let mut out = Vec::new();
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
        if let Ok(Some(b)) = tokio::time::timeout(DIAL_TIMEOUT, bitfield).await {
            out.push(Holder {
                id: c.id,
                author: c.id == *author,
                ranges: b.ranges,
            });
        }
    }
    out
}

/// A provider and what it holds of a blob.
#[derive(Debug, Clone)]
struct Holder {
    id: ContactId,
    author: bool,
    ranges: iroh_blobs::protocol::ChunkRanges,
}

/// Shares the `want`ed chunks of a blob of `chunks` chunks out among the holders, piece by
/// piece ([`PIECE_CHUNKS`]): each piece to the members who hold it, the one given the fewest
/// pieces first, the author only for what no other member holds. The last piece is open-ended,
/// so a blob longer than offered is asked for whole (and refused at the offer's size). Returns
/// each holder's ranges, in the holders' order, leaving out those given nothing.
fn share_out(
    want: &iroh_blobs::protocol::ChunkRanges,
    holders: &[Holder],
    chunks: u64,
) -> Vec<(ContactId, iroh_blobs::protocol::ChunkRanges)> {
    use iroh_blobs::protocol::{ChunkRanges, ChunkRangesExt};
    let mut given: Vec<(ChunkRanges, u64)> = vec![(ChunkRanges::empty(), 0); holders.len()];
    let mut start = 0;
    loop {
        let end = start + PIECE_CHUNKS;
        let piece_range = if end >= chunks {
            ChunkRanges::chunks(start..)
        } else {
            ChunkRanges::chunks(start..end)
        };
        let mut piece = want & &piece_range;
        let mut order: Vec<usize> = (0..holders.len()).collect();
        order.sort_by_key(|&i| (holders[i].author, given[i].1, i));
        for i in order {
            if piece.is_empty() {
                break;
            }
            let part = &piece & &holders[i].ranges;
            if part.is_empty() {
                continue;
            }
            piece = &piece - &part;
            given[i].0 |= part;
            given[i].1 += 1;
        }
        if end >= chunks {
            break;
        }
        start = end;
    }
    holders
        .iter()
        .zip(given)
        .filter(|(_, (ranges, _))| !ranges.is_empty())
        .map(|(h, (ranges, _))| (h.id, ranges))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use iroh_blobs::protocol::{ChunkRanges, ChunkRangesExt};

    fn id(n: u8) -> ContactId {
        iroh::SecretKey::from_bytes(&[n; 32]).public()
    }

    fn holder(n: u8, author: bool, ranges: ChunkRanges) -> Holder {
        Holder {
            id: id(n),
            author,
            ranges,
        }
    }

    fn given(out: &[(ContactId, ChunkRanges)], n: u8) -> ChunkRanges {
        out.iter()
            .find(|(c, _)| *c == id(n))
            .map(|(_, r)| r.clone())
            .unwrap_or_else(ChunkRanges::empty)
    }

    #[test]
    fn pieces_go_to_members_in_turn_and_to_the_author_only_for_the_rest() {
        // 4 MiB: two members hold it all, the author too.
        let all = ChunkRanges::all();
        let holders = [
            holder(1, true, all.clone()),
            holder(2, false, all.clone()),
            holder(3, false, all.clone()),
        ];
        let out = share_out(&all, &holders, 4096);
        assert!(given(&out, 1).is_empty(), "the author is spared");
        let (two, three) = (given(&out, 2), given(&out, 3));
        assert!(!two.is_empty() && !three.is_empty(), "both members send");
        assert!((&two & &three).is_empty(), "no chunk is asked twice");
        assert_eq!(&two | &three, all, "every chunk is asked");
    }

    #[test]
    fn a_member_holding_part_sends_that_part_and_the_author_the_rest() {
        // 3,000 chunks wanted; a member holds the first 1,100.
        let want = ChunkRanges::all();
        let part = ChunkRanges::chunks(0..1100);
        let holders = [
            holder(1, true, ChunkRanges::all()),
            holder(2, false, part.clone()),
            holder(3, false, ChunkRanges::empty()),
        ];
        let out = share_out(&want, &holders, 3000);
        assert_eq!(given(&out, 2), part);
        assert_eq!(given(&out, 1), ChunkRanges::chunks(1100..));
        assert_eq!(out.len(), 2, "a member holding nothing is not asked");
        // Nothing held by anyone: nothing asked.
        assert!(share_out(&want, &[holder(3, false, ChunkRanges::empty())], 3000).is_empty());
    }
}
