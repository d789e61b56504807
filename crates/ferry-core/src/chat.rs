//! The chat protocol (`ferry/chat/1`): sending, receiving, receipts, and the outbox that retries
//! until the contact has acknowledged.
//!
//! Each request runs on its own bidirectional stream of a long-lived connection (a "link"); both
//! sides of a link serve requests, so whoever dialled, either can deliver.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};

use crate::e2e::{AssociatedData, Session};
use crate::inbox::{BoxFuture, Handled, Incoming, Outcome, PayloadHandler, PayloadKind};
use crate::model::{
    now_ms, Contact, ContactId, Direction, Event, Message, MessageId, MessageState,
};
use crate::net::{self, REQUEST_TIMEOUT};
use crate::node::Engine;
use crate::store::{Changes, OutboxItem, OutboxKind};
use crate::wire::{self, ChatRequest, ChatResponse, Payload, MAX_TEXT};
use crate::Error;

/// The longest wait between two delivery attempts to an unreachable contact.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// When to try an unreachable contact again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    until: tokio::time::Instant,
    delay: Duration,
}

pub(crate) fn clear_backoff(engine: &Engine, id: &ContactId) {
    if let Ok(mut b) = engine.backoff.lock() {
        b.remove(id);
    }
}

fn back_off(engine: &Engine, id: &ContactId) {
    if let Ok(mut b) = engine.backoff.lock() {
        let delay = b
            .get(id)
            .map(|b| (b.delay * 2).min(MAX_BACKOFF))
            .unwrap_or(Duration::from_secs(1));
        b.insert(
            *id,
            Backoff {
                until: tokio::time::Instant::now() + delay,
                delay,
            },
        );
    }
}

/// The `ferry/chat/1` handler: refuses strangers, then serves the link.
#[derive(Debug, Clone)]
pub(crate) struct ChatProtocol(pub(crate) Arc<Engine>);

impl ProtocolHandler for ChatProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let remote = conn.remote_id();
        match self.0.store.contact(&remote) {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::info!(peer = %remote.fmt_short(), "refused chat from a stranger");
                conn.close(403u32.into(), b"not a contact");
                return Ok(());
            }
            Err(e) => {
                tracing::error!("store: {e}");
                conn.close(500u32.into(), b"internal error");
                return Ok(());
            }
        }
        net::register_link(&self.0, remote, conn.clone());
        // Keep the handler alive as long as the link, so the router shuts it down gracefully.
        conn.closed().await;
        Ok(())
    }
}

/// Sends one request on a new stream and waits for the answer.
pub(crate) async fn request(conn: &Connection, req: &ChatRequest) -> Result<ChatResponse, Error> {
    let run = async {
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| Error::Network(e.to_string()))?;
        wire::write_frame(&mut send, req)
            .await
            .map_err(|e| Error::Network(e.to_string()))?;
        send.finish().map_err(|e| Error::Network(e.to_string()))?;
        wire::read_frame::<_, ChatResponse>(&mut recv)
            .await
            .map_err(|e| Error::Protocol(e.to_string()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, run)
        .await
        .map_err(|_| Error::Network("no answer in time".into()))?
}

/// Serves requests on a link until it closes.
pub(crate) async fn serve_link(engine: &Arc<Engine>, from: ContactId, conn: &Connection) {
    loop {
        let (mut send, mut recv) = tokio::select! {
            _ = engine.cancel.cancelled() => return,
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(peer = %from.fmt_short(), "link closed: {e}");
                    return;
                }
            },
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            let req = match tokio::time::timeout(
                REQUEST_TIMEOUT,
                wire::read_frame::<_, ChatRequest>(&mut recv),
            )
            .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!(peer = %from.fmt_short(), "dropped a bad request: {e}");
                    return;
                }
                Err(_) => return,
            };
            let resp = handle(&engine, from, req).await;
            if let Err(e) = wire::write_frame(&mut send, &resp).await {
                tracing::debug!("answer not sent: {e}");
            }
            let _ = send.finish();
        });
    }
}

fn reject(reason: impl Into<String>, retry: bool) -> ChatResponse {
    ChatResponse::Reject {
        reason: reason.into(),
        retry,
    }
}

async fn handle(engine: &Arc<Engine>, from: ContactId, req: ChatRequest) -> ChatResponse {
    match req {
        ChatRequest::Ping => ChatResponse::Pong,
        ChatRequest::Announce(addr) => {
            if let Ok(Some(mut c)) = engine.store.contact(&from) {
                if c.addr != addr && (!addr.direct.is_empty() || addr.relay.is_some()) {
                    c.addr = addr;
                    if let Err(e) = engine.store.put_contact(&c) {
                        tracing::warn!("storing addresses: {e}");
                    }
                }
            }
            ChatResponse::Ack
        }
        ChatRequest::Deliver {
            message_id,
            envelope,
        } => match engine
            .inbox
            .deliver(from, MessageId(message_id), &envelope)
            .await
        {
            Outcome::Taken => ChatResponse::Ack,
            Outcome::RateLimited => {
                tracing::warn!(peer = %from.fmt_short(), "rate limited");
                reject("rate limited", true)
            }
            // A store or disk failure here is ours, not the sender's: let it try again.
            Outcome::Refused(e) if e.is_transient() => {
                tracing::warn!(peer = %from.fmt_short(), "could not take a delivery now: {e}");
                reject(e.to_string(), true)
            }
            Outcome::Refused(e) => {
                tracing::warn!(peer = %from.fmt_short(), "dropped a delivery: {e}");
                reject(e.to_string(), false)
            }
        },
    }
}

/// Messaging's part of the inbox: texts, read receipts and pairing's key confirmation.
struct Messaging(Weak<Engine>);

impl PayloadHandler for Messaging {
    fn handle(&self, incoming: Incoming) -> BoxFuture<'_, Result<Handled, Error>> {
        Box::pin(async move {
            let engine = self.0.upgrade().ok_or(Error::Closed)?;
            let Incoming { from, id, payload } = incoming;
            match payload {
                Payload::Text { body, sent_at } => {
                    if body.len() > MAX_TEXT {
                        return Err(Error::TooLong {
                            what: "message",
                            len: body.len(),
                            max: MAX_TEXT,
                        });
                    }
                    let message = Message {
                        id,
                        conversation: engine.conversation_with(&from.id),
                        contact: from.id,
                        seq: engine.store.next_seq()?,
                        direction: Direction::Incoming,
                        body,
                        sent_at,
                        stored_at: now_ms(),
                        state: MessageState::Received,
                        transfer: None,
                    };
                    let shown = message.clone();
                    Ok(Handled {
                        changes: Changes {
                            message: Some(message),
                            ..Changes::default()
                        },
                        after: Some(Box::new(move |_| {
                            Box::pin(async move {
                                engine.emit(Event::MessageReceived {
                                    message: shown,
                                    from: from.name,
                                });
                            })
                        })),
                    })
                }
                Payload::Read { ids } => {
                    let ids: Vec<MessageId> = ids.into_iter().map(MessageId).collect();
                    Ok(Handled {
                        changes: Changes {
                            read_receipt: Some((from.id, ids)),
                            ..Changes::default()
                        },
                        after: Some(Box::new(move |applied| {
                            Box::pin(async move {
                                for id in applied.read {
                                    engine.emit(Event::DeliveryChanged {
                                        id,
                                        contact: from.id,
                                        state: MessageState::Read,
                                    });
                                }
                            })
                        })),
                    })
                }
                // Key confirmation: the advanced session is all there is to keep.
                Payload::PairConfirm => Ok(Handled::default()),
                other => Err(Error::Protocol(format!("messaging cannot take {other:?}"))),
            }
        })
    }
}

/// The payload kinds messaging takes, for the inbox's table.
pub(crate) fn handlers(engine: &Arc<Engine>) -> Vec<(PayloadKind, Arc<dyn PayloadHandler>)> {
    let h: Arc<dyn PayloadHandler> = Arc::new(Messaging(Arc::downgrade(engine)));
    vec![
        (PayloadKind::Text, h.clone()),
        (PayloadKind::Read, h.clone()),
        (PayloadKind::PairConfirm, h),
    ]
}

/// Seals `payload` with the next key of the session with `contact`. The caller holds that
/// contact's session lock until it has stored the returned (advanced) session with the item.
fn seal_item(
    engine: &Engine,
    contact: &ContactId,
    id: MessageId,
    payload: &Payload,
    kind: OutboxKind,
) -> Result<(Session, OutboxItem), Error> {
    let plain = postcard::to_allocvec(payload)?;
    let mut session: Session = engine
        .store
        .session(contact)?
        .ok_or_else(|| Error::Protocol("no session with this contact".into()))?;
    let ad = AssociatedData {
        sender: *engine.id().as_bytes(),
        recipient: *contact.as_bytes(),
        message_id: id.0,
    };
    let envelope = session.seal(&plain, &ad)?;
    let item = OutboxItem {
        contact: *contact,
        message_id: id,
        envelope,
        kind,
        queued_at: now_ms(),
    };
    Ok((session, item))
}

pub(crate) async fn seal_and_queue(
    engine: &Arc<Engine>,
    contact: &ContactId,
    id: MessageId,
    payload: &Payload,
    kind: OutboxKind,
    message: Option<&Message>,
    transfer: Option<&crate::model::Transfer>,
) -> Result<(), Error> {
    {
        let _guard = engine.sessions.lock(contact).await;
        let (session, item) = seal_item(engine, contact, id, payload, kind)?;
        engine
            .store
            .queue_outgoing(&session, &item, message, transfer)?;
    }
    engine.store.flush().await?;
    engine.outbox_wake.notify_one();
    if let Some(message) = message {
        // Every front end shows it, whichever one sent it (app, CLI, control socket).
        engine.emit(Event::MessageSent {
            message: message.clone(),
            transfer: transfer.cloned(),
        });
    }
    Ok(())
}

/// A new outgoing message for the conversation with `contact`, queued until acknowledged.
pub(crate) fn outgoing_message(
    engine: &Engine,
    contact: &ContactId,
    body: String,
    transfer: Option<crate::model::TransferId>,
) -> Result<Message, Error> {
    let now = now_ms();
    Ok(Message {
        id: MessageId::random(),
        conversation: engine.conversation_with(contact),
        contact: *contact,
        seq: engine.store.next_seq()?,
        direction: Direction::Outgoing,
        body,
        sent_at: now,
        stored_at: now,
        state: MessageState::Queued,
        transfer,
    })
}

pub(crate) async fn send_text(
    engine: &Arc<Engine>,
    contact: &Contact,
    text: &str,
) -> Result<Message, Error> {
    if text.len() > MAX_TEXT {
        return Err(Error::TooLong {
            what: "message",
            len: text.len(),
            max: MAX_TEXT,
        });
    }
    if text.trim().is_empty() {
        return Err(Error::InvalidInput("the message is empty".into()));
    }
    let message = outgoing_message(engine, &contact.id, text.to_string(), None)?;
    let payload = Payload::Text {
        body: message.body.clone(),
        sent_at: message.sent_at,
    };
    seal_and_queue(
        engine,
        &contact.id,
        message.id,
        &payload,
        OutboxKind::Message,
        Some(&message),
        None,
    )
    .await?;
    Ok(message)
}

/// Marks the unread incoming messages of `page` seen and queues one read receipt.
pub(crate) async fn mark_seen(
    engine: &Arc<Engine>,
    contact: &Contact,
    page: &mut [Message],
) -> Result<(), Error> {
    let unread: Vec<Message> = page
        .iter()
        .filter(|m| m.state == MessageState::Received)
        .cloned()
        .collect();
    if unread.is_empty() {
        return Ok(());
    }
    let payload = Payload::Read {
        ids: unread.iter().map(|m| m.id.0).collect(),
    };
    {
        let _guard = engine.sessions.lock(&contact.id).await;
        let (session, receipt) = seal_item(
            engine,
            &contact.id,
            MessageId::random(),
            &payload,
            OutboxKind::Control,
        )?;
        engine.store.mark_seen(&unread, &session, &receipt)?;
    }
    engine.store.flush().await?;
    for m in page.iter_mut() {
        if m.state == MessageState::Received {
            m.state = MessageState::Seen;
        }
    }
    engine.outbox_wake.notify_one();
    Ok(())
}

/// Delivers a contact's queued items in order; stops at the first that does not go through.
async fn deliver_contact(engine: Arc<Engine>, id: ContactId, items: Vec<(u64, OutboxItem)>) {
    let contact = match engine.store.contact(&id) {
        Ok(Some(c)) => c,
        _ => {
            tracing::warn!(contact = %id.fmt_short(), "outbox items for an unknown contact");
            return;
        }
    };
    let conn = match net::link(&engine, &contact).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(contact = %id.fmt_short(), "not reachable: {e}");
            back_off(&engine, &id);
            net::update_presence(&engine, &id);
            return;
        }
    };
    for (seq, item) in items {
        let req = ChatRequest::Deliver {
            message_id: item.message_id.0,
            envelope: item.envelope.clone(),
        };
        match request(&conn, &req).await {
            Ok(ChatResponse::Ack) => {
                let changed = match engine.store.complete_delivery(seq, &item) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!("recording delivery: {e}");
                        return;
                    }
                };
                if let Err(e) = engine.store.flush().await {
                    tracing::error!("flush: {e}");
                }
                if changed {
                    engine.emit(Event::DeliveryChanged {
                        id: item.message_id,
                        contact: id,
                        state: MessageState::Delivered,
                    });
                }
            }
            Ok(ChatResponse::Reject {
                reason,
                retry: false,
            }) => {
                tracing::warn!(contact = %id.fmt_short(), "delivery refused for good: {reason}");
                let _ = engine.store.drop_outbox_item(seq);
                let _ = engine
                    .store
                    .set_message_state(&item.message_id, MessageState::Failed);
                let _ = engine.store.flush().await;
                // A receipt or transfer update has no message to show as failed.
                if item.kind == OutboxKind::Message {
                    engine.emit(Event::DeliveryChanged {
                        id: item.message_id,
                        contact: id,
                        state: MessageState::Failed,
                    });
                }
            }
            other => {
                tracing::debug!(contact = %id.fmt_short(), "delivery deferred: {other:?}");
                back_off(&engine, &id);
                return;
            }
        }
    }
    clear_backoff(&engine, &id);
}

/// The outbox worker: delivers whatever is queued, per contact in order, with backoff for
/// contacts that are not reachable; woken by new items and by contacts coming online.
pub(crate) async fn run_outbox(engine: Arc<Engine>) {
    loop {
        let wake = engine.outbox_wake.notified();
        let items = match engine.store.outbox() {
            Ok(i) => i,
            Err(e) => {
                tracing::error!("reading the outbox: {e}");
                Vec::new()
            }
        };
        let mut per_contact: BTreeMap<[u8; 32], Vec<(u64, OutboxItem)>> = BTreeMap::new();
        for (seq, item) in items {
            per_contact
                .entry(*item.contact.as_bytes())
                .or_default()
                .push((seq, item));
        }
        let now = tokio::time::Instant::now();
        let mut next: Option<tokio::time::Instant> = None;
        let mut set = tokio::task::JoinSet::new();
        for (_, items) in per_contact {
            let Some(id) = items.first().map(|(_, i)| i.contact) else {
                continue;
            };
            let until = engine
                .backoff
                .lock()
                .ok()
                .and_then(|b| b.get(&id).map(|b| b.until));
            match until {
                Some(t) if t > now => next = Some(next.map_or(t, |n| n.min(t))),
                _ => {
                    set.spawn(deliver_contact(engine.clone(), id, items));
                }
            }
        }
        let worked = !set.is_empty();
        tokio::select! {
            _ = engine.cancel.cancelled() => return,
            _ = async { while set.join_next().await.is_some() {} } => {}
        }
        engine.outbox_drained.notify_waiters();
        if worked {
            continue; // look again: new items or new backoffs
        }
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = engine.cancel.cancelled() => return,
            _ = wake => {}
            _ = sleep => {}
        }
    }
}
