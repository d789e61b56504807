//! Who may fetch what: the blobs provider's events, intercepted, allow a hash only to the
//! contact it was offered to (get, get-many, observe; push disabled), and show the sender's
//! progress.

use super::*;

/// How often a request being served checks again that its contact is still admitted and its
/// transfer still live (a blocked contact's request stops within this).
const RECHECK_EVERY: Duration = Duration::from_millis(100);

/// Which hashes each contact may fetch, and who is behind each provider connection.
#[derive(Debug, Default)]
pub(crate) struct Access {
    conns: Mutex<HashMap<u64, ContactId>>,
    /// contact → hash → the transfers that offer it, and whether it is a folder's root for
    /// one of them (children may be requested with it). The same content offered twice stays
    /// allowed until the last of its transfers ends.
    allowed: Mutex<HashMap<ContactId, HashMap<Hash, Offered>>>,
}

/// One hash offered to one contact.
#[derive(Debug, Default)]
struct Offered {
    folder_root: bool,
    by: HashSet<TransferId>,
}

impl Access {
    pub(super) fn allow(
        &self,
        contact: ContactId,
        transfer: TransferId,
        hashes: impl IntoIterator<Item = (Hash, bool)>,
    ) {
        if let Ok(mut a) = self.allowed.lock() {
            let set = a.entry(contact).or_default();
            for (hash, folder_root) in hashes {
                let offered = set.entry(hash).or_default();
                offered.folder_root |= folder_root;
                offered.by.insert(transfer);
            }
        }
    }

    pub(super) fn revoke(&self, contact: &ContactId, transfer: &TransferId, hashes: &[Hash]) {
        if let Ok(mut a) = self.allowed.lock() {
            if let Some(set) = a.get_mut(contact) {
                for h in hashes {
                    if let Some(offered) = set.get_mut(h) {
                        offered.by.remove(transfer);
                        if offered.by.is_empty() {
                            set.remove(h);
                        }
                    }
                }
            }
        }
    }

    /// Forgets every grant to a contact, and its connections (it was removed).
    pub(super) fn revoke_all(&self, contact: &ContactId) {
        if let Ok(mut a) = self.allowed.lock() {
            a.remove(contact);
        }
        if let Ok(mut c) = self.conns.lock() {
            c.retain(|_, who| who != contact);
        }
    }

    pub(super) fn peer(&self, connection_id: u64) -> Option<ContactId> {
        self.conns.lock().ok()?.get(&connection_id).copied()
    }

    /// Whether `peer` may get `hash` with these ranges (`children` = asks for more than the root blob).
    pub(super) fn may_get(&self, peer: &ContactId, hash: &Hash, children: bool) -> bool {
        let Ok(a) = self.allowed.lock() else {
            return false;
        };
        match a.get(peer).and_then(|s| s.get(hash)) {
            Some(offered) => !children || offered.folder_root,
            None => false,
        }
    }
}

/// A debug-build-only fault injection: limits what the provider sends, so tests can interrupt
/// a transfer midway. Read from `FERRY_DEBUG_THROTTLE_BPS`; always off in release builds.
pub(super) fn throttle_bps_env() -> Option<u64> {
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

pub(super) async fn provider_events(
    ctx: Weak<Transfers>,
    mut rx: tokio::sync::mpsc::Receiver<ProviderMessage>,
) {
    let deny = Err(AbortReason::Permission);
    while let Some(msg) = rx.recv().await {
        let Some(ctx) = ctx.upgrade() else {
            return;
        };
        let access = ctx.blobs.access.clone();
        match msg {
            ProviderMessage::ClientConnected(msg) => {
                let contact = msg
                    .endpoint_id
                    .filter(|id| matches!(ctx.store.admitted(id), Ok(Some(_))));
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
                    matches!(ctx.store.admitted(&p), Ok(Some(_)))
                        && (access.may_get(&p, &msg.request.hash, !msg.request.ranges.is_blob())
                            || group_may_get(
                                &ctx,
                                &p,
                                &msg.request.hash,
                                !msg.request.ranges.is_blob(),
                            ))
                });
                if !ok {
                    tracing::warn!(?peer, hash = %msg.request.hash, "refused a get");
                    msg.tx.send(deny).await.ok();
                    continue;
                }
                let root = msg.request.hash;
                // The file was imported by reference: if it changed since the offer, its bytes
                // no longer match the hash. Say so, instead of letting the receiver fail on a
                // verification error it cannot explain.
                let changed = match peer {
                    Some(p) => changed_since_offered(&ctx, &p, &root).await,
                    None => None,
                };
                if let Some(t) = changed {
                    tracing::warn!(transfer = %t.id, "the offered file changed; not serving it");
                    msg.tx.send(deny).await.ok();
                    let ctx = ctx.clone();
                    tokio::spawn(async move { fail_changed(&ctx, t).await });
                    continue;
                }
                msg.tx.send(Ok(())).await.ok();
                let Some(peer) = peer else {
                    continue;
                };
                // Follow the request to show the sender's progress. The transfer is looked up
                // once (a scan of the records); it and the contact's admission are read again
                // at most every RECHECK_EVERY, not on each of the many updates a request makes:
                // per update, they took a sixth of the sender's CPU.
                let mut live = live_outgoing(&ctx, &peer, &root);
                let ctx = Arc::downgrade(&ctx);
                tokio::spawn(async move {
                    let mut done_before = 0u64;
                    let mut current = 0u64;
                    let mut checked = Instant::now();
                    while let Ok(Some(update)) = msg.rx.recv().await {
                        let Some(ctx) = ctx.upgrade() else {
                            return;
                        };
                        match update {
                            RequestUpdate::Started(_) => {
                                done_before = done_before.saturating_add(current);
                                current = 0;
                            }
                            RequestUpdate::Progress(p) => {
                                current = p.end_offset;
                                if checked.elapsed() >= RECHECK_EVERY {
                                    // Blocked or removed meanwhile: dropping the updates aborts
                                    // the request.
                                    if !matches!(ctx.store.admitted(&peer), Ok(Some(_))) {
                                        tracing::info!(peer = %peer.fmt_short(), "stopped serving a blocked contact");
                                        break;
                                    }
                                    live = live
                                        .and_then(|t| ctx.store.transfer(&t.id).ok().flatten())
                                        .filter(|t| !t.state.is_final());
                                    checked = Instant::now();
                                }
                                if let Some(t) = &live {
                                    let bytes = done_before.saturating_add(current);
                                    emit_progress(&ctx, t, bytes.min(t.size));
                                }
                            }
                            RequestUpdate::Completed(_) | RequestUpdate::Aborted(_) => break,
                        }
                    }
                });
            }
            ProviderMessage::GetManyRequestReceived(msg) => {
                let peer = access.peer(msg.connection_id);
                let ok = peer.is_some_and(|p| {
                    matches!(ctx.store.admitted(&p), Ok(Some(_)))
                        && msg
                            .request
                            .hashes
                            .iter()
                            .all(|h| access.may_get(&p, h, false))
                });
                msg.tx.send(if ok { Ok(()) } else { deny }).await.ok();
            }
            ProviderMessage::ObserveRequestReceived(msg) => {
                let peer = access.peer(msg.connection_id);
                let ok = peer.is_some_and(|p| {
                    matches!(ctx.store.admitted(&p), Ok(Some(_)))
                        && (access.may_get(&p, &msg.request.hash, false)
                            || group_may_get(&ctx, &p, &msg.request.hash, false))
                });
                msg.tx.send(if ok { Ok(()) } else { deny }).await.ok();
            }
            ProviderMessage::PushRequestReceived(msg) => {
                msg.tx.send(deny).await.ok();
            }
            ProviderMessage::Throttle(msg) => {
                let delay = ctx
                    .blobs
                    .throttle_bps
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

/// Why an offered file can no longer be sent.
pub(crate) const CHANGED_SINCE_OFFERED: &str =
    "the file changed after it was offered; send it again";

/// An outgoing transfer to `peer` whose source no longer is what was offered: the file, or
/// any file of the folder, gone, of another size, or modified after the offer.
async fn changed_since_offered(ctx: &Transfers, peer: &ContactId, root: &Hash) -> Option<Transfer> {
    let t = live_outgoing(ctx, peer, root).or_else(|| live_group_offer(ctx, root))?;
    let source = t.path.as_ref()?;
    let changed = if t.folder {
        folder_changed(ctx, &t, source, root).await
    } else {
        file_changed(source, t.size, t.created_at)
    };
    changed.then_some(t)
}

/// Whether a file is gone, of another size than `size`, or modified after `offered_at` (Unix
/// ms), with a second of slack for file systems with coarse timestamps.
fn file_changed(path: &Path, size: u64, offered_at: u64) -> bool {
    match std::fs::metadata(path) {
        Err(_) => true,
        Ok(meta) => {
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            meta.len() != size || modified_ms > offered_at.saturating_add(1000)
        }
    }
}

/// Whether any file of an offered folder changed (each is checked against the size the store
/// recorded for its hash). A collection the store cannot read counts as changed.
async fn folder_changed(ctx: &Transfers, t: &Transfer, dir: &Path, root: &Hash) -> bool {
    let Ok(collection) = Collection::load(*root, &*ctx.blobs.store).await else {
        return true;
    };
    for (rel, hash) in collection.iter() {
        let size = match ctx.blobs.store.blobs().status(*hash).await {
            Ok(BlobStatus::Complete { size }) => size,
            _ => return true,
        };
        // The names are this node's own (`walk`, when it offered the folder): relative, with
        // `/` between components. Anything else is not a file of this folder.
        let parts: Vec<&str> = rel.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return true;
        }
        let path = parts.iter().fold(dir.to_path_buf(), |p, c| p.join(c));
        if file_changed(&path, size, t.created_at) {
            return true;
        }
    }
    false
}

/// Ends a transfer whose source changed: failed here with the reason, cancelled with the same
/// reason for the receiver (the update a receiver of any release takes from its sender).
async fn fail_changed(ctx: &Arc<Transfers>, mut t: Transfer) {
    let why = CHANGED_SINCE_OFFERED.to_string();
    if let Err(e) = set_state(ctx, &mut t, TransferState::Failed, Some(why.clone())).await {
        tracing::warn!(transfer = %t.id, "marking a changed file failed: {e}");
        return;
    }
    ctx.emit(Event::TransferFailed {
        id: t.id,
        reason: why.clone(),
    });
    if let Err(e) = tell(ctx, &t, TransferState::Cancelled, Some(why)).await {
        tracing::warn!(transfer = %t.id, "telling the receiver: {e}");
    }
    finish_locally(ctx, &t).await;
}

/// The newest outgoing transfer of `root` to `peer` that is still under way.
fn live_outgoing(ctx: &Transfers, peer: &ContactId, root: &Hash) -> Option<Transfer> {
    let hex = root.to_hex().to_string();
    ctx.store.transfers().ok()?.into_iter().rev().find(|t| {
        t.direction == Direction::Outgoing
            && t.contact == *peer
            && t.hash == hex
            && !t.state.is_final()
    })
}

/// This home's own offer of `root` in a group, if it still stands.
fn live_group_offer(ctx: &Transfers, root: &Hash) -> Option<Transfer> {
    let hex = root.to_hex().to_string();
    ctx.store.transfers().ok()?.into_iter().rev().find(|t| {
        t.direction == Direction::Outgoing
            && t.hash == hex
            && !t.state.is_final()
            && in_group(ctx, &t.id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_content_offered_twice_stays_allowed_until_both_end() {
        let access = Access::default();
        let bob = iroh::SecretKey::from_bytes(&[1; 32]).public();
        let carol = iroh::SecretKey::from_bytes(&[2; 32]).public();
        let (h, first, second) = (
            Hash::new(b"photo"),
            TransferId::random(),
            TransferId::random(),
        );
        access.allow(bob, first, [(h, false)]);
        access.allow(bob, second, [(h, false)]);
        assert!(
            !access.may_get(&carol, &h, false),
            "only to whom it was offered"
        );
        access.revoke(&bob, &first, &[h]);
        assert!(
            access.may_get(&bob, &h, false),
            "the second offer still stands"
        );
        assert!(
            !access.may_get(&bob, &h, true),
            "a file's hash has no children"
        );
        access.revoke(&bob, &second, &[h]);
        assert!(!access.may_get(&bob, &h, false));
    }
}
