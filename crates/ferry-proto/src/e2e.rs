//! End-to-end encryption state machine (no I/O).
//!
//! An interactive X3DH-style key agreement between two parties whose X25519
//! identity keys are already known from pairing, followed by the Signal
//! Double Ratchet (<https://signal.org/docs/specifications/doubleratchet/>)
//! with XChaCha20-Poly1305 as the AEAD.
//!
//! * Key agreement: `DH1 = DH(IK_A, IK_B)`, `DH2 = DH(EK_A, IK_B)`,
//!   `DH3 = DH(IK_A, EK_B)`, `DH4 = DH(EK_A, EK_B)`;
//!   `SK = HKDF-SHA256(salt = 0^32, ikm = 0xFF^32 || DH1..DH4, info = "ferry/x3dh/1" || binding)`.
//! * Root KDF: `HKDF-SHA256(salt = RK, ikm = dh, info = "ferry/rk/1")` → 64 bytes (new RK, chain key).
//! * Chain KDF: `HMAC-SHA256(CK, 0x01)` = message key, `HMAC-SHA256(CK, 0x02)` = next chain key.
//! * Message encryption: the AEAD key is `HKDF-SHA256(ikm = MK, info = "ferry/msg/1")`;
//!   the 24-byte XChaCha20 nonce is random and carried in [`Envelope::nonce`].
//!   The AEAD associated data is `VERSION || sender || recipient || message_id ||
//!   ratchet_key || previous_chain_len (u32 BE) || counter (u32 BE)`.
//!
//! Every Diffie-Hellman result (handshake and ratchet steps) must be
//! contributory. [`Session::open`] is transactional: on any error the session
//! is left exactly as it was.

use std::collections::VecDeque;
use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::hmac::{Hmac, Mac};
use hkdf::Hkdf;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{PublicKey, SharedSecret, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

pub use crate::limits::{MAX_CHAIN_GAP, MAX_SKIP};

/// Protocol version, bound into the associated data of every message.
pub const VERSION: u8 = 1;
/// Length in bytes of the random XChaCha20 nonce carried in every [`Envelope`].
pub const NONCE_LEN: usize = 24;

/// Poly1305 tag length; a ciphertext shorter than this is malformed.
const TAG_LEN: usize = 16;
/// How many previous receiving ratchet keys are remembered to report replays of old chains.
const MAX_RETIRED_RATCHET_KEYS: usize = 16;
/// Length of the encoded AEAD associated data.
const AD_LEN: usize = 1 + 32 + 32 + 16 + HEADER_LEN;
/// Length of the fixed header encoding.
const HEADER_LEN: usize = 32 + 4 + 4;

const X3DH_INFO: &[u8] = b"ferry/x3dh/1";
const RK_INFO: &[u8] = b"ferry/rk/1";
const MSG_INFO: &[u8] = b"ferry/msg/1";
/// The chain KDF's constants: HMAC(chain key, 1) is a message key, HMAC(chain key, 2) the
/// next chain key (the Double Ratchet here, and the group sender chains).
pub(crate) const CK_MESSAGE: u8 = 0x01;
pub(crate) const CK_CHAIN: u8 = 0x02;

type HmacSha256 = Hmac<Sha256>;

/// Errors of the end-to-end encryption layer.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum E2eError {
    /// A Diffie-Hellman result was all zeros (low-order or otherwise invalid public key).
    #[error("non-contributory Diffie-Hellman result (low-order or invalid public key)")]
    NonContributory,
    /// The message could not be authenticated (wrong key, tampered ciphertext, header or associated data).
    #[error("message authentication failed")]
    Decrypt,
    /// The message was already received, or its key has been discarded.
    #[error("message already received (replay) or its key was discarded")]
    Replay,
    /// The header would skip more than `MAX_CHAIN_GAP` message keys.
    #[error("too many skipped messages in one header")]
    TooManySkipped,
    /// This side cannot send yet: the responder must first open a message from the initiator.
    #[error("no sending chain yet: the responder must receive the first message before sending")]
    NoSendingChain,
    /// A message counter would overflow `u32`.
    #[error("message counter overflow")]
    CounterOverflow,
    /// The envelope is structurally invalid (e.g. ciphertext shorter than the tag).
    #[error("malformed envelope")]
    Malformed,
    /// An internal cryptographic primitive failed (randomness source, or a plaintext too large for the AEAD).
    #[error("internal cryptographic failure")]
    Crypto,
}

/// Associated data bound into every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssociatedData {
    /// Sender's endpoint or identity bytes.
    pub sender: [u8; 32],
    /// Recipient's endpoint or identity bytes.
    pub recipient: [u8; 32],
    /// Application-level message id.
    pub message_id: [u8; 16],
}

/// The cleartext ratchet header of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The sender's current ratchet public key.
    pub ratchet_key: [u8; 32],
    /// Number of messages in the sender's previous sending chain.
    pub previous_chain_len: u32,
    /// Index of this message in the sender's current sending chain.
    pub counter: u32,
}

impl Header {
    /// Fixed-length encoding: ratchet key, previous chain length (BE), counter (BE).
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..32].copy_from_slice(&self.ratchet_key);
        out[32..36].copy_from_slice(&self.previous_chain_len.to_be_bytes());
        out[36..40].copy_from_slice(&self.counter.to_be_bytes());
        out
    }
}

/// One sealed message: header, random nonce and XChaCha20-Poly1305 ciphertext (with tag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The cleartext ratchet header (authenticated as associated data).
    pub header: Header,
    /// Random 24-byte XChaCha20 nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte Poly1305 tag.
    pub ciphertext: Vec<u8>,
}

/// A 32-byte secret that is wiped on drop.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Key32(pub(crate) [u8; 32]);

impl Key32 {
    fn zeroed() -> Self {
        Key32([0u8; 32])
    }
}

/// A skipped message key, indexed by (ratchet key, counter).
#[derive(Clone, Serialize, Deserialize)]
struct SkippedKey {
    ratchet_key: [u8; 32],
    counter: u32,
    message_key: Key32,
}

/// Initiator's pending state between its hello and the responder's answer (holds its ephemeral secret; zeroized on drop).
pub struct InitiatorHandshake {
    ephemeral: StaticSecret,
}

impl fmt::Debug for InitiatorHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitiatorHandshake")
            .field(
                "ephemeral_public",
                &PublicKey::from(&self.ephemeral).to_bytes(),
            )
            .finish_non_exhaustive()
    }
}

impl InitiatorHandshake {
    /// Starts a handshake: returns the pending state and the ephemeral public key to send.
    pub fn start() -> (Self, [u8; 32]) {
        let ephemeral = StaticSecret::random_from_rng(OsRng);
        let public = PublicKey::from(&ephemeral).to_bytes();
        (InitiatorHandshake { ephemeral }, public)
    }

    /// Completes it with the responder's ephemeral key. `binding` is context bytes (e.g. both endpoint ids and a transcript hash) mixed into HKDF info.
    pub fn complete(
        self,
        my_identity: &StaticSecret,
        their_identity: &[u8; 32],
        their_ephemeral: &[u8; 32],
        binding: &[u8],
    ) -> Result<Session, E2eError> {
        let dh1 = dh(my_identity, their_identity)?;
        let dh2 = dh(&self.ephemeral, their_identity)?;
        let dh3 = dh(my_identity, their_ephemeral)?;
        let dh4 = dh(&self.ephemeral, their_ephemeral)?;
        let sk = derive_shared_key([&dh1, &dh2, &dh3, &dh4], binding)?;

        let ratchet = StaticSecret::random_from_rng(OsRng);
        let ratchet_public = PublicKey::from(&ratchet).to_bytes();
        let (rk, cks) = kdf_rk(&sk, &dh(&ratchet, their_ephemeral)?)?;
        Ok(Session {
            dhs_secret: Key32(ratchet.to_bytes()),
            dhs_public: ratchet_public,
            dhr: Some(*their_ephemeral),
            rk,
            cks: Some(cks),
            ckr: None,
            ns: 0,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
            retired: VecDeque::new(),
        })
    }
}

/// Responder side: given the initiator's identity and ephemeral keys, returns its session and its own ephemeral public key to send back.
pub fn respond(
    my_identity: &StaticSecret,
    their_identity: &[u8; 32],
    their_ephemeral: &[u8; 32],
    binding: &[u8],
) -> Result<(Session, [u8; 32]), E2eError> {
    let ephemeral = StaticSecret::random_from_rng(OsRng);
    let ephemeral_public = PublicKey::from(&ephemeral).to_bytes();
    let dh1 = dh(my_identity, their_identity)?;
    let dh2 = dh(my_identity, their_ephemeral)?;
    let dh3 = dh(&ephemeral, their_identity)?;
    let dh4 = dh(&ephemeral, their_ephemeral)?;
    let sk = derive_shared_key([&dh1, &dh2, &dh3, &dh4], binding)?;
    let session = Session {
        dhs_secret: Key32(ephemeral.to_bytes()),
        dhs_public: ephemeral_public,
        dhr: None,
        rk: sk,
        cks: None,
        ckr: None,
        ns: 0,
        nr: 0,
        pn: 0,
        skipped: VecDeque::new(),
        retired: VecDeque::new(),
    };
    Ok((session, ephemeral_public))
}

/// A Double Ratchet session; persist it with postcard (the serialized form contains secrets).
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// Our current ratchet secret key (DHs).
    dhs_secret: Key32,
    /// Our current ratchet public key.
    dhs_public: [u8; 32],
    /// The peer's current ratchet public key (DHr).
    dhr: Option<[u8; 32]>,
    /// Root key.
    rk: Key32,
    /// Sending chain key.
    cks: Option<Key32>,
    /// Receiving chain key.
    ckr: Option<Key32>,
    /// Next sending counter.
    ns: u32,
    /// Next expected receiving counter.
    nr: u32,
    /// Length of our previous sending chain.
    pn: u32,
    /// Skipped message keys, oldest first.
    skipped: VecDeque<SkippedKey>,
    /// Previous receiving ratchet keys, oldest first (for replay reporting).
    retired: VecDeque<[u8; 32]>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("ratchet_public", &self.dhs_public)
            .field("peer_ratchet_public", &self.dhr)
            .field("can_send", &self.can_send())
            .field("sent_in_chain", &self.ns)
            .field("received_in_chain", &self.nr)
            .field("previous_chain_len", &self.pn)
            .field("skipped_keys", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

/// Result of a DH ratchet step computed during `open`, committed only on success.
struct PendingStep {
    rk: Key32,
    cks: Key32,
    dhs_secret: Key32,
    dhs_public: [u8; 32],
}

impl Session {
    /// Every secret this session holds (ratchet secret, root and chain keys, skipped message
    /// keys), for tests that check none of it reaches the disk in clear.
    #[doc(hidden)]
    pub fn secrets(&self) -> Vec<[u8; 32]> {
        let mut out = vec![self.dhs_secret.0, self.rk.0];
        out.extend(self.cks.iter().chain(&self.ckr).map(|k| k.0));
        out.extend(self.skipped.iter().map(|s| s.message_key.0));
        out
    }

    /// Seals a plaintext. Advances the sending chain.
    pub fn seal(&mut self, plaintext: &[u8], ad: &AssociatedData) -> Result<Envelope, E2eError> {
        let cks = self.cks.as_ref().ok_or(E2eError::NoSendingChain)?;
        let next_ns = self.ns.checked_add(1).ok_or(E2eError::CounterOverflow)?;
        let (next_cks, message_key) = kdf_ck(cks)?;
        let header = Header {
            ratchet_key: self.dhs_public,
            previous_chain_len: self.pn,
            counter: self.ns,
        };
        let mut nonce = [0u8; NONCE_LEN];
        OsRng
            .try_fill_bytes(&mut nonce)
            .map_err(|_| E2eError::Crypto)?;
        let aad = associated_data(ad, &header);
        let ciphertext = message_cipher(&message_key)?
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| E2eError::Crypto)?;
        self.cks = Some(next_cks);
        self.ns = next_ns;
        Ok(Envelope {
            header,
            nonce,
            ciphertext,
        })
    }

    /// Opens an envelope. On any error the session is left exactly as it was (work on a copy, commit on success).
    pub fn open(&mut self, envelope: &Envelope, ad: &AssociatedData) -> Result<Vec<u8>, E2eError> {
        if envelope.ciphertext.len() < TAG_LEN {
            return Err(E2eError::Malformed);
        }
        let header = &envelope.header;
        let aad = associated_data(ad, header);

        // 1. A key we skipped earlier: use it and erase it, nothing else changes.
        if let Some(index) = self
            .skipped
            .iter()
            .position(|s| s.counter == header.counter && s.ratchet_key == header.ratchet_key)
        {
            let plaintext = decrypt(&self.skipped[index].message_key, envelope, &aad)?;
            drop(self.skipped.remove(index));
            return Ok(plaintext);
        }

        // 2. Work out the receiving chain to use, without touching `self`.
        let mut new_skipped: Vec<SkippedKey> = Vec::new();
        let (mut ckr, mut nr, step) = if self.dhr == Some(header.ratchet_key) {
            let ckr = self.ckr.clone().ok_or(E2eError::Decrypt)?;
            if header.counter < self.nr {
                return Err(E2eError::Replay);
            }
            if header.counter - self.nr > MAX_CHAIN_GAP {
                return Err(E2eError::TooManySkipped);
            }
            // Reserve up front so no copy of a key is left behind by a reallocation.
            new_skipped.reserve((header.counter - self.nr) as usize);
            (ckr, self.nr, None)
        } else {
            if self.retired.contains(&header.ratchet_key) {
                return Err(E2eError::Replay);
            }
            let old_gap = match self.ckr {
                Some(_) => u64::from(header.previous_chain_len.saturating_sub(self.nr)),
                None => 0,
            };
            if old_gap + u64::from(header.counter) > u64::from(MAX_CHAIN_GAP) {
                return Err(E2eError::TooManySkipped);
            }
            // Reserve up front so no copy of a key is left behind by a reallocation.
            new_skipped.reserve((old_gap + u64::from(header.counter)) as usize);
            // Finish the old receiving chain up to the sender's previous chain length.
            if let (Some(ckr), Some(dhr)) = (&self.ckr, self.dhr) {
                let mut ck = ckr.clone();
                let mut n = self.nr;
                skip_keys(
                    &mut ck,
                    &mut n,
                    header.previous_chain_len,
                    dhr,
                    &mut new_skipped,
                )?;
            }
            // DH ratchet step: receiving chain, then a fresh key pair and sending chain.
            let dhs = StaticSecret::from(self.dhs_secret.0);
            let (rk1, ckr) = kdf_rk(&self.rk, &dh(&dhs, &header.ratchet_key)?)?;
            let new_dhs = StaticSecret::random_from_rng(OsRng);
            let dhs_public = PublicKey::from(&new_dhs).to_bytes();
            let (rk2, cks) = kdf_rk(&rk1, &dh(&new_dhs, &header.ratchet_key)?)?;
            let step = PendingStep {
                rk: rk2,
                cks,
                dhs_secret: Key32(new_dhs.to_bytes()),
                dhs_public,
            };
            (ckr, 0, Some(step))
        };

        let next_nr = header
            .counter
            .checked_add(1)
            .ok_or(E2eError::CounterOverflow)?;
        skip_keys(
            &mut ckr,
            &mut nr,
            header.counter,
            header.ratchet_key,
            &mut new_skipped,
        )?;
        let (next_ckr, message_key) = kdf_ck(&ckr)?;
        let plaintext = decrypt(&message_key, envelope, &aad)?;

        // 3. Success: commit.
        if let Some(step) = step {
            if let Some(old) = self.dhr.take() {
                if self.retired.len() >= MAX_RETIRED_RATCHET_KEYS {
                    self.retired.pop_front();
                }
                self.retired.push_back(old);
            }
            self.dhr = Some(header.ratchet_key);
            self.pn = self.ns;
            self.ns = 0;
            self.rk = step.rk;
            self.cks = Some(step.cks);
            self.dhs_secret = step.dhs_secret;
            self.dhs_public = step.dhs_public;
        }
        self.ckr = Some(next_ckr);
        self.nr = next_nr;
        for key in new_skipped {
            if self.skipped.len() >= MAX_SKIP {
                drop(self.skipped.pop_front());
            }
            self.skipped.push_back(key);
        }
        Ok(plaintext)
    }

    /// True once this side can send (the initiator can at once; the responder after it has opened the initiator's first message).
    pub fn can_send(&self) -> bool {
        self.cks.is_some()
    }

    /// Number of skipped message keys currently held.
    pub fn skipped_keys(&self) -> usize {
        self.skipped.len()
    }

    /// Test-only view of the root key.
    #[cfg(test)]
    pub(crate) fn root_key(&self) -> [u8; 32] {
        self.rk.0
    }
}

/// X25519 with the contributory check.
fn dh(secret: &StaticSecret, public: &[u8; 32]) -> Result<SharedSecret, E2eError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    if shared.was_contributory() {
        Ok(shared)
    } else {
        Err(E2eError::NonContributory)
    }
}

/// SK = HKDF-SHA256(salt = 0^32, ikm = 0xFF^32 || DH1..DH4, info = "ferry/x3dh/1" || binding).
fn derive_shared_key(terms: [&SharedSecret; 4], binding: &[u8]) -> Result<Key32, E2eError> {
    let mut ikm = Zeroizing::new([0u8; 32 * 5]);
    ikm[..32].fill(0xFF);
    for (chunk, term) in ikm[32..].chunks_exact_mut(32).zip(terms) {
        chunk.copy_from_slice(term.as_bytes());
    }
    let hk = Hkdf::<Sha256>::new(Some(&[0u8; 32]), &ikm[..]);
    let mut sk = Key32::zeroed();
    hk.expand_multi_info(&[X3DH_INFO, binding], &mut sk.0)
        .map_err(|_| E2eError::Crypto)?;
    Ok(sk)
}

/// KDF_RK: HKDF-SHA256(salt = RK, ikm = dh, info = "ferry/rk/1") → (new root key, chain key).
fn kdf_rk(rk: &Key32, dh_out: &SharedSecret) -> Result<(Key32, Key32), E2eError> {
    let hk = Hkdf::<Sha256>::new(Some(&rk.0), dh_out.as_bytes());
    let mut okm = Zeroizing::new([0u8; 64]);
    hk.expand(RK_INFO, &mut okm[..])
        .map_err(|_| E2eError::Crypto)?;
    let mut root = Key32::zeroed();
    let mut chain = Key32::zeroed();
    root.0.copy_from_slice(&okm[..32]);
    chain.0.copy_from_slice(&okm[32..]);
    Ok((root, chain))
}

/// KDF_CK: (next chain key, message key).
fn kdf_ck(ck: &Key32) -> Result<(Key32, Key32), E2eError> {
    Ok((hmac32(ck, CK_CHAIN), hmac32(ck, CK_MESSAGE)))
}

/// HMAC-SHA256 of one constant byte under `key`.
pub(crate) fn hmac32(key: &Key32, constant: u8) -> Key32 {
    // HMAC takes a key of any length: this cannot fail.
    let Ok(mut mac) = <HmacSha256 as Mac>::new_from_slice(&key.0) else {
        unreachable!("HMAC accepts any key length")
    };
    mac.update(&[constant]);
    let mut tag = mac.finalize().into_bytes();
    let mut out = Key32::zeroed();
    out.0.copy_from_slice(&tag);
    tag.as_mut_slice().zeroize();
    out
}

/// Advances `ck` from `*n` up to `until` (exclusive), recording each skipped message key.
fn skip_keys(
    ck: &mut Key32,
    n: &mut u32,
    until: u32,
    ratchet_key: [u8; 32],
    out: &mut Vec<SkippedKey>,
) -> Result<(), E2eError> {
    while *n < until {
        let (next, message_key) = kdf_ck(ck)?;
        out.push(SkippedKey {
            ratchet_key,
            counter: *n,
            message_key,
        });
        *ck = next;
        *n += 1;
    }
    Ok(())
}

/// The per-message AEAD (its key is zeroized when the cipher is dropped).
fn message_cipher(message_key: &Key32) -> Result<XChaCha20Poly1305, E2eError> {
    let hk = Hkdf::<Sha256>::new(None, &message_key.0);
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(MSG_INFO, &mut key[..])
        .map_err(|_| E2eError::Crypto)?;
    XChaCha20Poly1305::new_from_slice(&key[..]).map_err(|_| E2eError::Crypto)
}

fn decrypt(message_key: &Key32, envelope: &Envelope, aad: &[u8]) -> Result<Vec<u8>, E2eError> {
    message_cipher(message_key)?
        .decrypt(
            XNonce::from_slice(&envelope.nonce),
            Payload {
                msg: &envelope.ciphertext,
                aad,
            },
        )
        .map_err(|_| E2eError::Decrypt)
}

/// VERSION || sender || recipient || message_id || header encoding.
fn associated_data(ad: &AssociatedData, header: &Header) -> [u8; AD_LEN] {
    let mut out = [0u8; AD_LEN];
    out[0] = VERSION;
    out[1..33].copy_from_slice(&ad.sender);
    out[33..65].copy_from_slice(&ad.recipient);
    out[65..81].copy_from_slice(&ad.message_id);
    out[81..].copy_from_slice(&header.encode());
    out
}

/// Ed25519 signatures as postcard bytes (signed frames, group entries, key shares).
pub(crate) mod serde_sig {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(sig)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let bytes: &[u8] = <&[u8]>::deserialize(d)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"64 bytes"))
    }
}

#[cfg(test)]
mod tests;
