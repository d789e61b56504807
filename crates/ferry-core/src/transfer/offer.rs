//! The transfer feature's part of the inbox: a contact's offers and its updates to a
//! transfer.

use super::*;

/// The transfer feature's part of the inbox: offers and the other side's updates.
struct Offers(Weak<Transfers>);

impl PayloadHandler for Offers {
    fn handle(&self, incoming: Incoming) -> BoxFuture<'_, Result<Handled, Error>> {
        Box::pin(async move {
            let ctx = self.0.upgrade().ok_or(Error::Closed)?;
            let Incoming {
                from,
                id,
                conversation,
                payload,
            } = incoming;
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
                    on_offer(&ctx, from, id, conversation, offer)
                }
                Payload::TransferUpdate {
                    transfer,
                    state,
                    reason,
                } => on_update(&ctx, &from.id, TransferId(transfer), state, reason),
                other => Err(Error::Protocol(format!("transfers cannot take {other:?}"))),
            }
        })
    }
}

/// The payload kinds the transfer feature takes, for the inbox's table.
pub(crate) fn handlers(ctx: &Arc<Transfers>) -> Vec<(PayloadKind, Arc<dyn PayloadHandler>)> {
    let h: Arc<dyn PayloadHandler> = Arc::new(Offers(Arc::downgrade(ctx)));
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
    ctx: &Arc<Transfers>,
    contact: Contact,
    message_id: MessageId,
    conversation: ConversationId,
    offer: Offer,
) -> Result<Handled, Error> {
    let files = offer.files as usize;
    if (offer.folder && (files == 0 || files > MAX_FOLDER_FILES)) || (!offer.folder && files != 1) {
        return Err(Error::Protocol(format!(
            "an offer of {} with {files} files",
            if offer.folder { "a folder" } else { "a file" }
        )));
    }
    // A transfer id already in use (sent again under a new message id, or chosen to collide)
    // is refused by the store, in the transaction that would store the offer.
    let pending = ctx.store.offers_waiting(&contact.id)?;
    if pending >= MAX_PENDING_OFFERS {
        return Err(Error::Quota(crate::Quota::PendingOffers(pending)));
    }
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
    let message = received_message(
        conversation,
        &contact,
        message_id,
        ctx.store.next_seq()?,
        name,
        now,
        Some(offer.id),
    );
    // Nothing is accepted automatically from a contact whose new key waits for the user.
    let cap = if ctx.store.key_changed(&contact.id)? {
        None
    } else {
        auto_accept_limit(ctx, &contact.id)?
    };
    let wanted = ctx.blobs.accept_all || cap.is_some_and(|cap| offer.size <= cap);
    // Files accepted automatically count against the contact's daily quota; over it, the
    // offer waits for the user.
    let today = ctx.store.stored_today(&contact.id)?;
    let within = today.saturating_add(offer.size) <= ctx.blobs.daily_bytes;
    let accept_now = wanted && within;
    let held_back = (wanted && !within).then_some(crate::Quota::DailyBytes(today));
    let (shown, ctx) = (message.clone(), ctx.clone());
    Ok(Handled {
        changes: Changes {
            message: Some(message),
            new_transfer: Some(t.clone()),
            stored_bytes: if accept_now { offer.size } else { 0 },
            ..Changes::default()
        },
        after: Some(Box::new(move |_| {
            Box::pin(async move {
                ctx.emit(Event::MessageReceived {
                    message: shown,
                    from: contact.name.clone(),
                });
                ctx.emit(Event::TransferOffered { transfer: t });
                if let Some(quota) = held_back {
                    ctx.emit(Event::Notice {
                        contact: contact.id,
                        name: contact.name.clone(),
                        text: format!(
                            "{} It waits for you to accept it.",
                            quota.notice(&contact.name)
                        ),
                    });
                }
                if accept_now {
                    let id = offer.id;
                    tokio::spawn(async move {
                        if let Err(e) = accept(&ctx, &id).await {
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
    ctx: &Arc<Transfers>,
    from: &ContactId,
    id: TransferId,
    state: TransferState,
    reason: Option<String>,
) -> Result<Handled, Error> {
    let Some(mut t) = ctx.store.transfer(&id)? else {
        return Ok(Handled::default());
    };
    if t.contact != *from || t.state.is_final() {
        return Ok(Handled::default());
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
        // Not a transfer's direction.
        Direction::System => false,
    };
    let next = if allowed {
        t.state.next(state).ok()
    } else {
        None
    };
    let Some(next) = next else {
        tracing::warn!(transfer = %id, ?state, "ignored an update that does not fit the transfer");
        return Ok(Handled::default());
    };
    t.state = next;
    t.error = reason;
    t.updated_at = now_ms();
    if state == TransferState::Done {
        t.bytes_done = t.size;
    }
    let ctx = ctx.clone();
    Ok(Handled {
        changes: Changes {
            transfers: vec![t.clone()],
            ..Changes::default()
        },
        after: Some(Box::new(move |_| {
            Box::pin(async move {
                if state.is_final() {
                    finish_locally(&ctx, &t).await;
                }
                ctx.emit(Event::TransferChanged { transfer: t });
            })
        })),
    })
}
