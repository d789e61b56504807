//! Ratchet sessions: one lock per contact around every load-advance-store of a session, and
//! which contacts' sessions a reset can repair.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use crate::model::ContactId;

/// The locks that serialise each contact's session. Two sealings or openings with the same
/// contact would otherwise both start from the same stored state and one advance would be lost
/// (a reused message key, or a session the peer can no longer follow). Different contacts never
/// wait on each other.
#[derive(Debug, Default)]
pub(crate) struct SessionLocks {
    /// Guards only the map itself, for the instant of a lookup.
    locks: Mutex<HashMap<ContactId, Arc<tokio::sync::Mutex<()>>>>,
    /// Contacts whose session a reset cannot repair now: their release does not speak the
    /// reset protocol, or automatic resets with them gave up for a while. A payload from them
    /// that cannot be opened is refused for good instead of "send it again".
    no_reset: Mutex<HashSet<ContactId>>,
    /// This node answers session resets at all (`Config::resets`).
    resets_off: bool,
}

impl SessionLocks {
    /// The locks of a node that does (or, as releases before resets, does not) reset sessions.
    pub(crate) fn new(resets: bool) -> SessionLocks {
        SessionLocks {
            resets_off: !resets,
            ..SessionLocks::default()
        }
    }

    /// Whether this node resets sessions at all.
    pub(crate) fn resets_enabled(&self) -> bool {
        !self.resets_off
    }

    /// Waits for, then holds, the session of `contact` until the guard drops. Hold it from
    /// loading the session until the advanced one is stored.
    pub(crate) async fn lock(&self, contact: &ContactId) -> OwnedMutexGuard<()> {
        let lock = match self.locks.lock() {
            Ok(mut map) => map.entry(*contact).or_default().clone(),
            // A panic elsewhere poisoned the map: the entries are still whole.
            Err(poisoned) => poisoned.into_inner().entry(*contact).or_default().clone(),
        };
        lock.lock_owned().await
    }

    /// Whether a reset may repair the session with `contact` (so a payload that cannot be
    /// opened is worth sending again after it).
    pub(crate) fn resettable(&self, contact: &ContactId) -> bool {
        if self.resets_off {
            return false;
        }
        match self.no_reset.lock() {
            Ok(set) => !set.contains(contact),
            Err(poisoned) => !poisoned.into_inner().contains(contact),
        }
    }

    /// Records whether a reset may repair the session with `contact`.
    pub(crate) fn set_resettable(&self, contact: &ContactId, resettable: bool) {
        let mut set = match self.no_reset.lock() {
            Ok(set) => set,
            Err(poisoned) => poisoned.into_inner(),
        };
        if resettable {
            set.remove(contact);
        } else {
            set.insert(*contact);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(n: u8) -> ContactId {
        iroh::SecretKey::from_bytes(&[n; 32]).public()
    }

    #[tokio::test]
    async fn one_contact_waits_another_does_not() {
        let locks = Arc::new(SessionLocks::default());
        let held = locks.lock(&id(1)).await;
        // Another contact's session is free at once.
        tokio::time::timeout(Duration::from_secs(1), locks.lock(&id(2)))
            .await
            .unwrap();
        // The same contact's waits until the first guard goes.
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { drop(locks.lock(&id(1)).await) })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
