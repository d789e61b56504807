//! Trust, a feature: the verified mark, blocking and unblocking, and removing a contact.
//!
//! A blocked contact is refused like a stranger on every protocol (chat, pairing, blobs):
//! nothing it sends is stored, acknowledged or notified, and nothing is sent to it. What waits
//! for it in the outbox is held, its downloads pause, and unblocking picks all of it up again.
//! Removing a contact deletes its records (optionally keeping the conversation's history);
//! pairing with the same person later starts afresh.

use crate::bus::{Bus, Events, Signal};
use crate::contacts::Roster;
use crate::model::{now_ms, Contact, ContactView, Event};
use crate::net::Links;
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
}

impl Trust {
    pub(crate) fn new(
        store: Store,
        links: Links,
        roster: Roster,
        events: Events,
        bus: Bus,
    ) -> Trust {
        Trust {
            store,
            links,
            roster,
            events,
            bus,
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
    pub(crate) async fn set_verified(
        &self,
        mut contact: Contact,
        verified: bool,
    ) -> Result<ContactView, Error> {
        if contact.verified != verified {
            contact.verified = verified;
            self.store.put_contact(&contact)?;
            self.store.flush().await?;
        }
        self.changed(&contact)
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
        if self.store.set_blocked(&contact.id, true, now_ms())? {
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
        // Refused everywhere first, so nothing of it arrives while its records go.
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
