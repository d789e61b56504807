//! Saving a verified download into the download folder, never overwriting anything.

use super::*;

/// Saves a verified blob under a name reserved exclusively (never overwriting anything else):
/// the store moves its data file onto the reserved name (no copy on the same file system) and
/// from then on only references it; a copy is made across file systems or for repeated hashes.
///
/// `recheck` is for content the store already had before this transfer: its data may be a
/// file saved earlier, which the user can have changed since. The saved copy is hashed again
/// and refused unless it is exactly the content.
pub(super) async fn save_blob(
    ctx: &Transfers,
    hash: Hash,
    dir: &Path,
    name: &str,
    recheck: bool,
) -> Result<PathBuf, Error> {
    let (file, path) = files::create_unique_file(dir, name)
        .map_err(Error::io(format!("creating a file in {}", dir.display())))?;
    drop(file);
    let exported = ctx
        .blobs
        .store
        .blobs()
        .export_with_opts(ExportOptions {
            hash,
            mode: ExportMode::TryReference,
            target: path.clone(),
        })
        .finish()
        .await;
    if let Err(e) = exported {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(Error::Io {
            context: format!("writing {}", path.display()),
            source: std::io::Error::other(e.to_string()),
        });
    }
    if recheck {
        let actual = hash_file(&path).await;
        if actual.as_ref().ok() != Some(&hash) {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(Error::Corrupt(match actual {
                Ok(_) => "the copy of this content received before was changed since".into(),
                Err(e) => format!("reading the copy of this content received before: {e}"),
            }));
        }
    }
    // Received files are never executable, whatever mode the store's file had.
    crate::home::restrict(&path, 0o644)?;
    Ok(path)
}

/// The BLAKE3 hash of a file (a raw blob's hash), read in a blocking task.
async fn hash_file(path: &Path) -> std::io::Result<Hash> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(&path)?)?;
        Ok(Hash::from(*hasher.finalize().as_bytes()))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Saves a completed transfer into the download folder; never overwrites anything. `recheck`:
/// see [`save_blob`]. A folder that fails part way is removed again (it was created here).
pub(super) async fn save(ctx: &Transfers, t: &Transfer, recheck: bool) -> Result<PathBuf, Error> {
    let downloads = downloads_dir(ctx)?;
    std::fs::create_dir_all(&downloads)
        .map_err(Error::io(format!("creating {}", downloads.display())))?;
    let root = hash_of(t)?;
    if !t.folder {
        return save_blob(ctx, root, &downloads, &t.name, recheck).await;
    }
    let collection = Collection::load(root, &*ctx.blobs.store)
        .await
        .map_err(blob_err)?;
    let top = files::create_unique_dir(&downloads, &t.name).map_err(Error::io(format!(
        "creating a folder in {}",
        downloads.display()
    )))?;
    let mut seen_dirs: HashSet<PathBuf> = HashSet::new();
    for (remote_path, hash) in collection.iter() {
        let Some(rel) = naming::safe_relative_path(remote_path) else {
            tracing::warn!(name = %remote_path, "skipped a folder entry with no usable name");
            continue;
        };
        let (parent, file) = match (rel.parent(), rel.file_name()) {
            (Some(p), Some(f)) => (top.join(p), f.to_string_lossy().into_owned()),
            _ => continue,
        };
        if seen_dirs.insert(parent.clone()) {
            // Every component was cleaned and we created `top` just now, so this stays inside it.
            if let Err(e) = std::fs::create_dir_all(&parent) {
                // e.g. the offer has both a file `a` and `a/b`: keep the rest of the folder.
                tracing::warn!(path = %parent.display(), "skipped a folder entry: {e}");
                continue;
            }
        }
        if !parent.is_dir() {
            continue;
        }
        if let Err(e) = save_blob(ctx, *hash, &parent, &file, recheck).await {
            if recheck {
                let _ = std::fs::remove_dir_all(&top);
            }
            return Err(e);
        }
    }
    Ok(top)
}
