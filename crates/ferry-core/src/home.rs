//! The home folder: where one identity, its store and its control socket live, and the lock
//! that makes one process its holder.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::Error;

/// The lock file's name inside a home.
pub const LOCK_FILE: &str = "ferry.lock";
/// The identity file of releases before sealing (in clear) inside a home.
pub const IDENTITY_FILE: &str = "identity.key";
/// The sealed identity file's name inside a home.
pub const SEALED_IDENTITY_FILE: &str = "identity.sealed";
/// The store folder's name inside a home.
pub const STORE_DIR: &str = "store";
/// The control socket's name inside a home (Unix).
pub const CONTROL_SOCKET: &str = "control.sock";

/// The platform's data folder for Ferry: `$FERRY_HOME` if set, else e.g.
/// `~/.local/share/ferry` on Linux, `~/Library/Application Support/ferry` on macOS,
/// `%APPDATA%\ferry` on Windows. Every front end uses this one.
pub fn default_home() -> Result<PathBuf, Error> {
    if let Some(home) = std::env::var_os("FERRY_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(home));
    }
    dirs::data_dir()
        .map(|d| d.join("ferry"))
        .ok_or(Error::NoHome)
}

/// Creates the home folder with owner-only permissions if it does not exist.
pub(crate) fn ensure_dir(home: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(home).map_err(Error::io(format!("creating {}", home.display())))?;
    restrict(home, 0o700)
}

/// Sets Unix permission bits (no-op elsewhere, where the per-user data folder is already private).
pub(crate) fn restrict(path: &Path, mode: u32) -> Result<(), Error> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(Error::io(format!("restricting {}", path.display())))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Creates (or truncates) a file readable by its owner only.
pub(crate) fn create_private(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Writes `bytes` to `path` owner-only and atomically: a temporary file, synced, renamed over
/// it, and the folder synced, so a crash leaves the old file or the new one, never half.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let written =
        create_private(&tmp).and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()));
    written.map_err(Error::io(format!("writing {}", tmp.display())))?;
    restrict(&tmp, 0o600)?;
    std::fs::rename(&tmp, path).map_err(Error::io(format!("replacing {}", path.display())))?;
    sync_dir(dir);
    Ok(())
}

/// Makes a rename or removal in `dir` durable (Unix; elsewhere renames are already so).
pub(crate) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!("syncing {}: {e}", dir.display());
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Whether `home` has an identity, sealed or (from a release before sealing) in clear.
pub fn has_identity(home: &Path) -> bool {
    home.join(SEALED_IDENTITY_FILE).exists() || home.join(IDENTITY_FILE).exists()
}

/// Overwrites a file with zeros, syncs it and removes it: what was in clear leaves the file
/// system's live blocks (best effort: copy-on-write file systems and SSDs may keep old blocks).
pub(crate) fn shred_file(path: &Path) -> Result<(), Error> {
    let len = std::fs::metadata(path)
        .map_err(Error::io(format!("reading {}", path.display())))?
        .len();
    let zeroed = OpenOptions::new().write(true).open(path).and_then(|mut f| {
        let zeros = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    });
    zeroed.map_err(Error::io(format!("overwriting {}", path.display())))?;
    std::fs::remove_file(path).map_err(Error::io(format!("removing {}", path.display())))
}

/// [`shred_file`] for every file under `dir`, then removes it.
pub(crate) fn shred_dir(dir: &Path) -> Result<(), Error> {
    let entries =
        std::fs::read_dir(dir).map_err(Error::io(format!("reading {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("reading {}", dir.display())))?;
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => shred_dir(&path)?,
            Ok(t) if t.is_file() => shred_file(&path)?,
            _ => std::fs::remove_file(&path)
                .map_err(Error::io(format!("removing {}", path.display())))?,
        }
    }
    std::fs::remove_dir(dir).map_err(Error::io(format!("removing {}", dir.display())))
}

/// The exclusive hold on a home, released when dropped (the OS releases it if the process dies).
#[derive(Debug)]
pub struct HomeLock {
    file: File,
    path: PathBuf,
}

impl HomeLock {
    /// Takes the home's lock or says which process holds it.
    pub fn acquire(home: &Path) -> Result<Self, Error> {
        ensure_dir(home)?;
        let path = home.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io(format!("opening {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(Error::HomeBusy {
                    home: home.to_path_buf(),
                    pid: text.trim().parse().unwrap_or(0),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()))(e))
            }
        }
        let pid = std::process::id().to_string();
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(pid.as_bytes()))
            .and_then(|_| file.sync_all())
            .map_err(Error::io(format!("writing {}", path.display())))?;
        Ok(HomeLock { file, path })
    }

    /// Whether some process holds the home right now (without taking it).
    pub fn is_held(home: &Path) -> bool {
        let Ok(file) = File::open(home.join(LOCK_FILE)) else {
            return false;
        };
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                false
            }
            Err(_) => true,
        }
    }
}

impl Drop for HomeLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
        tracing::debug!(path = %self.path.display(), "home released");
    }
}

/// Bytes used by the files under `dir` (0 if it does not exist). Symbolic links are not
/// followed; unreadable entries are skipped.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_size(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let lock = HomeLock::acquire(dir.path()).unwrap();
        assert!(HomeLock::is_held(dir.path()));
        // A second open file description conflicts even inside one process.
        match HomeLock::acquire(dir.path()) {
            Err(Error::HomeBusy { pid, .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("expected HomeBusy, got {other:?}"),
        }
        drop(lock);
        assert!(!HomeLock::is_held(dir.path()));
        HomeLock::acquire(dir.path()).unwrap();
    }
}
