//! Offering a file or folder: import by reference, a collection for a folder, the tag, and
//! the offer sealed into the outbox.

use super::*;

/// What a lying sender claims in its offer, for tests of the receiver (a real sender never
/// lies: the offer says what was imported).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    /// The size the offer says.
    pub size: u64,
    /// The number of files the offer says.
    pub files: u32,
    /// Above 1: offer a folder of this many entries, each the same file.
    pub copies: usize,
}

/// Imports a file or folder and offers it to a contact, under `name_override` if given.
/// Returns once the offer is stored. `claim` makes the offer lie (tests only).
pub(crate) async fn send_path(
    ctx: &Arc<Transfers>,
    contact: &Contact,
    path: &Path,
    name_override: Option<&str>,
    claim: Option<Claim>,
) -> Result<Transfer, Error> {
    let t = import(ctx, contact.id, path, name_override, claim).await?;
    let (size, files) = claim.map_or((t.size, t.files), |c| (c.size, c.files));
    ctx.blobs
        .access
        .allow(contact.id, t.id, offered_hashes(ctx, &t).await?);
    let message = ctx
        .outbox
        .new_message(&contact.id, t.name.clone(), Some(t.id))?;
    let payload = Payload::FileOffer {
        transfer: t.id.0,
        hash: *hash_of(&t)?.as_bytes(),
        folder: t.folder,
        name: t.name.clone(),
        size,
        files,
    };
    ctx.outbox
        .queue(
            &contact.id,
            message.id,
            &payload,
            OutboxKind::Message,
            Some(&message),
            Some(&t),
        )
        .await?;
    ctx.emit(Event::TransferChanged {
        transfer: t.clone(),
    });
    Ok(t)
}

/// Imports a file or folder for a group offer: the outgoing transfer (not stored yet) whose
/// content the blob store now keeps under its tag. The caller stores it with the offer; a
/// tag left without a record (the offer failed) is dropped by the next clean-up.
pub(crate) async fn import_for_group(
    ctx: &Arc<Transfers>,
    me: ContactId,
    path: &Path,
) -> Result<Transfer, Error> {
    import(ctx, me, path, None, None).await
}

/// Imports a file or folder by reference (a folder's list as a collection) and tags it for
/// an outgoing transfer to `to`, which is returned (not stored).
async fn import(
    ctx: &Arc<Transfers>,
    to: ContactId,
    path: &Path,
    name_override: Option<&str>,
    claim: Option<Claim>,
) -> Result<Transfer, Error> {
    let path = std::path::absolute(path).map_err(Error::io(format!("{}", path.display())))?;
    let meta = tokio::fs::metadata(&path)
        .await
        .map_err(Error::io(format!("reading {}", path.display())))?;
    let name = name_override
        .map(str::to_string)
        .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| Error::InvalidInput(format!("{} has no file name", path.display())))?;
    let store = &ctx.blobs.store;
    let copies = claim.map_or(1, |c| c.copies);
    let folder = meta.is_dir() || copies > 1;
    let (tag, size, files) = if folder {
        let entries = match meta.is_dir() {
            true => walk(&path)?,
            false => (0..copies)
                .map(|i| (format!("copy-{i}"), path.clone(), meta.len()))
                .collect(),
        };
        if entries.is_empty() {
            return Err(Error::InvalidInput(format!(
                "the folder {} has no files",
                path.display()
            )));
        }
        let mut collection = Collection::default();
        let mut tags = Vec::new();
        let mut size = 0u64;
        for (rel, abs, len) in &entries {
            let tt = store
                .blobs()
                .add_path_with_opts(AddPathOptions {
                    path: abs.clone(),
                    format: BlobFormat::Raw,
                    mode: ImportMode::TryReference,
                })
                .temp_tag()
                .await
                .map_err(|e| Error::InvalidInput(format!("importing {}: {e}", abs.display())))?;
            collection.push(rel.clone(), tt.hash());
            tags.push(tt);
            size += len;
        }
        let tt = collection.store(store).await.map_err(blob_err)?;
        drop(tags);
        (tt, size, entries.len() as u32)
    } else if meta.is_file() {
        let tt = store
            .blobs()
            .add_path_with_opts(AddPathOptions {
                path: path.clone(),
                format: BlobFormat::Raw,
                mode: ImportMode::TryReference,
            })
            .temp_tag()
            .await
            .map_err(|e| Error::InvalidInput(format!("importing {}: {e}", path.display())))?;
        (tt, meta.len(), 1)
    } else {
        return Err(Error::InvalidInput(format!(
            "{} is neither a file nor a folder",
            path.display()
        )));
    };
    let t = Transfer {
        size,
        hash: tag.hash().to_hex().to_string(),
        files,
        // A folder of copies (a lying test sender) has no source folder to check.
        path: (copies <= 1).then(|| path.clone()),
        ..offered(
            TransferId::random(),
            to,
            Direction::Outgoing,
            name.clone(),
            folder,
            naming::classify_remote(&name),
        )
    };
    store
        .tags()
        .set(tag_name(&t), tag.hash_and_format())
        .await
        .map_err(blob_err)?;
    drop(tag);
    Ok(t)
}

/// Regular files under `root` (symlinks and special files skipped), as
/// (relative path with `/`, absolute path, size), sorted by relative path.
fn walk(root: &Path) -> Result<Vec<(String, PathBuf, u64)>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd =
            std::fs::read_dir(&dir).map_err(Error::io(format!("reading {}", dir.display())))?;
        for entry in rd {
            let entry = entry.map_err(Error::io(format!("reading {}", dir.display())))?;
            let ft = entry
                .file_type()
                .map_err(Error::io(format!("reading {}", entry.path().display())))?;
            let path = entry.path();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .map_err(|_| Error::InvalidInput("path outside the folder".into()))?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let len = entry
                    .metadata()
                    .map_err(Error::io(format!("reading {}", path.display())))?
                    .len();
                out.push((rel, path, len));
                if out.len() > MAX_FOLDER_FILES {
                    return Err(Error::InvalidInput(format!(
                        "the folder has more than {MAX_FOLDER_FILES} files"
                    )));
                }
            } else {
                tracing::info!(path = %path.display(), "skipped (not a regular file)");
            }
        }
    }
    out.sort();
    Ok(out)
}
