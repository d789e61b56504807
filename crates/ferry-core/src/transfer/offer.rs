//! The transfer feature's part of the inbox: a contact's offers and its updates to a
//! transfer.

use super::*;

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
