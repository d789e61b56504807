//! Messaging, a feature: texts, read receipts and pairing's key confirmation, over the outbox
//! (sending) and the inbox (receiving). It knows no other feature.

use std::sync::{Arc, Weak};

use crate::bus::Events;
use crate::inbox::{received_message, BoxFuture, Handled, Incoming, PayloadHandler, PayloadKind};
use crate::model::{Contact, Event, Message, MessageId, MessageState};
use crate::outbox::Outbox;
use crate::store::{Changes, OutboxKind, Store};
use crate::wire::{Payload, MAX_TEXT};
use crate::Error;

/// The messaging feature: a cheap handle.
#[derive(Debug, Clone)]
pub(crate) struct Messaging(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    store: Store,
    outbox: Outbox,
    events: Events,
}

impl Messaging {
    pub(crate) fn new(store: Store, outbox: Outbox, events: Events) -> Messaging {
        Messaging(Arc::new(Inner {
            store,
            outbox,
            events,
        }))
    }

    /// The payload kinds messaging takes, for the inbox's table. The table holds a weak
    /// reference, so the inbox never keeps the feature (and through it the store) alive.
    pub(crate) fn handlers(&self) -> Vec<(PayloadKind, Arc<dyn PayloadHandler>)> {
        let h: Arc<dyn PayloadHandler> = Arc::new(Handler(Arc::downgrade(&self.0)));
        vec![
            (PayloadKind::Text, h.clone()),
            (PayloadKind::Read, h.clone()),
            (PayloadKind::PairConfirm, h),
        ]
    }

    /// Seals a text, stores it in the outbox and flushes before this returns; delivered in the
    /// background.
    pub(crate) async fn send_text(&self, contact: &Contact, text: &str) -> Result<Message, Error> {
        crate::outbox::check_text(text)?;
        let outbox = &self.0.outbox;
        let message = outbox.new_message(&contact.id, text.to_string(), None)?;
        let payload = Payload::Text {
            body: message.body.clone(),
            sent_at: message.sent_at,
        };
        outbox
            .queue(
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
        &self,
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
        self.0
            .outbox
            .queue_with(
                &contact.id,
                MessageId::random(),
                &payload,
                OutboxKind::Control,
                |store, session, receipt, plain| store.mark_seen(&unread, session, receipt, plain),
            )
            .await?;
        for m in page.iter_mut() {
            if m.state == MessageState::Received {
                m.state = MessageState::Seen;
            }
        }
        Ok(())
    }
}

/// Messaging's part of the inbox: texts, read receipts and pairing's key confirmation.
struct Handler(Weak<Inner>);

impl PayloadHandler for Handler {
    fn handle(&self, incoming: Incoming) -> BoxFuture<'_, Result<Handled, Error>> {
        Box::pin(async move {
            let feature = self.0.upgrade().ok_or(Error::Closed)?;
            let Incoming {
                from,
                id,
                conversation,
                payload,
            } = incoming;
            match payload {
                Payload::Text { body, sent_at } => {
                    if body.len() > MAX_TEXT {
                        return Err(Error::TooLong {
                            what: "message",
                            len: body.len(),
                            max: MAX_TEXT,
                        });
                    }
                    let message = received_message(
                        conversation,
                        &from,
                        id,
                        feature.store.next_seq()?,
                        body,
                        sent_at,
                        None,
                    );
                    let shown = message.clone();
                    Ok(Handled {
                        changes: Changes {
                            message: Some(message),
                            ..Changes::default()
                        },
                        after: Some(Box::new(move |_| {
                            Box::pin(async move {
                                feature.events.emit(Event::MessageReceived {
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
                                    feature.events.emit(Event::DeliveryChanged {
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
