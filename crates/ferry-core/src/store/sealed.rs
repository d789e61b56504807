//! sled trees whose values are sealed: every value written goes through [`DataKey::seal`],
//! bound to its tree and key, and every value read is opened. Keys stay in clear (ids,
//! sequence numbers, times), so order and ranges work as before. The store reaches sled only
//! through these types, so no value can be written in clear by mistake.
//!
//! Their methods mirror sled's (`get`, `insert`, `iter`, transactions over tuples of trees), so
//! the store's code reads as if the values were plain.

use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionResult, Transactional,
    TransactionalTree,
};
use sled::IVec;
use zeroize::Zeroizing;

use crate::vault::DataKey;
use crate::Error;

/// An opened value (zeroized when dropped).
pub(crate) type Plain = Zeroizing<Vec<u8>>;

/// What a sealed value is bound to: the store's format, its tree and its key, so a value
/// cannot be moved to another key or tree without failing to open.
fn aad(tree: &[u8], key: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(16 + tree.len() + key.len());
    a.extend_from_slice(b"ferry/store/1");
    a.push(u8::try_from(tree.len()).unwrap_or(u8::MAX));
    a.extend_from_slice(tree);
    a.extend_from_slice(key);
    a
}

/// One sled tree with sealed values.
#[derive(Clone)]
pub(crate) struct Tree {
    pub(crate) raw: sled::Tree,
    name: Arc<[u8]>,
    key: Arc<DataKey>,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tree({})", String::from_utf8_lossy(&self.name))
    }
}

impl Tree {
    pub(crate) fn open(db: &sled::Db, name: &str, key: &Arc<DataKey>) -> Result<Self, Error> {
        Ok(Tree {
            raw: db.open_tree(name)?,
            name: name.as_bytes().into(),
            key: key.clone(),
        })
    }

    pub(crate) fn seal(&self, key: &[u8], plain: &[u8]) -> Vec<u8> {
        self.key.seal(&aad(&self.name, key), plain)
    }

    pub(crate) fn unseal(&self, key: &[u8], sealed: &[u8]) -> Result<Plain, Error> {
        self.key.open(&aad(&self.name, key), sealed).ok_or_else(|| {
            Error::Corrupt(format!(
                "a value in {} (key {}) does not open: damaged, or sealed under another key",
                String::from_utf8_lossy(&self.name),
                super::hex_key(key)
            ))
        })
    }

    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Plain>, Error> {
        let key = key.as_ref();
        self.raw.get(key)?.map(|v| self.unseal(key, &v)).transpose()
    }

    pub(crate) fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), Error> {
        let key = key.as_ref();
        self.raw.insert(key, self.seal(key, value.as_ref()))?;
        Ok(())
    }

    /// Inserts `value` only if `key` holds nothing; whether it did.
    pub(crate) fn insert_new(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<bool, Error> {
        let key = key.as_ref();
        let sealed = self.seal(key, value.as_ref());
        Ok(self
            .raw
            .compare_and_swap(key, None as Option<&[u8]>, Some(sealed))?
            .is_ok())
    }

    /// Removes `key`; whether it held something.
    pub(crate) fn remove(&self, key: impl AsRef<[u8]>) -> Result<bool, Error> {
        Ok(self.raw.remove(key)?.is_some())
    }

    pub(crate) fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, Error> {
        Ok(self.raw.contains_key(key)?)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    pub(crate) fn clear(&self) -> Result<(), Error> {
        Ok(self.raw.clear()?)
    }

    pub(crate) fn first(&self) -> Result<Option<(IVec, Plain)>, Error> {
        self.raw
            .first()?
            .map(|(k, v)| Ok((k.clone(), self.unseal(&k, &v)?)))
            .transpose()
    }

    pub(crate) fn iter(&self) -> Iter<'_> {
        Iter {
            inner: self.raw.iter(),
            tree: self,
        }
    }

    pub(crate) fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter<'_> {
        Iter {
            inner: self.raw.range(range),
            tree: self,
        }
    }

    pub(crate) fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter<'_> {
        Iter {
            inner: self.raw.scan_prefix(prefix),
            tree: self,
        }
    }

    pub(crate) fn apply_batch(&self, batch: Batch) -> Result<(), Error> {
        Ok(self.raw.apply_batch(batch.seal(self))?)
    }

    /// A transaction over this tree alone.
    pub(crate) fn transaction<A>(
        &self,
        f: impl Fn(&Tx<'_>) -> ConflictableTransactionResult<A, Error>,
    ) -> TransactionResult<A, Error> {
        self.raw.transaction(|raw| f(&Tx { raw, tree: self }))
    }
}

/// A tree's entries in key order, opened.
pub(crate) struct Iter<'a> {
    inner: sled::Iter,
    tree: &'a Tree,
}

impl<'a> Iter<'a> {
    /// The keys only (nothing to open).
    pub(crate) fn keys(self) -> impl DoubleEndedIterator<Item = Result<IVec, Error>> {
        self.inner.keys().map(|k| Ok(k?))
    }

    /// The values only, opened.
    pub(crate) fn values(self) -> impl DoubleEndedIterator<Item = Result<Plain, Error>> + 'a {
        self.map(|kv| kv.map(|(_, v)| v))
    }

    fn opened(&self, kv: sled::Result<(IVec, IVec)>) -> Result<(IVec, Plain), Error> {
        let (k, v) = kv?;
        let plain = self.tree.unseal(&k, &v)?;
        Ok((k, plain))
    }
}

impl Iterator for Iter<'_> {
    type Item = Result<(IVec, Plain), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let kv = self.inner.next()?;
        Some(self.opened(kv))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let kv = self.inner.next_back()?;
        Some(self.opened(kv))
    }
}

/// One write of a [`Batch`]: a key and its new value, or none to remove it.
type Op = (Vec<u8>, Option<Plain>);

/// Writes to one tree applied at once; values are sealed when it is applied.
#[derive(Default)]
pub(crate) struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    pub(crate) fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops.push((
            key.as_ref().to_vec(),
            Some(Zeroizing::new(value.as_ref().to_vec())),
        ));
    }

    pub(crate) fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((key.as_ref().to_vec(), None));
    }

    fn seal(&self, tree: &Tree) -> sled::Batch {
        let mut b = sled::Batch::default();
        for (k, v) in &self.ops {
            match v {
                Some(v) => b.insert(&k[..], tree.seal(k, v)),
                None => b.remove(&k[..]),
            }
        }
        b
    }
}

/// One tree inside a transaction: sealed writes, opened reads.
pub(crate) struct Tx<'a> {
    raw: &'a TransactionalTree,
    tree: &'a Tree,
}

/// A transaction's error for a value that does not open.
fn abort(e: Error) -> ConflictableTransactionError<Error> {
    ConflictableTransactionError::Abort(e)
}

impl Tx<'_> {
    pub(crate) fn get(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<Plain>, ConflictableTransactionError<Error>> {
        let key = key.as_ref();
        match self.raw.get(key)? {
            Some(v) => Ok(Some(self.tree.unseal(key, &v).map_err(abort)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), ConflictableTransactionError<Error>> {
        let key = key.as_ref();
        self.raw.insert(key, self.tree.seal(key, value.as_ref()))?;
        Ok(())
    }

    /// Removes `key`, returning what it held, opened.
    pub(crate) fn remove(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<Plain>, ConflictableTransactionError<Error>> {
        let key = key.as_ref();
        match self.raw.remove(key)? {
            Some(v) => Ok(Some(self.tree.unseal(key, &v).map_err(abort)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn apply_batch(
        &self,
        batch: &Batch,
    ) -> Result<(), ConflictableTransactionError<Error>> {
        self.raw.apply_batch(&batch.seal(self.tree))?;
        Ok(())
    }
}

/// Transactions over several sealed trees at once: `(&a, &b).transaction(|(a, b)| …)`, as with
/// sled.
pub(crate) trait Transact {
    /// The views the closure gets, one per tree.
    type Views<'v>;
    fn transaction<A>(
        &self,
        f: impl Fn(Self::Views<'_>) -> ConflictableTransactionResult<A, Error>,
    ) -> TransactionResult<A, Error>;
}

macro_rules! tree_ref {
    ($x:tt) => {
        &Tree
    };
}

macro_rules! tx_ref {
    ($l:lifetime, $x:tt) => { &$l Tx<$l> };
}

macro_rules! transact_tuple {
    ($($t:ident $i:tt),+) => {
        impl Transact for ($(tree_ref!($i),)+) {
            type Views<'v> = ($(tx_ref!('v, $i),)+);
            fn transaction<A>(
                &self,
                f: impl Fn(Self::Views<'_>) -> ConflictableTransactionResult<A, Error>,
            ) -> TransactionResult<A, Error> {
                ($(&self.$i.raw,)+).transaction(|($($t,)+)| {
                    $( let $t = Tx { raw: $t, tree: self.$i }; )+
                    f(($(&$t,)+))
                })
            }
        }
    };
}

transact_tuple!(v0 0, v1 1);
transact_tuple!(v0 0, v1 1, v2 2);
transact_tuple!(v0 0, v1 1, v2 2, v3 3);
transact_tuple!(v0 0, v1 1, v2 2, v3 3, v4 4);
transact_tuple!(v0 0, v1 1, v2 2, v3 3, v4 4, v5 5);
transact_tuple!(v0 0, v1 1, v2 2, v3 3, v4 4, v5 5, v6 6);
transact_tuple!(v0 0, v1 1, v2 2, v3 3, v4 4, v5 5, v6 6, v7 7);
transact_tuple!(v0 0, v1 1, v2 2, v3 3, v4 4, v5 5, v6 6, v7 7, v8 8);
transact_tuple!(v0 0, v1 1, v2 2, v3 3, v4 4, v5 5, v6 6, v7 7, v8 8, v9 9);
transact_tuple!(v0 0, v1 1, v2 2, v3 3, v4 4, v5 5, v6 6, v7 7, v8 8, v9 9, v10 10);
transact_tuple!(v0 0, v1 1, v2 2, v3 3, v4 4, v5 5, v6 6, v7 7, v8 8, v9 9, v10 10, v11 11);

/// The `meta` key of the mark a sealed store carries: [`SEAL_MARK`], sealed. Its presence says
/// the store is sealed; that it opens says the key is this store's.
pub(crate) const SEAL_MARK_KEY: &[u8] = b"sealed";
const SEAL_MARK: &[u8] = b"ferry sealed store 1";

/// Writes the mark of a sealed store into its `meta` tree.
pub(crate) fn mark_sealed(meta: &Tree) -> Result<(), Error> {
    meta.insert(SEAL_MARK_KEY, SEAL_MARK)
}

/// Whether `meta` is a sealed store's: `Ok(false)` for a store written before sealing (or a new
/// one), an error if it is sealed under another key.
pub(crate) fn is_sealed(meta: &Tree) -> Result<bool, Error> {
    match meta.raw.get(SEAL_MARK_KEY)? {
        None => Ok(false),
        Some(v) => match meta.key.open(&aad(&meta.name, SEAL_MARK_KEY), &v) {
            Some(mark) if mark[..] == *SEAL_MARK => Ok(true),
            _ => Err(Error::Corrupt(
                "the store is sealed under another key than the one this home's key file holds"
                    .into(),
            )),
        },
    }
}

/// Checks that every value of every tree in `db` is sealed under `key` and bound to its place
/// (tests: nothing the store writes may stay in clear).
#[cfg(test)]
pub(crate) fn assert_all_sealed(db: &sled::Db, key: &Arc<DataKey>) {
    let mut values = 0;
    for name in db.tree_names() {
        let tree = Tree {
            raw: db.open_tree(&name).expect("tree"),
            name: name.to_vec().into(),
            key: key.clone(),
        };
        for kv in tree.raw.iter() {
            let (k, v) = kv.expect("entry");
            if let Err(e) = tree.unseal(&k, &v) {
                panic!("a value in clear: {e}");
            }
            values += 1;
        }
    }
    assert!(values > 0, "nothing was checked");
}

/// Entries copied per batch while sealing a store.
const SEAL_BATCH: usize = 1024;

/// Seals a store written before sealing (values in clear) into a new store beside it and swaps
/// the two folders, then removes the old one. Does nothing to a sealed or new store.
///
/// Restartable at any point: the copy goes to `<dir>.sealing`, which a later run discards and
/// redoes unless the copy was finished, flushed and marked ready (`<dir>.sealed-ready`); from
/// then on, every run completes the swap (`<dir>` → `<dir>.plain-old`, `<dir>.sealing` →
/// `<dir>`) and the removal, in an order that any kill leaves resumable.
pub(crate) fn seal_plain_store(dir: &Path, key: &Arc<DataKey>) -> Result<(), Error> {
    let (sealing, ready, old) = side_paths(dir);
    if ready.exists() {
        return finish_swap(dir, &sealing, &ready, &old);
    }
    if !dir.exists() {
        return Ok(());
    }
    let db = super::open_db(dir)?;
    // Every tree handle keeps the database open; `copy_sealed` must hold the last one, so the
    // old store's files are closed before they are removed (on Windows an open file cannot
    // leave its folder).
    let done = {
        let meta = db.open_tree("meta")?;
        meta.contains_key(SEAL_MARK_KEY)? || !meta.contains_key("schema")?
    };
    if done {
        return Ok(());
    }
    tracing::info!(
        "sealing the store written by an earlier release: {}",
        dir.display()
    );
    copy_sealed(db, &sealing, &ready, key)?;
    finish_swap(dir, &sealing, &ready, &old)
}

/// The folders and the mark beside a store that sealing it uses: the sealed copy, the mark
/// that the copy is whole, and where the old store goes before it is removed.
pub(crate) fn side_paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let side = |suffix: &str| {
        let mut name = dir.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        dir.with_file_name(name)
    };
    (side(".sealing"), side(".sealed-ready"), side(".plain-old"))
}

/// Copies every entry of the plain store `db` into a new store at `sealing`, sealed, marks it,
/// flushes it and then writes the `ready` mark. A copy left by a killed run is discarded first.
pub(crate) fn copy_sealed(
    db: sled::Db,
    sealing: &Path,
    ready: &Path,
    key: &Arc<DataKey>,
) -> Result<(), Error> {
    if sealing.exists() {
        std::fs::remove_dir_all(sealing)
            .map_err(Error::io(format!("removing {}", sealing.display())))?;
    }
    let new = super::open_db(sealing)?;
    let mut copied = 0usize;
    let mut max_seq = 0u64;
    for name in db.tree_names() {
        let src = db.open_tree(&name)?;
        if src.is_empty() {
            continue;
        }
        let dst = Tree {
            raw: new.open_tree(&name)?,
            name: name.to_vec().into(),
            key: key.clone(),
        };
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in src.iter() {
            let (k, v) = kv?;
            max_seq = max_seq.max(seq_in(&name, &k));
            batch.insert(&k[..], dst.seal(&k, &v));
            n += 1;
            if n == SEAL_BATCH {
                dst.raw.apply_batch(std::mem::take(&mut batch))?;
                copied += n;
                n = 0;
            }
        }
        dst.raw.apply_batch(batch)?;
        copied += n;
    }
    let meta = Tree::open(&new, "meta", key)?;
    // The new database's id generator starts at 0 again: every later sequence number must
    // stay above the old ones (a plain store has no base of its own).
    let base = db.generate_id()?.max(max_seq).saturating_add(1);
    meta.insert(super::SEQ_BASE, postcard::to_allocvec(&base)?)?;
    mark_sealed(&meta)?;
    new.flush()?;
    drop(new);
    drop(db);
    std::fs::File::create(ready)
        .and_then(|f| f.sync_all())
        .map_err(Error::io(format!("writing {}", ready.display())))?;
    if let Some(parent) = ready.parent() {
        crate::home::sync_dir(parent);
    }
    tracing::info!("sealed {copied} entries");
    Ok(())
}

/// The sequence number a key of tree `name` holds: a message's (after its conversation id) or
/// an outbox item's; 0 for other trees.
fn seq_in(name: &[u8], key: &[u8]) -> u64 {
    let tail = match name {
        b"messages" if key.len() == 24 => &key[16..],
        b"outbox" | b"outbox_plain" if key.len() == 8 => key,
        _ => return 0,
    };
    tail.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// The rest of [`seal_plain_store`] once the sealed copy is ready.
pub(crate) fn finish_swap(
    dir: &Path,
    sealing: &Path,
    ready: &Path,
    old: &Path,
) -> Result<(), Error> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    if sealing.exists() {
        if dir.exists() {
            rename(dir, old)?;
        }
        rename(sealing, dir)?;
        crate::home::sync_dir(parent);
    }
    if old.exists() {
        crate::home::shred_dir(old)?;
    }
    std::fs::remove_file(ready).map_err(Error::io(format!("removing {}", ready.display())))?;
    crate::home::sync_dir(parent);
    Ok(())
}

/// Renames a store folder, waiting a moment for sled's threads of a handle just dropped to let
/// go of its files (where open files block a rename).
fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match std::fs::rename(from, to) {
            Ok(()) => return Ok(()),
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => {
                return Err(Error::io(format!(
                    "renaming {} to {}",
                    from.display(),
                    to.display()
                ))(e))
            }
        }
    }
}
