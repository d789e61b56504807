//! Creating received files and folders without ever overwriting, truncating or following an
//! existing entry.
//!
//! Invariants: [`create_unique_file`] and [`create_unique_dir`] take the first free name of
//! `name`, `name (1)`, `name (2)`, … ([`numbered`]) after cleaning it with
//! [`safe_name`], and create it exclusively, so an existing file, directory or symlink
//! (even dangling) is never touched.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use ferry_proto::naming::{numbered, safe_name};

/// Names tried by the `create_unique_*` functions, the plain name included.
const MAX_ATTEMPTS: u32 = 10_000;

/// Creates a new file `dir/name` (or the first free numbered variant) and returns it with its path.
///
/// `name` is passed through [`safe_name`] first (a no-op for an already clean name). Uses
/// exclusive creation, so an existing file, directory or symlink (even dangling) at the target
/// is never opened, truncated or followed; the next name is tried instead: `a.txt`, `a (1).txt`,
/// `a (2).txt`, … The number goes before the last extension: `archive.tar.gz` →
/// `archive.tar (1).gz`. At most 10 000 names are tried. The file is opened for reading and
/// writing; on Unix it is created with mode `0o644` (minus the umask), never executable.
pub fn create_unique_file(dir: &Path, name: &str) -> io::Result<(File, PathBuf)> {
    create_unique(dir, name, |path| {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o644);
        }
        options.open(path)
    })
}

/// Creates a new directory `dir/name` (or the first free numbered variant) and returns its path.
///
/// Same naming rules as [`create_unique_file`]: `Photos`, `Photos (1)`, … On Unix the directory
/// is created with mode `0o755` (minus the umask). Never reuses an existing entry.
pub fn create_unique_dir(dir: &Path, name: &str) -> io::Result<PathBuf> {
    create_unique(dir, name, |path| {
        #[cfg_attr(not(unix), allow(unused_mut))]
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o755);
        }
        builder.create(path)
    })
    .map(|((), path)| path)
}

/// Tries `name`, `name (1)`, … in `dir` with `create` until one does not exist yet.
fn create_unique<T>(
    dir: &Path,
    name: &str,
    mut create: impl FnMut(&Path) -> io::Result<T>,
) -> io::Result<(T, PathBuf)> {
    let name = safe_name(name);
    for n in 0..MAX_ATTEMPTS {
        let path = dir.join(numbered(&name, n));
        match create(&path) {
            Ok(created) => return Ok((created, path)),
            // Windows reports some collisions (e.g. with a directory) as access denied.
            Err(err)
                if err.kind() == io::ErrorKind::AlreadyExists
                    || path.symlink_metadata().is_ok() => {}
            Err(err) => return Err(err),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "no free name for {name:?} in {} after {MAX_ATTEMPTS} attempts",
            dir.display()
        ),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ferry_proto::naming::MAX_NAME_BYTES;

    #[test]
    fn create_unique_file_numbers_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let (mut first, first_path) = create_unique_file(dir.path(), "a.txt").unwrap();
        io::Write::write_all(&mut first, b"original").unwrap();
        drop(first);
        let (_second, second_path) = create_unique_file(dir.path(), "a.txt").unwrap();
        assert_eq!(first_path, dir.path().join("a.txt"));
        assert_eq!(second_path, dir.path().join("a (1).txt"));
        assert_eq!(std::fs::read(&first_path).unwrap(), b"original");
        let (_third, third_path) = create_unique_file(dir.path(), "a.txt").unwrap();
        assert_eq!(third_path, dir.path().join("a (2).txt"));
    }

    #[test]
    fn create_unique_file_cleans_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let (_file, path) = create_unique_file(dir.path(), "../../escape.txt").unwrap();
        assert_eq!(path, dir.path().join("escape.txt"));
    }

    #[test]
    fn create_unique_file_at_length_limit_stays_within_limit() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("{}.bin", "n".repeat(251));
        let (_a, first) = create_unique_file(dir.path(), &name).unwrap();
        let (_b, second) = create_unique_file(dir.path(), &name).unwrap();
        assert_eq!(first.file_name().unwrap().len(), MAX_NAME_BYTES);
        let second = second.file_name().unwrap().to_str().unwrap();
        assert!(second.len() <= MAX_NAME_BYTES && second.ends_with(" (1).bin"));
    }

    #[test]
    fn create_unique_file_skips_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("x.dat")).unwrap();
        let (_file, path) = create_unique_file(dir.path(), "x.dat").unwrap();
        assert_eq!(path, dir.path().join("x (1).dat"));
    }

    #[cfg(unix)]
    #[test]
    fn create_unique_file_does_not_follow_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("victim.txt");
        std::fs::write(&target, b"keep me").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("a.txt")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("missing"), dir.path().join("a (1).txt"))
            .unwrap();

        let (mut file, path) = create_unique_file(dir.path(), "a.txt").unwrap();
        io::Write::write_all(&mut file, b"new").unwrap();
        assert_eq!(path, dir.path().join("a (2).txt"));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
        assert!(!outside.path().join("missing").exists());
        assert!(!path.symlink_metadata().unwrap().file_type().is_symlink());
    }

    #[cfg(unix)]
    #[test]
    fn created_file_is_not_executable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (_file, path) = create_unique_file(dir.path(), "setup.sh").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0, "mode {mode:o}");
        assert_eq!(mode & 0o7022, 0, "mode {mode:o}");
    }

    #[test]
    fn create_unique_dir_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let first = create_unique_dir(dir.path(), "Photos").unwrap();
        std::fs::write(first.join("inside.jpg"), b"x").unwrap();
        let second = create_unique_dir(dir.path(), "Photos").unwrap();
        assert_eq!(first, dir.path().join("Photos"));
        assert_eq!(second, dir.path().join("Photos (1)"));
        assert!(second.is_dir());
        assert!(first.join("inside.jpg").exists());
        std::fs::write(dir.path().join("Photos (2)"), b"file").unwrap();
        let third = create_unique_dir(dir.path(), "Photos").unwrap();
        assert_eq!(third, dir.path().join("Photos (3)"));
    }
}
