//! The data key that seals a home at rest, and where it is kept.
//!
//! Every value in the store and the identity secret are sealed with XChaCha20-Poly1305 under
//! one random 256-bit data key ([`DataKey`]). The key itself is kept, in this order of
//! preference:
//! 1. wrapped under a passphrase (Argon2id, [`ARGON2_M_KIB`] KiB, t = [`ARGON2_T`]; the
//!    parameters are stored beside it);
//! 2. in the OS keychain (Secret Service, Keychain, Credential Manager), unless
//!    `FERRY_KEYCHAIN=off` or none answers;
//! 3. in a file readable by its owner only, which protects nothing against someone who copies
//!    the folder: front ends say so.
//!
//! The key file `datakey.json` says which. Setting, changing or removing the passphrase
//! rewrites only it (atomically), never the store. After [`MAX_FREE_TRIES`] wrong passphrases
//! in a row, each further try must wait longer ([`wait_after`]); the count is kept in
//! `unlock.failures` so a new process does not reset it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use ferry_proto::model::Protection;

use crate::home::write_atomic;
use crate::Error;

/// The key file's name inside a home.
pub const KEY_FILE: &str = "datakey.json";
/// Where wrong passphrases are counted, inside a home.
pub const FAILURES_FILE: &str = "unlock.failures";
/// Argon2id memory, in KiB (64 MiB).
pub const ARGON2_M_KIB: u32 = 64 * 1024;
/// Argon2id passes.
pub const ARGON2_T: u32 = 3;
/// Argon2id lanes.
pub const ARGON2_P: u32 = 1;
/// Wrong passphrases in a row before tries must wait.
pub const MAX_FREE_TRIES: u32 = 5;
/// The shortest passphrase accepted when one is set.
pub const MIN_PASSPHRASE_CHARS: usize = 8;
/// The keychain service name Ferry's entries are stored under.
pub const KEYCHAIN_SERVICE: &str = "ferry";
/// The key file format this code writes and reads.
const KEY_FILE_VERSION: u32 = 1;
/// The first byte of everything sealed by [`DataKey::seal`]: the format.
const SEALED_V1: u8 = 1;
/// Bytes a sealed value adds to its plaintext: the format byte, the nonce and the tag.
pub const SEAL_OVERHEAD: usize = 1 + 24 + 16;
/// What the wrapped data key is bound to.
const WRAP_AAD: &[u8] = b"ferry/datakey/1";
/// Argon2 parameters above these are refused when read (a damaged or hostile key file must not
/// make an unlock take gigabytes or hours).
const ARGON2_MAX_M_KIB: u32 = 4 * 1024 * 1024;
const ARGON2_MAX_T: u32 = 64;
const ARGON2_MAX_P: u32 = 16;

/// The 256-bit key every value of a home is sealed under. Zeroized when dropped; never
/// printed.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut k[..]);
        DataKey(k)
    }

    fn from_slice(bytes: &[u8]) -> Option<Self> {
        let mut k = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return None;
        }
        k.copy_from_slice(bytes);
        Some(DataKey(k))
    }

    /// The key's bytes (for a cipher built elsewhere in the engine).
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.0).into())
    }

    /// Seals `plain`, bound to `aad`: format byte ‖ random 24-byte nonce ‖ ciphertext and tag.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
            // Encryption fails only for inputs beyond 256 GiB.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plain.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`DataKey::seal`] sealed with the same `aad`; `None` if it was damaged,
    /// sealed under another key or bound to something else.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < SEAL_OVERHEAD || sealed[0] != SEALED_V1 {
            return None;
        }
        self.cipher()
            .decrypt(
                XNonce::from_slice(&sealed[1..25]),
                Payload {
                    msg: &sealed[25..],
                    aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

/// A passphrase, zeroized when dropped and never printed.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

impl Serialize for Passphrase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Passphrase {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Passphrase::from)
    }
}

impl From<String> for Passphrase {
    fn from(s: String) -> Self {
        Passphrase(Zeroizing::new(s))
    }
}

impl From<&str> for Passphrase {
    fn from(s: &str) -> Self {
        Passphrase(Zeroizing::new(s.to_string()))
    }
}

impl Passphrase {
    /// Reads one from an environment variable, if it is set (and not empty).
    pub fn from_env(var: &str) -> Option<Self> {
        std::env::var(var)
            .ok()
            .filter(|s| !s.is_empty())
            .map(Passphrase::from)
    }

    /// Whether two are the same (in constant time for equal lengths).
    pub fn same_as(&self, other: &Passphrase) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Whether it is long enough to be set as a new passphrase.
    pub fn check_new(&self) -> Result<(), Error> {
        if self.0.chars().count() < MIN_PASSPHRASE_CHARS {
            return Err(Error::InvalidInput(format!(
                "a passphrase needs at least {MIN_PASSPHRASE_CHARS} characters"
            )));
        }
        Ok(())
    }
}

/// The key file: which way the data key is kept, and what it takes to get it back.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    #[serde(flatten)]
    kept: Kept,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kept_in", rename_all = "snake_case")]
enum Kept {
    /// Wrapped with XChaCha20-Poly1305 under Argon2id(passphrase, salt).
    Passphrase {
        m_kib: u32,
        t: u32,
        p: u32,
        salt: String,
        nonce: String,
        wrapped: String,
    },
    /// In the OS keychain, under [`KEYCHAIN_SERVICE`] and this account.
    Keychain { account: String },
    /// Here, in base64.
    File { key: String },
}

impl Kept {
    fn protection(&self) -> Protection {
        match self {
            Kept::Passphrase { .. } => Protection::Passphrase,
            Kept::Keychain { .. } => Protection::Keychain,
            Kept::File { .. } => Protection::File,
        }
    }
}

const B64: data_encoding::Encoding = data_encoding::BASE64;

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn unb64(what: &str, s: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    B64.decode(s.as_bytes())
        .map(Zeroizing::new)
        .map_err(|e| Error::Corrupt(format!("{KEY_FILE}: {what}: {e}")))
}

/// How the data key of `home` is kept, or `None` if the home has no key file (not created
/// yet, or written by a release before sealing).
pub fn protection(home: &Path) -> Result<Option<Protection>, Error> {
    Ok(read_key_file(home)?.map(|f| f.kept.protection()))
}

fn read_key_file(home: &Path) -> Result<Option<KeyFile>, Error> {
    let path = home.join(KEY_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => Zeroizing::new(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()))(e)),
    };
    let file: KeyFile = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
    if file.version != KEY_FILE_VERSION {
        return Err(Error::Corrupt(format!(
            "{}: version {}, this release reads {KEY_FILE_VERSION}; a newer release wrote it",
            path.display(),
            file.version
        )));
    }
    Ok(Some(file))
}

fn write_key_file(home: &Path, kept: Kept) -> Result<(), Error> {
    let file = KeyFile {
        version: KEY_FILE_VERSION,
        kept,
    };
    let json = Zeroizing::new(serde_json::to_vec_pretty(&file)?);
    write_atomic(&home.join(KEY_FILE), &json)
}

/// A key derived from a passphrase with Argon2id (parameters checked against hostile values).
pub(crate) fn derive_key(
    passphrase: &Passphrase,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<DataKey, Error> {
    if m > ARGON2_MAX_M_KIB || t > ARGON2_MAX_T || p > ARGON2_MAX_P {
        return Err(Error::Corrupt(format!(
            "{KEY_FILE}: Argon2 parameters out of range (m {m} KiB, t {t}, p {p})"
        )));
    }
    let params = argon2::Params::new(m, t, p, Some(32))
        .map_err(|e| Error::Corrupt(format!("{KEY_FILE}: Argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.0.as_bytes(), salt, &mut out[..])
        .map_err(|e| Error::Corrupt(format!("{KEY_FILE}: Argon2: {e}")))?;
    Ok(DataKey(out))
}

fn wrap(key: &DataKey, passphrase: &Passphrase) -> Result<Kept, Error> {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let kek = derive_key(passphrase, &salt, ARGON2_M_KIB, ARGON2_T, ARGON2_P)?;
    let sealed = kek.seal(WRAP_AAD, &key.0[..]);
    Ok(Kept::Passphrase {
        m_kib: ARGON2_M_KIB,
        t: ARGON2_T,
        p: ARGON2_P,
        salt: b64(&salt),
        nonce: b64(&sealed[1..25]),
        wrapped: b64(&sealed[25..]),
    })
}

/// Whether the OS keychain may be used: not when `FERRY_KEYCHAIN` is `off` (tests, servers
/// without a desktop session).
fn keychain_allowed() -> bool {
    !matches!(
        std::env::var("FERRY_KEYCHAIN").as_deref(),
        Ok("off" | "0" | "no" | "false")
    )
}

fn keychain_entry(account: &str) -> Result<keyring::Entry, keyring::Error> {
    keyring::Entry::new(KEYCHAIN_SERVICE, account)
}

/// Puts the key in the OS keychain; `None` if there is none (or it refused), after logging why.
fn to_keychain(key: &DataKey) -> Option<Kept> {
    if !keychain_allowed() {
        return None;
    }
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    let account = format!("data key {}", data_encoding::HEXLOWER.encode(&id));
    let stored = keychain_entry(&account).and_then(|e| {
        e.set_secret(&key.0[..])?;
        // Only a keychain that gives it back counts (some stores accept and forget).
        let back = Zeroizing::new(e.get_secret()?);
        if back[..] != key.0[..] {
            return Err(keyring::Error::NoEntry);
        }
        Ok(())
    });
    match stored {
        Ok(()) => Some(Kept::Keychain { account }),
        Err(e) => {
            tracing::info!("no OS keychain to keep the data key in ({e}); keeping it in a file");
            None
        }
    }
}

fn from_keychain(account: &str) -> Result<DataKey, Error> {
    let secret = keychain_entry(account)
        .and_then(|e| e.get_secret())
        .map(Zeroizing::new)
        .map_err(|e| Error::Keychain(format!("reading this home's data key: {e}")))?;
    DataKey::from_slice(&secret)
        .ok_or_else(|| Error::Corrupt("the data key in the OS keychain is not 32 bytes".into()))
}

fn forget_keychain(kept: &Kept) {
    if let Kept::Keychain { account } = kept {
        if let Err(e) = keychain_entry(account).and_then(|e| e.delete_credential()) {
            tracing::warn!("removing the old data key from the OS keychain: {e}");
        }
    }
}

/// Where a key without a passphrase goes: the keychain, else the file.
fn kept_without_passphrase(key: &DataKey) -> Kept {
    to_keychain(key).unwrap_or_else(|| Kept::File {
        key: b64(&key.0[..]),
    })
}

/// Creates the data key of a new (or, on its first open, an earlier release's) home and keeps
/// it under `passphrase`, else in the keychain, else in the file. Replaces a key file only if
/// `replace` (an `init` cut short before its identity was written).
pub(crate) fn create(
    home: &Path,
    passphrase: Option<&Passphrase>,
    replace: bool,
) -> Result<DataKey, Error> {
    let old = read_key_file(home)?;
    if old.is_some() && !replace {
        return Err(Error::AlreadyInitialized(home.to_path_buf()));
    }
    let key = DataKey::generate();
    let kept = match passphrase {
        Some(p) => {
            p.check_new()?;
            wrap(&key, p)?
        }
        None => kept_without_passphrase(&key),
    };
    write_key_file(home, kept)?;
    if let Some(old) = old {
        forget_keychain(&old.kept);
    }
    Ok(key)
}

/// Gets the data key of `home` back: with `passphrase` if it is kept under one (a clear error
/// if none was given, or a wrong one), else from the keychain or the file.
pub(crate) fn unlock(home: &Path, passphrase: Option<&Passphrase>) -> Result<DataKey, Error> {
    let file = read_key_file(home)?.ok_or_else(|| Error::NotInitialized(home.to_path_buf()))?;
    match &file.kept {
        Kept::Passphrase {
            m_kib,
            t,
            p,
            salt,
            nonce,
            wrapped,
        } => {
            let passphrase = passphrase.ok_or(Error::PassphraseNeeded)?;
            let failures = Failures::read(home);
            if let Some(wait) = failures.wait_left() {
                return Err(Error::UnlockWait {
                    secs: wait.as_secs().max(1),
                });
            }
            let kek = derive_key(passphrase, &unb64("salt", salt)?, *m_kib, *t, *p)?;
            let sealed = [
                &[SEALED_V1][..],
                &unb64("nonce", nonce)?,
                &unb64("wrapped", wrapped)?,
            ]
            .concat();
            match kek.open(WRAP_AAD, &sealed) {
                Some(raw) => {
                    Failures::clear(home);
                    DataKey::from_slice(&raw)
                        .ok_or_else(|| Error::Corrupt(format!("{KEY_FILE}: a key not 32 bytes")))
                }
                None => {
                    let count = failures.count.saturating_add(1);
                    Failures::record(home, count);
                    Err(Error::WrongPassphrase {
                        wait_secs: wait_after(count).as_secs(),
                    })
                }
            }
        }
        Kept::Keychain { account } => from_keychain(account),
        Kept::File { key } => DataKey::from_slice(&unb64("key", key)?)
            .ok_or_else(|| Error::Corrupt(format!("{KEY_FILE}: a key not 32 bytes"))),
    }
}

/// Changes how the data key of `home` is kept, without touching the store: under `new` if
/// given, else in the keychain or the file. `current` is needed if a passphrase protects it
/// now. Returns the new protection.
pub fn change_passphrase(
    home: &Path,
    current: Option<&Passphrase>,
    new: Option<&Passphrase>,
) -> Result<Protection, Error> {
    if let Some(new) = new {
        new.check_new()?;
    }
    let Some(old) = read_key_file(home)? else {
        // A home of a release before sealing, not opened since: its key is made now, and it
        // is sealed under that key at its next open.
        if !crate::home::has_identity(home) {
            return Err(Error::NotInitialized(home.to_path_buf()));
        }
        let key = create(home, new, false)?;
        drop(key);
        return protection(home)?.ok_or_else(|| Error::NotInitialized(home.to_path_buf()));
    };
    let key = unlock(home, current)?;
    let kept = match new {
        Some(p) => wrap(&key, p)?,
        None => kept_without_passphrase(&key),
    };
    let protection = kept.protection();
    write_key_file(home, kept)?;
    forget_keychain(&old.kept);
    Ok(protection)
}

/// How long a try must wait after `count` wrong passphrases in a row: nothing up to
/// [`MAX_FREE_TRIES`], then 10 s, doubling with each further wrong one, at most 15 minutes.
pub fn wait_after(count: u32) -> Duration {
    if count < MAX_FREE_TRIES {
        return Duration::ZERO;
    }
    let doublings = (count - MAX_FREE_TRIES).min(16);
    Duration::from_secs((10u64 << doublings).min(15 * 60))
}

/// Wrong passphrases in a row, and when the last one was tried.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Failures {
    count: u32,
    last_ms: u64,
}

impl Failures {
    fn path(home: &Path) -> PathBuf {
        home.join(FAILURES_FILE)
    }

    fn read(home: &Path) -> Self {
        std::fs::read(Self::path(home))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn record(home: &Path, count: u32) {
        let f = Failures {
            count,
            last_ms: crate::model::now_ms(),
        };
        let written = serde_json::to_vec(&f)
            .map_err(Error::from)
            .and_then(|b| write_atomic(&Self::path(home), &b));
        if let Err(e) = written {
            tracing::warn!("counting a wrong passphrase: {e}");
        }
    }

    fn clear(home: &Path) {
        let _ = std::fs::remove_file(Self::path(home));
    }

    /// How long the next try must still wait.
    fn wait_left(&self) -> Option<Duration> {
        let wait = wait_after(self.count);
        let since = Duration::from_millis(crate::model::now_ms().saturating_sub(self.last_ms));
        (since < wait).then(|| wait - since)
    }
}

/// One key for every store a unit test opens, so a test can open its store again.
#[cfg(test)]
pub(crate) fn test_key() -> std::sync::Arc<DataKey> {
    static KEY: std::sync::OnceLock<std::sync::Arc<DataKey>> = std::sync::OnceLock::new();
    KEY.get_or_init(|| std::sync::Arc::new(DataKey::generate()))
        .clone()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_binding() {
        let key = DataKey::generate();
        let sealed = key.seal(b"a", b"canary");
        assert_eq!(sealed.len(), SEAL_OVERHEAD + 6);
        assert!(!sealed.windows(6).any(|w| w == b"canary"));
        assert_eq!(&key.open(b"a", &sealed).unwrap()[..], b"canary");
        assert!(key.open(b"b", &sealed).is_none());
        assert!(DataKey::generate().open(b"a", &sealed).is_none());
        let mut bent = sealed.clone();
        *bent.last_mut().unwrap() ^= 1;
        assert!(key.open(b"a", &bent).is_none());
        assert!(key.open(b"a", &sealed[..SEAL_OVERHEAD - 1]).is_none());
        assert_ne!(key.seal(b"a", b"canary"), sealed, "a fresh nonce each time");
        assert_eq!(format!("{key:?}"), "DataKey(..)");
    }

    #[test]
    fn the_waits_grow_after_five_wrong_tries() {
        assert_eq!(wait_after(4), Duration::ZERO);
        assert_eq!(wait_after(5), Duration::from_secs(10));
        assert_eq!(wait_after(6), Duration::from_secs(20));
        assert_eq!(wait_after(60), Duration::from_secs(900));
    }

    #[test]
    fn a_passphrase_changes_only_the_key_file_and_a_wrong_one_changes_nothing() {
        std::env::set_var("FERRY_KEYCHAIN", "off");
        let home = tempfile::tempdir().unwrap();
        let home = home.path();
        let key = create(home, None, false).unwrap();
        assert_eq!(protection(home).unwrap(), Some(Protection::File));
        let good = Passphrase::from("correct horse");
        assert!(matches!(
            change_passphrase(home, None, Some(&"short".into())),
            Err(Error::InvalidInput(_))
        ));
        assert_eq!(
            change_passphrase(home, None, Some(&good)).unwrap(),
            Protection::Passphrase
        );
        let text = std::fs::read_to_string(home.join(KEY_FILE)).unwrap();
        assert!(
            !text.contains(&b64(&key.0[..])),
            "the key is not in the clear"
        );
        assert!(matches!(unlock(home, None), Err(Error::PassphraseNeeded)));
        let before = std::fs::read(home.join(KEY_FILE)).unwrap();
        assert!(matches!(
            unlock(home, Some(&"wrong one!".into())),
            Err(Error::WrongPassphrase { wait_secs: 0 })
        ));
        assert!(matches!(
            change_passphrase(home, Some(&"wrong one!".into()), None),
            Err(Error::WrongPassphrase { .. })
        ));
        assert_eq!(std::fs::read(home.join(KEY_FILE)).unwrap(), before);
        assert_eq!(unlock(home, Some(&good)).unwrap().0, key.0);
        assert!(
            !home.join(FAILURES_FILE).exists(),
            "a right one clears the count"
        );
        let newer = Passphrase::from("battery staple");
        change_passphrase(home, Some(&good), Some(&newer)).unwrap();
        assert!(matches!(
            unlock(home, Some(&good)),
            Err(Error::WrongPassphrase { .. })
        ));
        assert_eq!(unlock(home, Some(&newer)).unwrap().0, key.0);
        assert_eq!(
            change_passphrase(home, Some(&newer), None).unwrap(),
            Protection::File
        );
        assert_eq!(unlock(home, None).unwrap().0, key.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(home.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn after_five_wrong_tries_even_the_right_one_waits() {
        std::env::set_var("FERRY_KEYCHAIN", "off");
        let home = tempfile::tempdir().unwrap();
        let home = home.path();
        let good = Passphrase::from("correct horse");
        create(home, Some(&good), false).unwrap();
        for i in 1..=MAX_FREE_TRIES {
            let want = wait_after(i).as_secs();
            match unlock(home, Some(&"nope nope".into())) {
                Err(Error::WrongPassphrase { wait_secs }) => assert_eq!(wait_secs, want),
                other => panic!("try {i}: {other:?}"),
            }
        }
        match unlock(home, Some(&good)) {
            Err(Error::UnlockWait { secs }) => assert!((1..=10).contains(&secs), "{secs}"),
            other => panic!("{other:?}"),
        }
        // Once the wait is over, the right one opens and the count starts again.
        std::fs::write(home.join(FAILURES_FILE), br#"{"count":5,"last_ms":0}"#).unwrap();
        unlock(home, Some(&good)).unwrap();
        assert_eq!(Failures::read(home).count, 0);
    }

    #[test]
    fn a_hostile_key_file_cannot_make_an_unlock_take_forever() {
        let home = tempfile::tempdir().unwrap();
        let home = home.path();
        std::fs::write(
            home.join(KEY_FILE),
            r#"{"version":1,"kept_in":"passphrase","m_kib":4294967295,"t":1,"p":1,
               "salt":"AAAAAAAAAAAAAAAAAAAAAA==","nonce":"","wrapped":""}"#,
        )
        .unwrap();
        assert!(matches!(
            unlock(home, Some(&"whatever1".into())),
            Err(Error::Corrupt(_))
        ));
        std::fs::write(
            home.join(KEY_FILE),
            r#"{"version":9,"kept_in":"file","key":""}"#,
        )
        .unwrap();
        let err = unlock(home, None).unwrap_err();
        assert!(err.to_string().contains("newer release"), "{err}");
    }
}
