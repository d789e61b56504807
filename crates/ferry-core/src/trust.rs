//! Trust, a feature: the verified mark, blocking and unblocking, and removing a contact.
//!
//! A blocked contact is refused like a stranger on every protocol (chat, pairing, blobs):
//! nothing it sends is stored, acknowledged or notified, and nothing is sent to it. What waits
//! for it in the outbox is held, its downloads pause, and unblocking picks all of it up again.
//! Removing a contact deletes its records (optionally keeping the conversation's history);
//! pairing with the same person later starts afresh.

use std::sync::Arc;

use crate::bus::{Bus, Events, Signal};
use crate::contacts::Roster;
use crate::model::{now_ms, Contact, ContactView, Event};
use crate::net::Links;
use crate::sessions::SessionLocks;
use crate::store::Store;
use crate::Error;

/// The trust feature: what it uses, and nothing else.
#[derive(Debug, Clone)]
pub(crate) struct Trust {
    store: Store,
    links: Links,
    roster: Roster,
    events: Events,
    bus: Bus,
    /// Held while a contact is blocked or removed, so no send or delivery under way writes
    /// its session or messages back in between.
    sessions: Arc<SessionLocks>,
}

impl Trust {
    pub(crate) fn new(
        store: Store,
        links: Links,
        roster: Roster,
        events: Events,
        bus: Bus,
        sessions: Arc<SessionLocks>,
    ) -> Trust {
        Trust {
            store,
            links,
            roster,
            events,
            bus,
            sessions,
        }
    }

    fn changed(&self, contact: &Contact) -> Result<ContactView, Error> {
        let view = self.roster.view(contact)?;
        self.events.emit(Event::ContactChanged {
            contact: view.clone(),
        });
        Ok(view)
    }

    /// Marks a contact verified (after comparing safety numbers) or not.
    /// The mark is for the key the user compared (`contact`'s): if a pairing replaced it
    /// meanwhile, nothing is marked.
    pub(crate) async fn set_verified(
        &self,
        contact: Contact,
        verified: bool,
    ) -> Result<ContactView, Error> {
        let key = contact.x25519;
        let stored = self.store.update_contact(&contact.id, |c| {
            if c.x25519 == key {
                c.verified = verified;
            }
        })?;
        let stored = stored.ok_or_else(|| Error::UnknownContact(contact.name.clone()))?;
        self.store.flush().await?;
        self.changed(&stored)
    }

    /// Accepts a contact's changed identity key, if one waits: sending resumes (what waited
    /// goes out) and the conversation shows a line saying so.
    pub(crate) async fn accept_key(&self, contact: &Contact) -> Result<(), Error> {
        let line = format!("You accepted {}'s new safety number.", contact.name);
        let Some(line) = self.store.accept_key(&contact.id, &line, now_ms())? else {
            return Ok(());
        };
        self.store.flush().await?;
        tracing::info!(contact = %contact.id.fmt_short(), "new identity key accepted");
        self.events.emit(Event::MessageSent {
            message: line,
            transfer: None,
        });
        self.bus.emit(Signal::KeyAccepted(contact.id));
        self.changed(contact)?;
        Ok(())
    }

    /// Blocks a contact: durable before its link is closed and the features stop its work.
    pub(crate) async fn block(&self, contact: &Contact) -> Result<ContactView, Error> {
        let guard = self.sessions.lock(&contact.id).await;
        let blocked = self.store.set_blocked(&contact.id, true, now_ms())?;
        drop(guard);
        if blocked {
            self.store.flush().await?;
            tracing::info!(contact = %contact.id.fmt_short(), "blocked");
        }
        self.links.drop_link(&contact.id, b"refused");
        self.bus.emit(Signal::Blocked(contact.id));
        self.changed(contact)
    }

    /// Unblocks a contact: its conversation continues as it was, and what waited goes out.
    pub(crate) async fn unblock(&self, contact: &Contact) -> Result<ContactView, Error> {
        if self.store.set_blocked(&contact.id, false, now_ms())? {
            self.store.flush().await?;
            tracing::info!(contact = %contact.id.fmt_short(), "unblocked");
        }
        self.bus.emit(Signal::Unblocked(contact.id));
        self.links.dial_soon(contact.id);
        self.changed(contact)
    }

    /// Removes a contact with its session, outbox items, transfers and grants, and its history
    /// unless `keep_history`.
    pub(crate) async fn remove(&self, contact: &Contact, keep_history: bool) -> Result<(), Error> {
        // Refused everywhere first, so nothing of it arrives while its records go; and no send
        // or delivery under way interleaves with the removal.
        let _guard = self.sessions.lock(&contact.id).await;
        self.store.set_blocked(&contact.id, true, now_ms())?;
        self.links.drop_link(&contact.id, b"removed");
        self.bus.emit(Signal::Removing(contact.id));
        self.store.remove_contact(&contact.id, keep_history)?;
        self.store.flush().await?;
        tracing::info!(contact = %contact.id.fmt_short(), keep_history, "removed");
        self.events.emit(Event::ContactRemoved {
            contact: contact.id,
            name: contact.name.clone(),
        });
        Ok(())
    }
}
