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
                        Ok(h) => ctx.blobs.access.allow(t.contact, h),
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

/// Fetches what is missing, then saves it. Interruptions leave the transfer `Paused`.
pub(super) async fn download(ctx: &Arc<Transfers>, mut t: Transfer) -> Result<(), Error> {
    let contact = ctx
        .store
        .contact(&t.contact)?
        .ok_or_else(|| Error::UnknownContact(t.contact.to_string()))?;
    let what = content(&t)?;
    let remote = ctx.blobs.store.remote();
    let local = remote.local(what).await.ok();
    let have = local.as_ref().map(|l| l.local_bytes()).unwrap_or(0);
    let fetched = if local.is_some_and(|l| l.is_complete()) {
        true
    } else {
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
                set_state(ctx, &mut t, TransferState::Paused, Some(why.clone())).await?;
                return Err(Error::Network(why));
            }
        };
        t.resumed_from = have;
        t.bytes_done = have;
        set_state(ctx, &mut t, TransferState::Transferring, None).await?;
        let mut progress = remote.fetch(conn.clone(), what).stream();
        let mut outcome = None;
        while let Some(item) = progress.next().await {
            match item {
                GetProgressItem::Progress(n) => {
                    let done = (have + n).min(t.size);
                    emit_progress(ctx, &t, done);
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
                set_state(ctx, &mut t, TransferState::Paused, Some(why.clone())).await?;
                return Err(Error::Network(why));
            }
            None => false,
        }
    };
    if !fetched {
        set_state(
            ctx,
            &mut t,
            TransferState::Paused,
            Some("interrupted".into()),
        )
        .await?;
        return Err(Error::Network("fetch ended early".into()));
    }
    let saved = match save(ctx, &t).await {
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
