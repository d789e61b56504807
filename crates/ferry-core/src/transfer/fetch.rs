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
        if t.state.is_final() || only.is_some_and(|c| *c != t.contact) {
            continue;
        }
        match t.direction {
            Direction::Outgoing => {
                if only.is_none() {
                    match offered_hashes(ctx, &t).await {
                        Ok(h) => ctx.blobs.access.allow(t.contact, t.id, h),
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
                        abort_fetch(ctx, &t.id);
                    }
                    start_download(ctx, t);
                }
            }
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
            && matches!(
                ctx.links.presence_of(&t.contact),
                crate::model::Presence::Online { .. }
            )
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

/// Fetches what the store does not have yet from the sender, verified as it arrives.
/// Interruptions leave the transfer `Paused` (and are the error).
async fn fetch(ctx: &Arc<Transfers>, contact: &Contact, t: &mut Transfer) -> Result<(), Error> {
    let what = content(t)?;
    let remote = ctx.blobs.store.remote();
    let have = remote
        .local(what)
        .await
        .map(|l| l.local_bytes())
        .unwrap_or(0);
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
    t.resumed_from = have;
    t.bytes_done = have;
    set_state(ctx, t, TransferState::Transferring, None).await?;
    let mut progress = remote.fetch(conn.clone(), what).stream();
    let mut outcome = None;
    while let Some(item) = progress.next().await {
        match item {
            GetProgressItem::Progress(n) => {
                let done = (have + n).min(t.size);
                emit_progress(ctx, t, done);
            }
            GetProgressItem::Done(_) => outcome = Some(Ok(())),
            GetProgressItem::Error(e) => outcome = Some(Err(e.to_string())),
        }
    }
    conn.close(0u32.into(), b"done");
    let why = match outcome {
        Some(Ok(())) => return Ok(()),
        Some(Err(why)) => {
            t.bytes_done = remote
                .local(what)
                .await
                .map(|l| l.local_bytes())
                .unwrap_or(0);
            why
        }
        None => "interrupted".into(),
    };
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
    let contact = ctx
        .store
        .contact(&t.contact)?
        .ok_or_else(|| Error::UnknownContact(t.contact.to_string()))?;
    let what = content(&t)?;
    let remote = ctx.blobs.store.remote();
    let mut forgotten = false;
    let saved = loop {
        let held = match remote.local(what).await {
            // Had before this transfer: saved from the store, and checked.
            Ok(l) if l.is_complete() => save(ctx, &t, true).await,
            // The store lists the content but cannot open its data: a saved copy it refers
            // to is gone.
            Err(e) if !forgotten => Err(blob_err(e)),
            _ => {
                fetch(ctx, &contact, &mut t).await?;
                break save(ctx, &t, false).await;
            }
        };
        match held {
            Ok(p) => break Ok(p),
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
