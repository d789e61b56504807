//! The roster, a service: finding a contact by what a user types, and the view of a contact
//! that front ends show (presence, safety number, unread and queued counts).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::identity::safety_number;
use crate::model::{Contact, ContactId, ContactView, ConversationId, TrustState};
use crate::net::Links;
use crate::store::Store;
use crate::Error;

/// Safety numbers by contact, with the contact key each was computed for.
type SafetyCache = Arc<Mutex<HashMap<ContactId, ([u8; 32], String)>>>;

/// The roster: a cheap handle. A view costs two counter reads and a presence lookup; the
/// safety number (1,025 rounds of hashing) is computed once per contact key.
#[derive(Debug, Clone)]
pub(crate) struct Roster {
    me: ContactId,
    my_x25519: [u8; 32],
    store: Store,
    links: Links,
    safety: SafetyCache,
}

impl Roster {
    pub(crate) fn new(me: ContactId, my_x25519: [u8; 32], store: Store, links: Links) -> Roster {
        Roster {
            me,
            my_x25519,
            store,
            links,
            safety: Arc::default(),
        }
    }

    /// The direct conversation with a contact.
    pub(crate) fn conversation_with(&self, contact: &ContactId) -> ConversationId {
        ConversationId::direct(&self.me, contact)
    }

    /// The 60-digit number both sides compare to verify each other.
    pub(crate) fn safety_number_with(&self, c: &Contact) -> String {
        let mut cache = match self.safety.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        match cache.get(&c.id) {
            Some((key, number)) if *key == c.x25519 => number.clone(),
            _ => {
                let number = safety_number((&self.me, &self.my_x25519), (&c.id, &c.x25519));
                cache.insert(c.id, (c.x25519, number.clone()));
                number
            }
        }
    }

    /// What a front end shows of a contact.
    pub(crate) fn view(&self, c: &Contact) -> Result<ContactView, Error> {
        let conv = self.conversation_with(&c.id);
        let state = if self.store.is_blocked(&c.id)? {
            TrustState::Blocked
        } else if c.verified {
            TrustState::Verified
        } else {
            TrustState::Unverified
        };
        Ok(ContactView {
            id: c.id,
            name: c.name.clone(),
            presence: self.links.presence_of(&c.id),
            safety_number: self.safety_number_with(c),
            verified: c.verified,
            state,
            key_changed: self.store.key_changed(&c.id)?,
            timer_secs: self.store.timer_secs(&c.id)?,
            unread: self.store.unread_count(&conv)?,
            queued: self.store.queued_count(&c.id)?,
        })
    }

    /// Finds a contact by display name (case-insensitive) or id prefix.
    pub(crate) fn resolve(&self, query: &str) -> Result<Contact, Error> {
        let q = query.trim();
        if q.is_empty() {
            return Err(Error::UnknownContact(query.into()));
        }
        let contacts = self.store.contacts()?;
        let lower = q.to_lowercase();
        let by_name: Vec<_> = contacts
            .iter()
            .filter(|c| c.name.to_lowercase() == lower)
            .collect();
        let found: Vec<_> = if by_name.is_empty() {
            contacts
                .iter()
                .filter(|c| c.id.to_string().starts_with(&lower))
                .collect()
        } else {
            by_name
        };
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(Error::UnknownContact(query.into())),
            many => Err(Error::AmbiguousContact {
                query: query.into(),
                candidates: many
                    .iter()
                    .map(|c| format!("{} ({})", c.name, c.id.fmt_short()))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}
