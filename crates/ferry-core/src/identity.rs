//! This home's identity: the keys of [`ferry_proto::keys`], sealed under the home's data key
//! in `identity.sealed`. A release before sealing kept them in clear in `identity.key`, which
//! the first open seals and then overwrites and removes.

pub use ferry_proto::keys::*;

use std::io::Write;
use std::path::Path;

use zeroize::Zeroizing;

use crate::home::{restrict, shred_file, write_atomic, IDENTITY_FILE, SEALED_IDENTITY_FILE};
use crate::vault::{self, DataKey, Passphrase};
use crate::Error;

/// What the sealed identity is bound to.
const IDENTITY_AAD: &[u8] = b"ferry/identity/1";

/// Loads the identity a release before sealing kept in clear, if the home has it.
pub fn load_plain(home: &Path) -> Result<Option<Identity>, Error> {
    let path = home.join(IDENTITY_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
    };
    Identity::from_file_bytes(&bytes)
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))
}

/// Loads the sealed identity, if the home has one.
pub(crate) fn load_sealed(home: &Path, key: &DataKey) -> Result<Option<Identity>, Error> {
    let path = home.join(SEALED_IDENTITY_FILE);
    let sealed = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
    };
    let bytes = key.open(IDENTITY_AAD, &sealed).ok_or_else(|| {
        Error::Corrupt(format!(
            "{} does not open: damaged, or sealed under another key",
            path.display()
        ))
    })?;
    Identity::from_file_bytes(&bytes)
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))
}

/// Writes the identity sealed under `key`, owner-only, atomically.
pub(crate) fn save_sealed(identity: &Identity, home: &Path, key: &DataKey) -> Result<(), Error> {
    let bytes = identity.to_file_bytes()?;
    write_atomic(
        &home.join(SEALED_IDENTITY_FILE),
        &key.seal(IDENTITY_AAD, &bytes),
    )
}

/// Seals the identity of a release before sealing: writes `identity.sealed`, then overwrites
/// and removes `identity.key`. Either file alone, or both, open again after a kill.
pub(crate) fn seal_plain(home: &Path, key: &DataKey) -> Result<Option<Identity>, Error> {
    if let Some(identity) = load_sealed(home, key)? {
        if home.join(IDENTITY_FILE).exists() {
            shred_file(&home.join(IDENTITY_FILE))?;
        }
        return Ok(Some(identity));
    }
    let Some(identity) = load_plain(home)? else {
        return Ok(None);
    };
    save_sealed(&identity, home, key)?;
    shred_file(&home.join(IDENTITY_FILE))?;
    Ok(Some(identity))
}

/// Unlocks a home: gets its data key back (or, for a home a release before sealing wrote,
/// makes one now, under `passphrase` if given) and loads its identity (sealing it now if it
/// was in clear). The store is sealed when it is opened with the key.
pub(crate) fn open_home(
    home: &Path,
    passphrase: Option<&Passphrase>,
) -> Result<(std::sync::Arc<DataKey>, Identity), Error> {
    if !crate::home::has_identity(home) {
        return Err(Error::NotInitialized(home.to_path_buf()));
    }
    let key = if vault::protection(home)?.is_none() {
        tracing::info!(
            "sealing a home written by an earlier release: {}",
            home.display()
        );
        vault::create(home, passphrase, false)?
    } else {
        vault::unlock(home, passphrase)?
    };
    let identity =
        seal_plain(home, &key)?.ok_or_else(|| Error::NotInitialized(home.to_path_buf()))?;
    Ok((std::sync::Arc::new(key), identity))
}

/// The identity of `home`, unlocked with `passphrase` if its data key is kept under one (tools
/// and tests; the home must not be open elsewhere if it is of a release before sealing, which
/// this seals).
pub fn load_identity(home: &Path, passphrase: Option<&Passphrase>) -> Result<Identity, Error> {
    Ok(open_home(home, passphrase)?.1)
}

/// Writes the identity in clear, as releases before sealing did (fixtures and tests of the
/// migration).
#[doc(hidden)]
pub fn save_plain(identity: &Identity, home: &Path) -> Result<(), Error> {
    let path = home.join(IDENTITY_FILE);
    let bytes = identity.to_file_bytes()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = options
        .open(&path)
        .and_then(|mut f| f.write_all(&bytes).and_then(|_| f.sync_all()));
    match result {
        Ok(()) => restrict(&path, 0o600),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(Error::AlreadyInitialized(home.to_path_buf()))
        }
        Err(e) => Err(Error::io(format!("writing {}", path.display()))(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_identity_is_sealed_then_removed_and_opens_only_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::generate();
        save_plain(&id, dir.path()).unwrap();
        assert!(crate::home::has_identity(dir.path()));
        let key = DataKey::generate();
        let sealed = seal_plain(dir.path(), &key).unwrap().unwrap();
        assert_eq!(sealed.id(), id.id());
        assert!(!dir.path().join(IDENTITY_FILE).exists());
        assert!(crate::home::has_identity(dir.path()));
        let again = load_sealed(dir.path(), &key).unwrap().unwrap();
        assert_eq!(again.x25519_public(), id.x25519_public());
        assert!(matches!(
            load_sealed(dir.path(), &DataKey::generate()),
            Err(Error::Corrupt(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SEALED_IDENTITY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_kill_between_sealing_and_removing_leaves_both_and_the_next_open_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::generate();
        let key = DataKey::generate();
        save_plain(&id, dir.path()).unwrap();
        save_sealed(&id, dir.path(), &key).unwrap();
        assert_eq!(seal_plain(dir.path(), &key).unwrap().unwrap().id(), id.id());
        assert!(!dir.path().join(IDENTITY_FILE).exists());
    }

    #[test]
    fn a_damaged_identity_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_plain(dir.path()).unwrap().is_none());
        std::fs::write(dir.path().join(IDENTITY_FILE), b"\x07junk").unwrap();
        assert!(matches!(load_plain(dir.path()), Err(Error::Corrupt(_))));
    }
}
