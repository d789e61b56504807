//! Backups: one file holding a home's identity and its whole store (contacts, sessions,
//! conversations with their history, the outbox, settings), sealed under a passphrase of its
//! own, to move to a new computer or to keep.
//!
//! Format (version 1):
//! - a clear header of [`HEADER_LEN`] bytes: `FERRYBAK` ‖ version (u16 BE) ‖ Argon2id m (KiB),
//!   t, p (u32 BE each) ‖ salt (16) ‖ STREAM nonce prefix (19);
//! - then chunks, each `flag (0, or 1 for the last) ‖ length (u32 BE) ‖ ciphertext`, from
//!   XChaCha20-Poly1305 in the STREAM construction (a counter and a last-chunk bit in each
//!   nonce) over 64 KiB of plaintext, with the header as associated data. A chunk that is
//!   changed, dropped, reordered or cut off, or a file that stops before its last chunk, does
//!   not open.
//! - The plaintext is a sequence of records, each `length (u32 BE) ‖ postcard(Record)`:
//!   the identity, every store entry as `(tree, key, value)` with the value opened, and an end
//!   record with the count of entries.
//!
//! Import writes a new home beside the target folder and renames it into place only when it is
//! complete, so a failed or killed import leaves nothing half-made. The restored sessions are
//! older than what the contacts hold, so each is reset (`ferry/reset/1`) when its contact is
//! next online, and nothing is sent to a contact before that.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
use chacha20poly1305::aead::{KeyInit, Payload};
use chacha20poly1305::XChaCha20Poly1305;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::home::{HomeLock, STORE_DIR};
use crate::identity::{self, Identity};
use crate::model::ContactId;
use crate::store::Store;
use crate::vault::{self, Passphrase};
use crate::Error;

/// The first bytes of a backup file.
pub const MAGIC: &[u8; 8] = b"FERRYBAK";
/// The format this code writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of the clear header.
pub const HEADER_LEN: usize = 8 + 2 + 12 + 16 + 19;
/// Plaintext bytes per sealed chunk.
const CHUNK: usize = 64 * 1024;
/// The longest record read back (a session with every skipped key is far below).
const MAX_RECORD: usize = 16 << 20;

/// One record of a backup's plaintext. Appended to only.
#[derive(Serialize, Deserialize)]
enum Record {
    /// The identity file's bytes.
    Identity(Vec<u8>),
    /// One store entry, its value opened.
    Entry {
        tree: String,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// The end, with the number of entries before it.
    End { entries: u64 },
}

/// What an export or an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct BackupSummary {
    /// Store entries written or restored.
    pub entries: u64,
    /// Bytes of the backup file.
    pub bytes: u64,
}

fn header(m: u32, t: u32, p: u32, salt: &[u8; 16], prefix: &[u8; 19]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_be_bytes());
    h[10..14].copy_from_slice(&m.to_be_bytes());
    h[14..18].copy_from_slice(&t.to_be_bytes());
    h[18..22].copy_from_slice(&p.to_be_bytes());
    h[22..38].copy_from_slice(salt);
    h[38..].copy_from_slice(prefix);
    h
}

fn be32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn damaged(why: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("this backup is damaged or incomplete: {why}"))
}

/// Writes sealed chunks of what is written to it.
struct SealingWriter<W: Write> {
    out: W,
    aad: [u8; HEADER_LEN],
    stream: Option<EncryptorBE32<XChaCha20Poly1305>>,
    buf: Zeroizing<Vec<u8>>,
    written: u64,
}

impl<W: Write> SealingWriter<W> {
    fn chunk(&mut self, last: bool) -> std::io::Result<()> {
        let plain = std::mem::take(&mut *self.buf);
        let payload = Payload {
            msg: &plain,
            aad: &self.aad,
        };
        let sealed = if last {
            let stream = self
                .stream
                .take()
                .ok_or_else(|| std::io::Error::other("closed"))?;
            stream.encrypt_last(payload)
        } else {
            let stream = self
                .stream
                .as_mut()
                .ok_or_else(|| std::io::Error::other("closed"))?;
            stream.encrypt_next(payload)
        }
        .map_err(|_| std::io::Error::other("sealing a backup chunk"))?;
        drop(Zeroizing::new(plain));
        let len = u32::try_from(sealed.len()).map_err(std::io::Error::other)?;
        self.out.write_all(&[u8::from(last)])?;
        self.out.write_all(&len.to_be_bytes())?;
        self.out.write_all(&sealed)?;
        self.written += 5 + sealed.len() as u64;
        self.buf.reserve(CHUNK);
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<(W, u64)> {
        self.chunk(true)?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }
}

impl<W: Write> Write for SealingWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.chunk(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads what [`SealingWriter`] wrote, opening each chunk.
struct OpeningReader<R: Read> {
    input: R,
    aad: [u8; HEADER_LEN],
    stream: Option<DecryptorBE32<XChaCha20Poly1305>>,
    buf: Zeroizing<Vec<u8>>,
    pos: usize,
    ended: bool,
    /// Chunks opened so far.
    opened: u64,
}

impl<R: Read> OpeningReader<R> {
    /// Opens the next chunk into `buf`; `false` once the last one was read.
    fn next_chunk(&mut self) -> Result<bool, Error> {
        if self.ended {
            return Ok(false);
        }
        let mut head = [0u8; 5];
        self.input
            .read_exact(&mut head)
            .map_err(|_| damaged("it stops before its end"))?;
        let last = match head[0] {
            0 => false,
            1 => true,
            _ => return Err(damaged("a chunk is not framed")),
        };
        let len = be32(&head[1..]) as usize;
        if !(16..=CHUNK + 16).contains(&len) {
            return Err(damaged("a chunk has an impossible length"));
        }
        let mut sealed = vec![0u8; len];
        self.input
            .read_exact(&mut sealed)
            .map_err(|_| damaged("it stops in the middle of a chunk"))?;
        let payload = Payload {
            msg: &sealed,
            aad: &self.aad,
        };
        let plain = if last {
            let stream = self
                .stream
                .take()
                .ok_or_else(|| damaged("chunks after the end"))?;
            stream.decrypt_last(payload)
        } else {
            let stream = self
                .stream
                .as_mut()
                .ok_or_else(|| damaged("chunks after the end"))?;
            stream.decrypt_next(payload)
        }
        .map_err(|_| match self.opened {
            0 => Error::WrongPassphrase { wait_secs: 0 },
            n => damaged(format!("chunk {} does not open", n + 1)),
        })?;
        self.opened += 1;
        self.buf = Zeroizing::new(plain);
        self.pos = 0;
        if last {
            self.ended = true;
            let mut more = [0u8; 1];
            if self
                .input
                .read(&mut more)
                .map_err(Error::io("reading the backup"))?
                != 0
            {
                return Err(damaged("bytes after its end"));
            }
        }
        Ok(true)
    }

    fn read_exact_plain(&mut self, out: &mut [u8]) -> Result<(), Error> {
        let mut filled = 0;
        while filled < out.len() {
            if self.pos == self.buf.len() && !self.next_chunk()? {
                return Err(damaged("its records stop before their end"));
            }
            let n = (out.len() - filled).min(self.buf.len() - self.pos);
            out[filled..filled + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            filled += n;
        }
        Ok(())
    }

    fn record(&mut self) -> Result<Record, Error> {
        let mut len = [0u8; 4];
        self.read_exact_plain(&mut len)?;
        let len = be32(&len) as usize;
        if len > MAX_RECORD {
            return Err(damaged("a record is too long"));
        }
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        self.read_exact_plain(&mut bytes)?;
        postcard::from_bytes(&bytes).map_err(|e| damaged(format!("a record: {e}")))
    }
}

fn stream_key(
    passphrase: &Passphrase,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<XChaCha20Poly1305, Error> {
    let key = vault::derive_key(passphrase, salt, m, t, p)?;
    Ok(XChaCha20Poly1305::new(key.bytes().into()))
}

fn write_record(w: &mut impl Write, record: &Record) -> Result<(), Error> {
    let bytes = Zeroizing::new(postcard::to_allocvec(record)?);
    let len = u32::try_from(bytes.len())
        .map_err(|_| Error::InvalidInput("a record over 4 GiB".into()))?;
    w.write_all(&len.to_be_bytes())
        .and_then(|_| w.write_all(&bytes))
        .map_err(Error::io("writing the backup"))
}

/// Writes a backup of `identity` and `store` to `path` (through a temporary file renamed into
/// place, so `path` is whole or untouched), sealed under `passphrase`. `progress` hears
/// `(entries written, entries in all)` now and then.
pub(crate) fn export(
    identity: &Identity,
    store: &Store,
    path: &Path,
    passphrase: &Passphrase,
    progress: &dyn Fn(u64, u64),
) -> Result<BackupSummary, Error> {
    passphrase.check_new()?;
    let total = store.entry_count();
    let mut salt = [0u8; 16];
    let mut prefix = [0u8; 19];
    OsRng.fill_bytes(&mut salt);
    OsRng.fill_bytes(&mut prefix);
    let (m, t, p) = (vault::ARGON2_M_KIB, vault::ARGON2_T, vault::ARGON2_P);
    let aad = header(m, t, p, &salt, &prefix);
    let cipher = stream_key(passphrase, &salt, m, t, p)?;
    let tmp = path.with_extension("ferrybak-tmp");
    let file = crate::home::create_private(&tmp)
        .map_err(Error::io(format!("creating {}", tmp.display())))?;
    let result = (|| {
        let mut out = std::io::BufWriter::new(file);
        out.write_all(&aad)
            .map_err(Error::io("writing the backup"))?;
        let mut w = SealingWriter {
            out,
            aad,
            stream: Some(EncryptorBE32::from_aead(cipher, (&prefix).into())),
            buf: Zeroizing::new(Vec::with_capacity(CHUNK)),
            written: HEADER_LEN as u64,
        };
        write_record(
            &mut w,
            &Record::Identity(identity.to_file_bytes()?.to_vec()),
        )?;
        let mut entries = 0u64;
        store.dump(&mut |tree, key, value| {
            write_record(
                &mut w,
                &Record::Entry {
                    tree: tree.to_string(),
                    key: key.to_vec(),
                    value: value.to_vec(),
                },
            )?;
            entries += 1;
            if entries.is_multiple_of(1024) {
                progress(entries, total.max(entries));
            }
            Ok(())
        })?;
        // The restored store's id generator starts at 0: its sequence numbers go on above the
        // ones this store gave.
        let floor = store.next_seq()?.saturating_add(1);
        write_record(
            &mut w,
            &Record::Entry {
                tree: "meta".into(),
                key: crate::store::SEQ_BASE.as_bytes().to_vec(),
                value: postcard::to_allocvec(&floor)?,
            },
        )?;
        entries += 1;
        write_record(&mut w, &Record::End { entries })?;
        let (out, bytes) = w.finish().map_err(Error::io("writing the backup"))?;
        out.into_inner()
            .map_err(|e| Error::io("writing the backup")(e.into_error()))?
            .sync_all()
            .map_err(Error::io("writing the backup"))?;
        progress(entries, entries);
        Ok(BackupSummary { entries, bytes })
    })();
    match result {
        Ok(summary) => {
            std::fs::rename(&tmp, path)
                .map_err(Error::io(format!("writing {}", path.display())))?;
            if let Some(dir) = path.parent() {
                crate::home::sync_dir(dir);
            }
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Whether `home` may receive an import: it does not exist, or is an empty folder.
fn check_empty(home: &Path) -> Result<(), Error> {
    let empty = match std::fs::read_dir(home) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(Error::io(format!("reading {}", home.display()))(e)),
        Ok(mut entries) => entries.next().is_none(),
    };
    if !empty {
        return Err(Error::InvalidInput(format!(
            "{} is not empty: a backup is imported only into a new home (nothing was changed)",
            home.display()
        )));
    }
    Ok(())
}

/// Restores the backup at `file` into `home`, which must not exist or be empty. `passphrase`
/// opens the backup; the new home's data key is kept under `store_passphrase` if given, else
/// in the OS keychain or a file. Returns the restored identity's id. Nothing is written to
/// `home` unless all of it was restored.
pub fn import(
    file: &Path,
    home: &Path,
    passphrase: &Passphrase,
    store_passphrase: Option<&Passphrase>,
) -> Result<(ContactId, BackupSummary), Error> {
    check_empty(home)?;
    let mut input = std::io::BufReader::new(
        std::fs::File::open(file).map_err(Error::io(format!("opening {}", file.display())))?,
    );
    let bytes = std::fs::metadata(file)
        .map_err(Error::io(format!("reading {}", file.display())))?
        .len();
    let mut head = [0u8; HEADER_LEN];
    input
        .read_exact(&mut head)
        .map_err(|_| damaged("it is shorter than its header"))?;
    if &head[..8] != MAGIC {
        return Err(Error::InvalidInput(format!(
            "{} is not a Ferry backup",
            file.display()
        )));
    }
    let version = u16::from_be_bytes([head[8], head[9]]);
    if version != VERSION {
        return Err(Error::Corrupt(format!(
            "backup format {version}, this release reads {VERSION}; a newer release wrote it"
        )));
    }
    let (m, t, p) = (be32(&head[10..]), be32(&head[14..]), be32(&head[18..]));
    let cipher = stream_key(passphrase, &head[22..38], m, t, p)?;
    let mut prefix = [0u8; 19];
    prefix.copy_from_slice(&head[38..]);
    let mut reader = OpeningReader {
        input,
        aad: head,
        stream: Some(DecryptorBE32::from_aead(cipher, (&prefix).into())),
        buf: Zeroizing::new(Vec::new()),
        pos: 0,
        ended: false,
        opened: 0,
    };
    // A first chunk that does not open means a wrong passphrase (or one damaged right there).
    if !reader.next_chunk()? {
        return Err(damaged("it is empty"));
    }

    // Everything goes into a folder beside the home, renamed into place once whole.
    let staging = staging_path(home)?;
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(Error::io(format!("removing {}", staging.display())))?;
    }
    let built = (|| {
        let lock = HomeLock::acquire(&staging)?;
        let Record::Identity(id_bytes) = reader.record()? else {
            return Err(damaged("it does not start with an identity"));
        };
        let identity = Identity::from_file_bytes(&Zeroizing::new(id_bytes))
            .map_err(|e| damaged(format!("its identity: {e}")))?;
        let key = Arc::new(vault::create(&staging, store_passphrase, false)?);
        let store = Store::open(&staging.join(STORE_DIR), &identity.id(), key.clone())?;
        let mut entries = 0u64;
        loop {
            match reader.record()? {
                Record::Entry { tree, key, value } => {
                    store.restore_entry(&tree, &key, &Zeroizing::new(value))?;
                    entries += 1;
                }
                Record::End { entries: n } if n == entries => break,
                Record::End { .. } => return Err(damaged("its count of entries is wrong")),
                Record::Identity(_) => return Err(damaged("a second identity")),
            }
        }
        if reader.next_chunk()? {
            return Err(damaged("records after its end"));
        }
        store.after_restore()?;
        store.flush_sync()?;
        drop(store);
        identity::save_sealed(&identity, &staging, &key)?;
        drop(lock);
        Ok((identity.id(), entries))
    })();
    let (id, entries) = match built {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    check_empty(home)?;
    if home.exists() {
        std::fs::remove_dir(home).map_err(Error::io(format!("replacing {}", home.display())))?;
    }
    std::fs::rename(&staging, home).map_err(Error::io(format!("writing {}", home.display())))?;
    if let Some(parent) = home.parent() {
        crate::home::sync_dir(parent);
    }
    Ok((id, BackupSummary { entries, bytes }))
}

/// The folder an import into `home` is built in.
fn staging_path(home: &Path) -> Result<PathBuf, Error> {
    let name = home
        .file_name()
        .ok_or_else(|| Error::InvalidInput(format!("{} is not a folder name", home.display())))?;
    let mut staging = name.to_os_string();
    staging.push(".importing");
    Ok(home.with_file_name(staging))
}

// ---- scheduled backups ----

/// The setting that holds the backup schedule ([`Schedule`], sealed like every value).
pub(crate) const SETTING_SCHEDULE: &str = "backup_schedule";
/// The setting that holds how the last scheduled backup went ([`LastBackup`]).
pub(crate) const SETTING_LAST: &str = "backup_last";
/// The shortest interval between scheduled backups.
pub const MIN_EVERY_SECS: u64 = 60 * 60;
/// The most scheduled backups kept in their folder.
pub const MAX_KEEP: u32 = 100;
/// What scheduled backups are named: this, a UTC time `YYYYMMDD-HHMMSS`, then `.ferrybak`.
pub const SCHEDULED_PREFIX: &str = "ferry-backup-";

/// Backups written by themselves into a folder, every so often, keeping the newest few.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Schedule {
    dir: PathBuf,
    every_secs: u64,
    keep: u32,
    passphrase: Passphrase,
}

/// How the last scheduled backup went.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LastBackup {
    at_ms: u64,
    file: Option<PathBuf>,
    error: Option<String>,
}

/// The backup schedule as front ends show it (never its passphrase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ScheduleView {
    /// The folder the backups go to.
    pub dir: PathBuf,
    /// Seconds between two backups.
    pub every_secs: u64,
    /// How many of the newest are kept.
    pub keep: u32,
    /// When the last one was written or tried (Unix ms), if ever.
    pub last_at: Option<u64>,
    /// The last one written.
    pub last_file: Option<PathBuf>,
    /// Why the last try failed, if it did.
    pub last_error: Option<String>,
}

/// `YYYYMMDD-HHMMSS` (UTC) of a Unix time in ms.
fn stamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The scheduled backups in `dir`, oldest first (their names sort by time).
fn scheduled_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(SCHEDULED_PREFIX) && n.ends_with(".ferrybak"))
        })
        .collect();
    files.sort();
    files
}

/// Writes scheduled backups while the node runs.
pub(crate) struct Scheduler {
    identity: Identity,
    store: Store,
    events: crate::bus::Events,
    /// Woken when the schedule changes.
    changed: tokio::sync::Notify,
    cancel: tokio_util::sync::CancellationToken,
    /// Milliseconds in one second of the schedule (1,000; tests shorten it).
    second_ms: u64,
}

impl Scheduler {
    pub(crate) fn new(
        identity: Identity,
        store: Store,
        events: crate::bus::Events,
        cancel: tokio_util::sync::CancellationToken,
        second_ms: u64,
    ) -> Arc<Self> {
        Arc::new(Scheduler {
            identity,
            store,
            events,
            changed: tokio::sync::Notify::new(),
            cancel,
            second_ms: second_ms.max(1),
        })
    }

    /// The schedule in force, as front ends show it.
    pub(crate) fn view(&self) -> Result<Option<ScheduleView>, Error> {
        let Some(s) = self.store.setting::<Schedule>(SETTING_SCHEDULE)? else {
            return Ok(None);
        };
        let last: Option<LastBackup> = self.store.setting(SETTING_LAST)?;
        Ok(Some(ScheduleView {
            dir: s.dir,
            every_secs: s.every_secs,
            keep: s.keep,
            last_at: last.as_ref().map(|l| l.at_ms),
            last_file: last.as_ref().and_then(|l| l.file.clone()),
            last_error: last.and_then(|l| l.error),
        }))
    }

    /// Sets the schedule (checked), or turns it off; the next backup is due at once.
    pub(crate) async fn set(
        &self,
        schedule: Option<(PathBuf, u64, u32, Passphrase)>,
    ) -> Result<Option<ScheduleView>, Error> {
        match schedule {
            None => {
                self.store.remove_setting(SETTING_SCHEDULE)?;
            }
            Some((dir, every_secs, keep, passphrase)) => {
                passphrase.check_new()?;
                if every_secs < MIN_EVERY_SECS {
                    return Err(Error::InvalidInput(format!(
                        "scheduled backups are at most one an hour (every {MIN_EVERY_SECS} s)"
                    )));
                }
                if keep == 0 || keep > MAX_KEEP {
                    return Err(Error::InvalidInput(format!(
                        "keep between 1 and {MAX_KEEP} backups"
                    )));
                }
                if !dir.is_absolute() {
                    return Err(Error::InvalidInput(format!(
                        "{} is not an absolute path",
                        dir.display()
                    )));
                }
                std::fs::create_dir_all(&dir)
                    .map_err(Error::io(format!("creating {}", dir.display())))?;
                self.store.set_setting(
                    SETTING_SCHEDULE,
                    &Schedule {
                        dir,
                        every_secs,
                        keep,
                        passphrase,
                    },
                )?;
                self.store.remove_setting(SETTING_LAST)?;
            }
        }
        self.store.flush().await?;
        self.changed.notify_one();
        self.view()
    }

    /// Writes one scheduled backup and keeps the newest `keep`.
    fn run_once(&self, s: &Schedule) -> Result<PathBuf, Error> {
        let mut path = s.dir.join(format!(
            "{SCHEDULED_PREFIX}{}.ferrybak",
            stamp(crate::model::now_ms())
        ));
        // Two in the same second (a schedule changed twice): never overwrite.
        let mut n = 1;
        while path.exists() {
            n += 1;
            path = s.dir.join(format!(
                "{SCHEDULED_PREFIX}{}-{n}.ferrybak",
                stamp(crate::model::now_ms())
            ));
        }
        // What a run killed while writing left (its temporary file) goes.
        let stale = std::time::Duration::from_secs(10 * 60);
        for entry in std::fs::read_dir(&s.dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > stale);
            if old && name.starts_with(SCHEDULED_PREFIX) && name.ends_with(".ferrybak-tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        export(
            &self.identity,
            &self.store,
            &path,
            &s.passphrase,
            &|_, _| {},
        )?;
        let all = scheduled_in(&s.dir);
        let extra = all.len().saturating_sub(s.keep as usize);
        for old in &all[..extra] {
            if let Err(e) = std::fs::remove_file(old) {
                tracing::warn!("removing the old backup {}: {e}", old.display());
            }
        }
        Ok(path)
    }

    /// Runs until the node shuts down.
    pub(crate) async fn run(self: Arc<Self>) {
        loop {
            let wait = match self.due() {
                Ok(Some(wait)) if wait.is_zero() => {
                    let me = self.clone();
                    let outcome = tokio::task::spawn_blocking(move || {
                        let schedule = me.store.setting::<Schedule>(SETTING_SCHEDULE)?;
                        schedule.map(|s| me.run_once(&s)).transpose()
                    })
                    .await;
                    let (file, error) = match outcome {
                        Ok(Ok(file)) => (file, None),
                        Ok(Err(e)) => (None, Some(e.to_string())),
                        Err(e) => (None, Some(e.to_string())),
                    };
                    match &error {
                        Some(e) => tracing::warn!("scheduled backup failed: {e}"),
                        None => tracing::info!(file = ?file, "scheduled backup written"),
                    }
                    let last = LastBackup {
                        at_ms: crate::model::now_ms(),
                        file,
                        error,
                    };
                    if let Err(e) = self.store.set_setting(SETTING_LAST, &last) {
                        tracing::warn!("recording the scheduled backup: {e}");
                    }
                    self.events.emit(crate::model::Event::BackupWritten {
                        at_ms: last.at_ms,
                        file: last.file.map(|f| f.to_string_lossy().into_owned()),
                        error: last.error,
                    });
                    continue;
                }
                Ok(Some(wait)) => wait,
                Ok(None) => std::time::Duration::from_secs(24 * 60 * 60),
                Err(e) => {
                    tracing::warn!("reading the backup schedule: {e}");
                    std::time::Duration::from_secs(60)
                }
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// How long until the next backup is due; `None` without a schedule.
    fn due(&self) -> Result<Option<std::time::Duration>, Error> {
        let Some(s) = self.store.setting::<Schedule>(SETTING_SCHEDULE)? else {
            return Ok(None);
        };
        let last: Option<LastBackup> = self.store.setting(SETTING_LAST)?;
        let Some(last) = last else {
            return Ok(Some(std::time::Duration::ZERO));
        };
        let next = last
            .at_ms
            .saturating_add(s.every_secs.saturating_mul(self.second_ms));
        Ok(Some(std::time::Duration::from_millis(
            next.saturating_sub(crate::model::now_ms()),
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::{Contact, ConversationId};

    /// A home with an identity, a contact and `n` messages, and its backup.
    fn backed_up(dir: &Path, n: u64) -> (Identity, ContactId, PathBuf) {
        std::env::set_var("FERRY_KEYCHAIN", "off");
        let identity = Identity::generate();
        let store =
            Store::open(&dir.join("home/store"), &identity.id(), vault::test_key()).unwrap();
        let bob = iroh::SecretKey::from_bytes(&[7; 32]).public();
        store
            .put_contact(&Contact {
                id: bob,
                name: "Bob".into(),
                x25519: [3; 32],
                addr: Default::default(),
                paired_at: 5,
                verified: true,
            })
            .unwrap();
        let conv = ConversationId::direct(&identity.id(), &bob);
        for i in 0..n {
            store
                .apply(&crate::store::Changes {
                    message: Some(crate::model::Message {
                        id: crate::model::MessageId({
                            let mut id = [1u8; 16];
                            id[..8].copy_from_slice(&i.to_be_bytes());
                            id
                        }),
                        conversation: conv,
                        contact: bob,
                        seq: i + 1,
                        direction: crate::model::Direction::Incoming,
                        body: format!("message {i} of the backup"),
                        sent_at: i,
                        stored_at: i,
                        state: crate::model::MessageState::Received,
                        transfer: None,
                        author: bob,
                    }),
                    ..Default::default()
                })
                .unwrap();
        }
        let file = dir.join("home.ferrybak");
        let seen = std::sync::Mutex::new(Vec::new());
        let done = export(
            &identity,
            &store,
            &file,
            &"backup passphrase".into(),
            &|a, b| seen.lock().unwrap().push((a, b)),
        )
        .unwrap();
        assert!(done.entries > n, "{done:?}");
        assert_eq!(done.bytes, std::fs::metadata(&file).unwrap().len());
        assert_eq!(
            seen.lock().unwrap().last(),
            Some(&(done.entries, done.entries))
        );
        (identity, bob, file)
    }

    #[test]
    fn scheduled_backups_are_named_by_utc_time() {
        assert_eq!(stamp(0), "19700101-000000");
        assert_eq!(stamp(1_767_225_599_000), "20251231-235959");
        assert_eq!(stamp(1_709_164_800_000), "20240229-000000");
    }

    #[test]
    fn a_backup_restores_everything_into_a_new_home_with_every_session_to_reset() {
        let dir = tempfile::tempdir().unwrap();
        let (identity, bob, file) = backed_up(dir.path(), 3000);
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.windows(10).any(|w| w == b"message 17"), "sealed");
        let home = dir.path().join("new");
        let (id, done) = import(&file, &home, &"backup passphrase".into(), None).unwrap();
        assert_eq!(id, identity.id());
        assert_eq!(done.bytes, bytes.len() as u64);
        assert!(!dir.path().join("new.importing").exists());
        let store = Store::open_home(&home, None).unwrap();
        let conv = ConversationId::direct(&identity.id(), &bob);
        let all = store.history(&conv, None, usize::MAX).unwrap();
        assert_eq!(all.len(), 3000);
        assert_eq!(all[17].body, "message 17 of the backup");
        assert!(store.contact(&bob).unwrap().unwrap().verified);
        assert_eq!(store.unread_count(&conv).unwrap(), 3000, "counters rebuilt");
        assert!(store.restored(&bob).unwrap());
        assert!(
            store.next_seq().unwrap() > 3000,
            "sequence numbers go on above the restored"
        );
        assert!(
            !store.sendable(&bob).unwrap(),
            "nothing goes out before the reset"
        );
        // A home that is not empty is refused and left alone.
        drop(store);
        let err = import(&file, &home, &"backup passphrase".into(), None).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        assert!(Store::open_home(&home, None).is_ok());
    }

    #[test]
    fn a_damaged_truncated_or_wrongly_opened_backup_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, file) = backed_up(dir.path(), 2000);
        let whole = std::fs::read(&file).unwrap();
        assert!(whole.len() > 2 * CHUNK, "several chunks: {}", whole.len());
        let home = dir.path().join("target");
        let try_import = |bytes: &[u8], pass: &str| {
            let f = dir.path().join("try.ferrybak");
            std::fs::write(&f, bytes).unwrap();
            let r = import(&f, &home, &pass.into(), None);
            assert!(
                !home.exists() && !dir.path().join("target.importing").exists(),
                "{r:?}"
            );
            r
        };
        assert!(matches!(
            try_import(&whole, "not the passphrase"),
            Err(Error::WrongPassphrase { .. })
        ));
        let cuts = [
            10,
            HEADER_LEN,
            HEADER_LEN + 3,
            HEADER_LEN + 5 + CHUNK / 2,
            whole.len() - 1,
            whole.len() - 17,
        ];
        for cut in cuts {
            let err = try_import(&whole[..cut], "backup passphrase").unwrap_err();
            assert!(
                err.to_string().contains("damaged or incomplete")
                    || matches!(err, Error::WrongPassphrase { .. }),
                "cut at {cut}: {err}"
            );
        }
        // The last chunk dropped whole: the chunk before it does not open as a last one.
        let second_start = HEADER_LEN + 5 + CHUNK + 16;
        let err = try_import(&whole[..second_start + 5 + CHUNK + 16], "backup passphrase");
        assert!(err.is_err());
        for at in [
            HEADER_LEN - 1,
            HEADER_LEN + 40,
            whole.len() / 2,
            whole.len() - 3,
        ] {
            let mut bent = whole.clone();
            bent[at] ^= 0x40;
            assert!(
                try_import(&bent, "backup passphrase").is_err(),
                "a flip at {at}"
            );
        }
        let mut longer = whole.clone();
        longer.push(0);
        let err = try_import(&longer, "backup passphrase").unwrap_err();
        assert!(err.to_string().contains("after its end"), "{err}");
        let err = try_import(
            b"not a backup at all, but long enough for a header to be read here",
            "x",
        )
        .unwrap_err();
        assert!(err.to_string().contains("not a Ferry backup"), "{err}");
        // And the whole file still imports.
        import(&file, &home, &"backup passphrase".into(), None).unwrap();
        assert!(Store::open_home(&home, None).is_ok());
    }
}
