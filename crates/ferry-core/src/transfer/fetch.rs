//! Getting what was accepted: free-space checks, resumable verified fetches, restarts when the
//! sender comes back.

use super::*;

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
pub(super) fn check_space(
    ctx: &Transfers,
    t: &Transfer,
    have: u64,
    downloads: &Path,
) -> Result<(), Error> {
    let blob_dir = ctx.home.join(BLOBS_DIR);
    let missing = t.size.saturating_sub(have);
    let free = |p: &Path| fs4::available_space(p).map_err(Error::io(format!("{}", p.display())));
    let (blob_free, dl_free) = (free(&blob_dir)?, free(downloads)?);
    let short = if same_device(&blob_dir, downloads) {
        missing.saturating_add(t.size).saturating_sub(blob_free)
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

/// Resumes the transfers that were under way, and re-grants access to what is still offered.
///
/// At start (`only` = None) every accepted download starts. When a contact comes online again
/// (`only` = that contact, a new connection: it may have restarted) its downloads restart on a
/// fresh connection, since the old one may be dead without knowing it yet.
pub(crate) async fn resume(ctx: &Arc<Transfers>, only: Option<&ContactId>) {
    let Ok(all) = ctx.store.transfers() else {
        return;
    };
    for t in all {
        if t.state.is_final() {
            continue;
        }
        let group = in_group(ctx, &t.id);
        match t.direction {
            Direction::Outgoing => {
                if only.is_none() && !group {
                    match offered_hashes(ctx, &t).await {
                        Ok(h) => ctx.blobs.access.allow(t.contact, t.id, h),
                        Err(e) => tracing::warn!(transfer = %t.id, "cannot serve: {e}"),
                    }
                }
            }
            Direction::Incoming => {
                if !matches!(
                    t.state,
                    TransferState::Accepted | TransferState::Transferring | TransferState::Paused
                ) {
                    continue;
                }
                match only {
                    None => start_download(ctx, t),
                    Some(c) if *c == t.contact && !group => {
                        abort_fetch(ctx, &t.id);
                        start_download(ctx, t);
                    }
                    // A group file comes from any member: one that came online may have it.
                    Some(_) if group && t.state == TransferState::Paused => start_download(ctx, t),
                    Some(_) => {}
                }
            }
            // Not a transfer's direction.
            Direction::System => {}
        }
    }
}

/// Retries paused downloads whose sender is online (called periodically).
pub(crate) fn retry_paused(ctx: &Arc<Transfers>) {
    let Ok(all) = ctx.store.transfers() else {
        return;
    };
    for t in all {
        if t.direction == Direction::Incoming
            && t.state == TransferState::Paused
            && (matches!(
                ctx.links.presence_of(&t.contact),
                crate::model::Presence::Online { .. }
            ) || group_can_resume(ctx, &t.id))
        {
            start_download(ctx, t);
        }
    }
}

/// Stops a fetch in progress (not a save in progress).
pub(super) fn abort_fetch(ctx: &Transfers, id: &TransferId) {
    let saving = ctx
        .blobs
        .saving
        .lock()
        .map(|s| s.contains(id))
        .unwrap_or(true);
    if saving {
        return;
    }
    if let Ok(mut running) = ctx.blobs.running.lock() {
        if let Some(h) = running.remove(id) {
            h.abort();
        }
    }
}

pub(super) fn start_download(ctx: &Arc<Transfers>, t: Transfer) {
    let Ok(mut running) = ctx.blobs.running.lock() else {
        return;
    };
    if running.get(&t.id).is_some_and(|h| !h.is_finished()) {
        return;
    }
    let id = t.id;
    let task_ctx = ctx.clone();
    let handle = tokio::spawn(async move {
        let ctx = task_ctx;
        let result = download(&ctx, t).await;
        if let Err(e) = result {
            tracing::info!(transfer = %id, "transfer interrupted: {e}");
        }
    });
    running.insert(id, handle.abort_handle());
}

/// How a fetch that did not complete ended.
enum Stopped {
    /// The sender's content is not what it offered: fail the transfer.
    Lie(String),
    /// The connection or the stream broke: pause and try again later.
    Broken(String),
}

/// Fetches what the local store lacks of `what` over `conn`, verified as it arrives, and stops
/// as soon as the bytes held (`have` before, plus what arrives) would exceed `cap`: a sender
/// cannot make this node store more than it offered. `progress` sees the bytes held.
async fn fetch_capped(
    ctx: &Transfers,
    conn: &iroh::endpoint::Connection,
    what: HashAndFormat,
    have: u64,
    cap: u64,
    mut progress: impl FnMut(u64),
) -> Result<(), Stopped> {
    let mut stream = ctx.blobs.store.remote().fetch(conn.clone(), what).stream();
    while let Some(item) = stream.next().await {
        match item {
            GetProgressItem::Progress(n) => {
                let held = have.saturating_add(n);
                if held > cap {
                    return Err(Stopped::Lie(format!(
                        "the sender sent more than it offered ({held} bytes, offered {cap}); \
                         stopped"
                    )));
                }
                progress(held);
            }
            GetProgressItem::Done(_) => return Ok(()),
            GetProgressItem::Error(e) => return Err(Stopped::Broken(e.to_string())),
        }
    }
    Err(Stopped::Broken("interrupted".into()))
}

/// Reads, from verified data and before the content itself is fetched, how much the sender's
/// content really holds, and refuses it unless that is what it offered: the exact size of a
/// file; the number of files of a folder (and so the size of its list of hashes), with its
/// list of names bounded. Returns the most bytes the whole fetch may store.
async fn probe(
    ctx: &Transfers,
    conn: &iroh::endpoint::Connection,
    t: &Transfer,
) -> Result<u64, Stopped> {
    let root = hash_of(t).map_err(|e| Stopped::Broken(e.to_string()))?;
    if !t.folder {
        let (size, _) = iroh_blobs::get::request::get_verified_size(conn, &root)
            .await
            .map_err(|e| Stopped::Broken(e.to_string()))?;
        return if size == t.size {
            Ok(size)
        } else {
            Err(Stopped::Lie(mismatch(t, "bytes", t.size, size)))
        };
    }
    // A folder: its list of hashes (one per file, after the list of names) is fetched first,
    // no bigger than the most files a folder may have.
    let have = local_bytes(ctx, HashAndFormat::raw(root)).await;
    fetch_capped(
        ctx,
        conn,
        HashAndFormat::raw(root),
        have,
        MAX_FOLDER_LIST,
        |_| {},
    )
    .await?;
    let (list, names) = folder_list(ctx, t, root).await.map_err(|e| match e {
        Error::Protocol(why) => Stopped::Lie(why),
        other => Stopped::Broken(other.to_string()),
    })?;
    let names_size = names_size(conn, root, names)
        .await
        .map_err(|e| Stopped::Broken(format!("reading the folder's list of names: {e}")))?;
    if names_size > MAX_FOLDER_LISTING {
        return Err(Stopped::Lie(format!(
            "the folder's list of names is {names_size} bytes, more than the {MAX_FOLDER_LISTING} \
             a folder may have"
        )));
    }
    Ok(t.size
        .saturating_add(list.len() as u64 * 32)
        .saturating_add(names_size))
}

/// The verified size of a folder's list of names (the collection's first child), asked as
/// part of the folder (the sender lets a contact ask for it only that way): the last chunk
/// group of the first child, and nothing of the root.
async fn names_size(
    conn: &iroh::endpoint::Connection,
    root: Hash,
    names: Hash,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    use iroh_blobs::get::fsm;
    use iroh_blobs::protocol::{ChunkRanges, ChunkRangesExt, ChunkRangesSeq, GetRequest};
    let request = GetRequest::new(
        root,
        ChunkRangesSeq::from_ranges([ChunkRanges::empty(), ChunkRanges::last_chunk()]),
    );
    let connected = fsm::start(conn.clone(), request, Default::default())
        .next()
        .await?;
    let fsm::ConnectedNext::StartChild(child) = connected.next().await? else {
        return Err("the sender did not answer with the list of names".into());
    };
    let (content, size) = child.next(names).next().await?;
    // Draining checks the last chunk against the hash, which is what makes the size true.
    let closing = match content.drain().await?.next() {
        fsm::EndBlobNext::Closing(closing) => closing,
        fsm::EndBlobNext::MoreChildren(more) => more.finish(),
    };
    closing.next().await?;
    Ok(size)
}

/// The longest list of hashes a folder of [`MAX_FOLDER_FILES`] files has (its list of names
/// first, then one hash per file).
pub(super) const MAX_FOLDER_LIST: u64 = (MAX_FOLDER_FILES as u64 + 1) * 32;

/// Reads a folder's list of hashes from the store and checks it holds the offered number of
/// files (at most [`MAX_FOLDER_FILES`]). Returns it and the hash of its list of names. A list
/// that is not what was offered is an [`Error::Protocol`].
async fn folder_list(
    ctx: &Transfers,
    t: &Transfer,
    root: Hash,
) -> Result<(iroh_blobs::hashseq::HashSeq, Hash), Error> {
    let bytes = ctx
        .blobs
        .store
        .blobs()
        .get_bytes(root)
        .await
        .map_err(blob_err)?;
    let list = iroh_blobs::hashseq::HashSeq::try_from(bytes)
        .map_err(|e| Error::Protocol(format!("the folder's list of files is malformed: {e}")))?;
    let files = list.len().saturating_sub(1);
    if files > MAX_FOLDER_FILES || files as u64 != u64::from(t.files) {
        return Err(Error::Protocol(mismatch(
            t,
            "files",
            t.files.into(),
            files as u64,
        )));
    }
    let names = list
        .get(0)
        .ok_or_else(|| Error::Protocol("the folder has no list of names".into()))?;
    Ok((list, names))
}

fn mismatch(t: &Transfer, what: &str, offered: u64, real: u64) -> String {
    format!(
        "{} is not what the sender offered: it holds {real} {what}, the offer said {offered}; \
         nothing was saved",
        t.name
    )
}

/// The bytes of `what` the local store holds (0 if it cannot say).
pub(super) async fn local_bytes(ctx: &Transfers, what: HashAndFormat) -> u64 {
    ctx.blobs
        .store
        .remote()
        .local(what)
        .await
        .map(|l| l.local_bytes())
        .unwrap_or(0)
}

/// Checks, before anything is saved, that what the store holds is what was offered: a file of
/// exactly the offered size, or a folder with the offered number of entries (at most
/// [`MAX_FOLDER_FILES`]) whose sizes, each entry counted, add up to the offered size. The
/// content may have been in the store before this transfer, so nothing here trusts the offer.
async fn check_content(ctx: &Transfers, t: &Transfer) -> Result<(), Error> {
    let root = hash_of(t)?;
    let size_of = |hash: Hash| async move {
        match ctx.blobs.store.blobs().status(hash).await {
            Ok(BlobStatus::Complete { size }) => Ok(size),
            Ok(_) => Err(Error::Protocol(format!(
                "{} is incomplete",
                hash.fmt_short()
            ))),
            Err(e) => Err(blob_err(e)),
        }
    };
    if !t.folder {
        let size = size_of(root).await?;
        return match size == t.size {
            true => Ok(()),
            false => Err(Error::Protocol(mismatch(t, "bytes", t.size, size))),
        };
    }
    let list_size = size_of(root).await?;
    if list_size > MAX_FOLDER_LIST {
        let files = (list_size / 32).saturating_sub(1);
        return Err(Error::Protocol(mismatch(t, "files", t.files.into(), files)));
    }
    let (list, names) = folder_list(ctx, t, root).await?;
    if size_of(names).await? > MAX_FOLDER_LISTING {
        return Err(Error::Protocol(
            "the folder's list of names is too long".into(),
        ));
    }
    let mut total = 0u64;
    for hash in list.into_iter().skip(1) {
        total = total.saturating_add(size_of(hash).await?);
        if total > t.size {
            break;
        }
    }
    match total == t.size {
        true => Ok(()),
        false => Err(Error::Protocol(mismatch(t, "bytes", t.size, total))),
    }
}

/// Saves content the store holds once [`check_content`] finds it is what was offered.
async fn checked_save(ctx: &Transfers, t: &Transfer, recheck: bool) -> Result<PathBuf, Error> {
    check_content(ctx, t).await?;
    save(ctx, t, recheck).await
}

/// Fetches what the store does not have yet from the sender, verified as it arrives, after
/// checking from verified data that the content is what was offered and that there is room
/// for it. An interruption leaves the transfer `Paused` (and is the error); content that is
/// not what was offered is an [`Error::Protocol`], for the caller to fail the transfer.
async fn fetch(ctx: &Arc<Transfers>, contact: &Contact, t: &mut Transfer) -> Result<(), Error> {
    let what = content(t)?;
    let conn = tokio::time::timeout(
        DIAL_TIMEOUT,
        ctx.links
            .endpoint()
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
            set_state(ctx, t, TransferState::Paused, Some(why.clone())).await?;
            return Err(Error::Network(why));
        }
    };
    let fetched = async {
        let cap = probe(ctx, &conn, t).await?;
        let have = local_bytes(ctx, what).await;
        // The space check at accept used the offer's size; now that is the real size, and the
        // disk may have filled since.
        let downloads = downloads_dir(ctx).map_err(|e| Stopped::Broken(e.to_string()))?;
        check_space(ctx, t, have, &downloads).map_err(|e| Stopped::Broken(e.to_string()))?;
        t.resumed_from = have;
        t.bytes_done = have;
        set_state(ctx, t, TransferState::Transferring, None)
            .await
            .map_err(|e| Stopped::Broken(e.to_string()))?;
        let size = t.size;
        let shown = t.clone();
        fetch_capped(ctx, &conn, what, have, cap, |held| {
            emit_progress(ctx, &shown, held.min(size))
        })
        .await
    }
    .await;
    conn.close(0u32.into(), b"done");
    let why = match fetched {
        Ok(()) => return Ok(()),
        Err(Stopped::Lie(why)) => {
            tracing::warn!(transfer = %t.id, "refused the sender's content: {why}");
            return Err(Error::Protocol(why));
        }
        Err(Stopped::Broken(why)) => why,
    };
    t.bytes_done = local_bytes(ctx, what).await;
    set_state(ctx, t, TransferState::Paused, Some(why.clone())).await?;
    Err(Error::Network(why))
}

/// Makes the blob store forget content whose data is no longer what it was (a saved copy it
/// refers to was deleted or changed): this transfer lets go of it, the store's garbage
/// collection drops it (nothing else may hold it), and it is protected again for the fetch.
async fn forget(ctx: &Arc<Transfers>, t: &mut Transfer) -> Result<(), Error> {
    let what = content(t)?;
    if t.state != TransferState::Transferring {
        t.bytes_done = 0;
        set_state(ctx, t, TransferState::Transferring, None).await?;
    }
    let tags = ctx.blobs.store.tags();
    tags.delete(tag_name(t)).await.map_err(blob_err)?;
    let deadline = Instant::now() + ctx.blobs.gc_interval * 3 + Duration::from_secs(5);
    let gone = loop {
        match ctx.blobs.store.blobs().status(what.hash).await {
            Ok(BlobStatus::NotFound) => break true,
            _ if Instant::now() >= deadline => break false,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    tags.set(tag_name(t), what).await.map_err(blob_err)?;
    if gone {
        Ok(())
    } else {
        Err(Error::InvalidInput(
            "the copy of this content received before is gone or changed, and the blob store \
             still holds it for another transfer; try again once that one has finished"
                .into(),
        ))
    }
}

/// Fetches what is missing, then saves it. Interruptions leave the transfer `Paused`.
///
/// Content the store had before (received earlier, or offered by this node) is saved from
/// there and hashed again. If that copy is gone or was changed since, the store is made to
/// forget it and the content is fetched again, once.
pub(super) async fn download(ctx: &Arc<Transfers>, mut t: Transfer) -> Result<(), Error> {
    let group = ctx.store.group_file(&t.id)?;
    // A blocked contact's downloads wait until it is unblocked. A group file's author need not
    // be a contact (it comes from the members), but a blocked one's files wait too.
    let contact = match &group {
        None => Some(
            ctx.store
                .admitted(&t.contact)?
                .ok_or_else(|| Error::UnknownContact(t.contact.to_string()))?,
        ),
        Some(_) if ctx.store.is_blocked(&t.contact)? => {
            return Err(Error::Blocked(t.contact.fmt_short().to_string()))
        }
        Some(gf) => {
            let me = ctx.links.endpoint().id();
            let member = ctx
                .store
                .group(&gf.group)?
                .is_some_and(|r| r.state.members.contains_key(me.as_bytes()));
            if !member {
                let why = "you are no longer in the group".to_string();
                set_state(ctx, &mut t, TransferState::Failed, Some(why.clone())).await?;
                ctx.emit(Event::TransferFailed {
                    id: t.id,
                    reason: why.clone(),
                });
                return Err(Error::InvalidInput(why));
            }
            None
        }
    };
    let what = content(&t)?;
    let remote = ctx.blobs.store.remote();
    let mut forgotten = false;
    let saved = loop {
        let held = match remote.local(what).await {
            // Had before this transfer: checked against the offer, saved from the store, and
            // hashed again.
            Ok(l) if l.is_complete() => checked_save(ctx, &t, true).await,
            // The store lists the content but cannot open its data: a saved copy it refers
            // to is gone.
            Err(e) if !forgotten => Err(blob_err(e)),
            _ => {
                let fetched = match (&contact, &group) {
                    (Some(contact), _) => fetch(ctx, contact, &mut t).await,
                    (None, Some(gf)) => fetch_group(ctx, &mut t, gf).await,
                    (None, None) => Err(Error::UnknownContact(t.contact.to_string())),
                };
                match fetched {
                    Ok(()) => {}
                    // Not what was offered: the transfer fails, below.
                    Err(e @ Error::Protocol(_)) => break Err(e),
                    Err(e) => return Err(e),
                }
                break checked_save(ctx, &t, false).await;
            }
        };
        match held {
            Ok(p) => break Ok(p),
            Err(e @ Error::Protocol(_)) => break Err(e),
            Err(e) if !forgotten => {
                tracing::info!(transfer = %t.id, "the copy held before cannot be used ({e}); fetching it again");
                forgotten = true;
                if let Err(why) = forget(ctx, &mut t).await {
                    break Err(why);
                }
            }
            Err(e) => break Err(e),
        }
    };
    let saved = match saved {
        Ok(p) => p,
        Err(e) => {
            let why = e.to_string();
            set_state(ctx, &mut t, TransferState::Failed, Some(why.clone())).await?;
            ctx.emit(Event::TransferFailed {
                id: t.id,
                reason: why.clone(),
            });
            tell(ctx, &t, TransferState::Failed, Some(why)).await?;
            return Err(e);
        }
    };
    t.bytes_done = t.size;
    t.path = Some(saved.clone());
    set_state(ctx, &mut t, TransferState::Done, None).await?;
    ctx.emit(Event::TransferCompleted {
        id: t.id,
        path: saved,
    });
    tell(ctx, &t, TransferState::Done, None).await?;
    finish_locally(ctx, &t).await;
    Ok(())
}
