//! Ratchet sessions: one lock per contact around every load-advance-store of a session.

use std::collections::HashMap;
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
}

impl SessionLocks {
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
