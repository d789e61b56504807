//! This home's identity file: the keys of [`ferry_proto::keys`], owner-only on disk.

pub use ferry_proto::keys::*;

use std::io::Write;
use std::path::Path;

use crate::home::{restrict, IDENTITY_FILE};
use crate::Error;

/// Loads the identity of a home, if it has one.
pub fn load(home: &Path) -> Result<Option<Identity>, Error> {
    let path = home.join(IDENTITY_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => zeroize::Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
    };
    Identity::from_file_bytes(&bytes)
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))
}

/// Writes the identity, readable by the owner only; refuses to replace an existing one.
pub fn save_new(identity: &Identity, home: &Path) -> Result<(), Error> {
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
    fn identity_roundtrips_through_its_owner_only_file() {
        let dir = tempfile::tempdir().unwrap();
        let id = Identity::generate();
        save_new(&id, dir.path()).unwrap();
        let loaded = load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.id(), id.id());
        assert_eq!(loaded.x25519_public(), id.x25519_public());
        assert!(matches!(
            save_new(&id, dir.path()),
            Err(Error::AlreadyInitialized(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(IDENTITY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_identity_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        std::fs::write(dir.path().join(IDENTITY_FILE), b"\x07junk").unwrap();
        assert!(matches!(load(dir.path()), Err(Error::Corrupt(_))));
    }
}
