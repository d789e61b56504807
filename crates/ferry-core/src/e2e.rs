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

/// Maximum number of skipped message keys kept per session (total, across chains; oldest evicted first).
pub const MAX_SKIP: usize = 2000;
/// Protocol version, bound into the associated data of every message.
pub const VERSION: u8 = 1;
/// Maximum number of message keys a single incoming header may make us skip (old and new chain together).
pub const MAX_CHAIN_GAP: u32 = 2000;
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
const CK_MESSAGE: u8 = 0x01;
const CK_CHAIN: u8 = 0x02;

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
struct Key32([u8; 32]);

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
    Ok((hmac32(ck, CK_CHAIN)?, hmac32(ck, CK_MESSAGE)?))
}

fn hmac32(key: &Key32, constant: u8) -> Result<Key32, E2eError> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(&key.0).map_err(|_| E2eError::Crypto)?;
    mac.update(&[constant]);
    let mut tag = mac.finalize().into_bytes();
    let mut out = Key32::zeroed();
    out.0.copy_from_slice(&tag);
    tag.as_mut_slice().zeroize();
    Ok(out)
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const BINDING: &[u8] = b"ferry-test-binding";

    struct Peers {
        a: Session,
        b: Session,
    }

    fn identity() -> (StaticSecret, [u8; 32]) {
        let secret = StaticSecret::random_from_rng(OsRng);
        let public = PublicKey::from(&secret).to_bytes();
        (secret, public)
    }

    fn handshake() -> Peers {
        let (ika, ika_pub) = identity();
        let (ikb, ikb_pub) = identity();
        let (pending, eka) = InitiatorHandshake::start();
        let (b, ekb) = respond(&ikb, &ika_pub, &eka, BINDING).unwrap();
        let a = pending.complete(&ika, &ikb_pub, &ekb, BINDING).unwrap();
        Peers { a, b }
    }

    fn ad_ab(n: u32) -> AssociatedData {
        let mut message_id = [0u8; 16];
        message_id[..4].copy_from_slice(&n.to_be_bytes());
        AssociatedData {
            sender: [0xAA; 32],
            recipient: [0xBB; 32],
            message_id,
        }
    }

    fn ad_ba(n: u32) -> AssociatedData {
        let mut ad = ad_ab(n);
        std::mem::swap(&mut ad.sender, &mut ad.recipient);
        ad.message_id[15] = 1;
        ad
    }

    fn state(s: &Session) -> Vec<u8> {
        postcard::to_allocvec(s).unwrap()
    }

    fn msg(tag: &str, n: u32) -> Vec<u8> {
        format!("{tag} #{n}").into_bytes()
    }

    /// Low-order / invalid X25519 points that give an all-zero shared secret.
    fn low_order_points() -> Vec<[u8; 32]> {
        let mut points = vec![[0u8; 32]];
        let mut one = [0u8; 32];
        one[0] = 1;
        points.push(one);
        points.push([
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ]);
        points.push([
            0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83,
            0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd,
            0xd0, 0x9f, 0x11, 0x57,
        ]);
        // p - 1, p, p + 1 (non-canonical encodings of low-order points).
        for low in [0xec, 0xed, 0xee] {
            let mut p = [0xff; 32];
            p[0] = low;
            p[31] = 0x7f;
            points.push(p);
        }
        points
    }

    #[test]
    fn handshake_both_sides_agree_and_messages_flow_both_ways() {
        let Peers { mut a, mut b } = handshake();
        let mut na = 0u32;
        let mut nb = 0u32;
        // Alternating single messages, then growing bursts each way.
        for round in 0..6u32 {
            let burst = if round < 2 { 1 } else { round };
            for _ in 0..burst {
                let env = a.seal(&msg("a", na), &ad_ab(na)).unwrap();
                assert_eq!(b.open(&env, &ad_ab(na)).unwrap(), msg("a", na));
                na += 1;
            }
            assert!(b.can_send());
            for _ in 0..burst {
                let env = b.seal(&msg("b", nb), &ad_ba(nb)).unwrap();
                assert_eq!(a.open(&env, &ad_ba(nb)).unwrap(), msg("b", nb));
                nb += 1;
            }
        }
        // Empty and larger plaintexts too.
        let env = a.seal(b"", &ad_ab(na)).unwrap();
        assert_eq!(b.open(&env, &ad_ab(na)).unwrap(), b"");
        let big = vec![0x5a; 64 * 1024];
        let env = b.seal(&big, &ad_ba(nb)).unwrap();
        assert_eq!(a.open(&env, &ad_ba(nb)).unwrap(), big);
        assert_eq!(a.skipped_keys(), 0);
        assert_eq!(b.skipped_keys(), 0);
    }

    #[test]
    fn mismatched_binding_or_identity_does_not_agree() {
        let (ika, ika_pub) = identity();
        let (ikb, ikb_pub) = identity();
        let (_other, other_pub) = identity();

        let (pending, eka) = InitiatorHandshake::start();
        let (mut b, ekb) = respond(&ikb, &ika_pub, &eka, b"binding-1").unwrap();
        let mut a = pending
            .complete(&ika, &ikb_pub, &ekb, b"binding-2")
            .unwrap();
        let env = a.seal(b"hi", &ad_ab(0)).unwrap();
        let before = state(&b);
        assert_eq!(b.open(&env, &ad_ab(0)), Err(E2eError::Decrypt));
        assert_eq!(state(&b), before);

        let (pending, eka) = InitiatorHandshake::start();
        let (mut b, ekb) = respond(&ikb, &other_pub, &eka, BINDING).unwrap();
        let mut a = pending.complete(&ika, &ikb_pub, &ekb, BINDING).unwrap();
        let env = a.seal(b"hi", &ad_ab(0)).unwrap();
        assert_eq!(b.open(&env, &ad_ab(0)), Err(E2eError::Decrypt));
    }

    #[test]
    fn out_of_order_delivery_within_a_chain_and_across_dh_steps_is_decrypted() {
        let Peers { mut a, mut b } = handshake();
        // A's first chain: a0..a4, delivered as a2, a0 (a1, a3, a4 delayed).
        let first: Vec<Envelope> = (0..5)
            .map(|i| a.seal(&msg("a", i), &ad_ab(i)).unwrap())
            .collect();
        assert_eq!(b.open(&first[2], &ad_ab(2)).unwrap(), msg("a", 2));
        assert_eq!(b.skipped_keys(), 2);
        assert_eq!(b.open(&first[0], &ad_ab(0)).unwrap(), msg("a", 0));
        assert_eq!(b.skipped_keys(), 1);

        // B replies with two messages; A gets them in reverse order (A does a DH step on b1).
        let replies: Vec<Envelope> = (0..2)
            .map(|i| b.seal(&msg("b", i), &ad_ba(i)).unwrap())
            .collect();
        assert_eq!(a.open(&replies[1], &ad_ba(1)).unwrap(), msg("b", 1));
        assert_eq!(a.open(&replies[0], &ad_ba(0)).unwrap(), msg("b", 0));
        assert_eq!(a.skipped_keys(), 0);

        // A's second chain: c0, c1 (previous_chain_len = 5). B gets c1 first: it
        // must finish A's first chain (a3, a4 skipped) and skip c0.
        let second: Vec<Envelope> = (10..12)
            .map(|i| a.seal(&msg("c", i), &ad_ab(i)).unwrap())
            .collect();
        assert_eq!(second[1].header.previous_chain_len, 5);
        assert_eq!(b.open(&second[1], &ad_ab(11)).unwrap(), msg("c", 11));
        assert_eq!(b.skipped_keys(), 4); // a1, a3, a4, c0
        assert_eq!(b.open(&first[3], &ad_ab(3)).unwrap(), msg("a", 3));
        assert_eq!(b.open(&second[0], &ad_ab(10)).unwrap(), msg("c", 10));
        assert_eq!(b.open(&first[1], &ad_ab(1)).unwrap(), msg("a", 1));
        assert_eq!(b.open(&first[4], &ad_ab(4)).unwrap(), msg("a", 4));
        assert_eq!(b.skipped_keys(), 0);

        // And the conversation goes on.
        let env = b.seal(b"still here", &ad_ba(7)).unwrap();
        assert_eq!(a.open(&env, &ad_ba(7)).unwrap(), b"still here");
    }

    #[test]
    fn dh_step_changes_the_root_key() {
        let Peers { mut a, mut b } = handshake();
        let a0 = a.root_key();
        let b0 = b.root_key();
        assert_ne!(a0, b0, "initiator already did its first DH step");

        // Sealing within a chain does not touch the root key.
        let e0 = a.seal(b"1", &ad_ab(0)).unwrap();
        let e1 = a.seal(b"2", &ad_ab(1)).unwrap();
        assert_eq!(a.root_key(), a0);

        // B's first receive is a DH step.
        b.open(&e0, &ad_ab(0)).unwrap();
        let b1 = b.root_key();
        assert_ne!(b1, b0);
        // Same chain: no change.
        b.open(&e1, &ad_ab(1)).unwrap();
        assert_eq!(b.root_key(), b1);

        // A's receive of B's reply is a DH step.
        let r = b.seal(b"3", &ad_ba(0)).unwrap();
        assert_eq!(b.root_key(), b1);
        a.open(&r, &ad_ba(0)).unwrap();
        let a1 = a.root_key();
        assert_ne!(a1, a0);
        // Both sides' chains line up: A's new sending chain is B's next receiving chain.
        let e2 = a.seal(b"4", &ad_ab(2)).unwrap();
        b.open(&e2, &ad_ab(2)).unwrap();
        assert_ne!(b.root_key(), b1);
        assert_eq!(a.root_key(), a1);
    }

    #[test]
    fn replayed_message_is_rejected_and_state_unchanged() {
        let Peers { mut a, mut b } = handshake();
        let e0 = a.seal(b"zero", &ad_ab(0)).unwrap();
        let e1 = a.seal(b"one", &ad_ab(1)).unwrap();
        b.open(&e0, &ad_ab(0)).unwrap();
        b.open(&e1, &ad_ab(1)).unwrap();

        for (env, ad) in [(&e0, ad_ab(0)), (&e1, ad_ab(1))] {
            let before = state(&b);
            assert_eq!(b.open(env, &ad), Err(E2eError::Replay));
            assert_eq!(state(&b), before);
        }

        // After both sides ratcheted, replays of the old chain are still rejected.
        let r = b.seal(b"reply", &ad_ba(0)).unwrap();
        a.open(&r, &ad_ba(0)).unwrap();
        let e2 = a.seal(b"two", &ad_ab(2)).unwrap();
        b.open(&e2, &ad_ab(2)).unwrap();
        for (env, ad) in [(&e0, ad_ab(0)), (&e1, ad_ab(1)), (&e2, ad_ab(2))] {
            let before = state(&b);
            assert_eq!(b.open(env, &ad), Err(E2eError::Replay));
            assert_eq!(state(&b), before);
        }
        let before = state(&a);
        assert_eq!(a.open(&r, &ad_ba(0)), Err(E2eError::Replay));
        assert_eq!(state(&a), before);

        // The session still works.
        let e3 = a.seal(b"three", &ad_ab(3)).unwrap();
        assert_eq!(b.open(&e3, &ad_ab(3)).unwrap(), b"three");
    }

    #[test]
    fn tampered_ciphertext_header_or_associated_data_is_rejected_and_state_unchanged() {
        let Peers { mut a, mut b } = handshake();
        let (_, random_key) = identity();

        // Case 1: a message that triggers a DH step on B (B's first receive, with a gap).
        // Case 2: a message within B's current receiving chain (after the first one is opened).
        let first = a.seal(b"first", &ad_ab(0)).unwrap();
        let skipped_one = a.seal(b"skipped", &ad_ab(1)).unwrap();
        let later = a.seal(b"later", &ad_ab(2)).unwrap();
        for (stage, env, ad) in [(0, &first, ad_ab(0)), (1, &later, ad_ab(2))] {
            let mut tampered: Vec<(Envelope, AssociatedData, E2eError)> = Vec::new();
            let mut t = env.clone();
            t.ciphertext[0] ^= 1;
            tampered.push((t, ad, E2eError::Decrypt));
            let mut t = env.clone();
            let last = t.ciphertext.len() - 1;
            t.ciphertext[last] ^= 0x80;
            tampered.push((t, ad, E2eError::Decrypt));
            let mut t = env.clone();
            t.ciphertext.truncate(TAG_LEN - 1);
            tampered.push((t, ad, E2eError::Malformed));
            let mut t = env.clone();
            t.ciphertext.push(0);
            tampered.push((t, ad, E2eError::Decrypt));
            let mut t = env.clone();
            t.nonce[3] ^= 1;
            tampered.push((t, ad, E2eError::Decrypt));
            let mut t = env.clone();
            t.header.counter += 1;
            tampered.push((t, ad, E2eError::Decrypt));
            let mut t = env.clone();
            t.header.counter += 7;
            tampered.push((t, ad, E2eError::Decrypt));
            let mut t = env.clone();
            t.header.previous_chain_len += 3;
            tampered.push((t, ad, E2eError::Decrypt));
            let mut t = env.clone();
            t.header.ratchet_key = random_key;
            tampered.push((t, ad, E2eError::Decrypt));
            let mut t = env.clone();
            t.header.ratchet_key = low_order_points()[2];
            tampered.push((t, ad, E2eError::NonContributory));
            for field in 0..3 {
                let mut bad = ad;
                match field {
                    0 => bad.sender[0] ^= 1,
                    1 => bad.recipient[31] ^= 1,
                    _ => bad.message_id[7] ^= 1,
                }
                tampered.push((env.clone(), bad, E2eError::Decrypt));
            }
            let swapped = AssociatedData {
                sender: ad.recipient,
                recipient: ad.sender,
                message_id: ad.message_id,
            };
            tampered.push((env.clone(), swapped, E2eError::Decrypt));

            for (i, (t, bad_ad, expected)) in tampered.iter().enumerate() {
                let before = state(&b);
                assert_eq!(
                    &b.open(t, bad_ad).unwrap_err(),
                    expected,
                    "stage {stage} case {i}"
                );
                assert_eq!(state(&b), before, "stage {stage} case {i}");
            }
            // The genuine message still opens afterwards.
            assert_eq!(
                b.open(env, &ad).unwrap(),
                if stage == 0 {
                    b"first".to_vec()
                } else {
                    b"later".to_vec()
                }
            );
        }

        // Case 3: a skipped key must survive a forged message aimed at it.
        assert_eq!(b.skipped_keys(), 1);
        let mut t = skipped_one.clone();
        t.ciphertext[2] ^= 4;
        let before = state(&b);
        assert_eq!(b.open(&t, &ad_ab(1)), Err(E2eError::Decrypt));
        assert_eq!(state(&b), before);
        assert_eq!(b.open(&skipped_one, &ad_ab(1)).unwrap(), b"skipped");
    }

    #[test]
    fn message_key_is_gone_after_use() {
        let Peers { mut a, mut b } = handshake();
        let envs: Vec<Envelope> = (0..3)
            .map(|i| a.seal(&msg("a", i), &ad_ab(i)).unwrap())
            .collect();
        b.open(&envs[2], &ad_ab(2)).unwrap();
        assert_eq!(b.skipped_keys(), 2);
        assert!(b
            .skipped
            .iter()
            .any(|s| s.counter == 0 && s.ratchet_key == envs[0].header.ratchet_key));

        b.open(&envs[0], &ad_ab(0)).unwrap();
        assert_eq!(b.skipped_keys(), 1);
        assert!(!b.skipped.iter().any(|s| s.counter == 0));
        let before = state(&b);
        assert_eq!(b.open(&envs[0], &ad_ab(0)), Err(E2eError::Replay));
        assert_eq!(state(&b), before);

        b.open(&envs[1], &ad_ab(1)).unwrap();
        assert_eq!(b.skipped_keys(), 0);
        assert_eq!(b.open(&envs[1], &ad_ab(1)), Err(E2eError::Replay));
        // The in-chain key for message 2 is gone too: the chain has moved past it.
        assert_eq!(b.nr, 3);
        assert_eq!(b.open(&envs[2], &ad_ab(2)), Err(E2eError::Replay));

        // The sender's chain key moved on as well: sealing again never reuses a counter.
        let next = a.seal(b"next", &ad_ab(3)).unwrap();
        assert_eq!(next.header.counter, 3);
    }

    #[test]
    fn skipped_keys_are_capped_at_max_skip() {
        let Peers { mut a, mut b } = handshake();
        // First chain: skip exactly MAX_CHAIN_GAP keys (the largest gap allowed).
        let first: Vec<Envelope> = (0..=MAX_CHAIN_GAP)
            .map(|i| a.seal(b"x", &ad_ab(i)).unwrap())
            .collect();
        b.open(&first[MAX_CHAIN_GAP as usize], &ad_ab(MAX_CHAIN_GAP))
            .unwrap();
        assert_eq!(b.skipped_keys(), MAX_SKIP);

        // Ratchet, then skip 5 more in A's next chain: the 5 oldest keys are evicted.
        let r = b.seal(b"r", &ad_ba(0)).unwrap();
        a.open(&r, &ad_ba(0)).unwrap();
        let second: Vec<Envelope> = (0..6)
            .map(|i| a.seal(b"y", &ad_ab(100 + i)).unwrap())
            .collect();
        b.open(&second[5], &ad_ab(105)).unwrap();
        assert_eq!(b.skipped_keys(), MAX_SKIP);

        for i in 0..5u32 {
            assert_eq!(b.open(&first[i as usize], &ad_ab(i)), Err(E2eError::Replay));
        }
        assert_eq!(b.open(&first[5], &ad_ab(5)).unwrap(), b"x");
        assert_eq!(b.open(&second[0], &ad_ab(100)).unwrap(), b"y");
        assert_eq!(b.open(&first[1999], &ad_ab(1999)).unwrap(), b"x");
        assert_eq!(b.skipped_keys(), MAX_SKIP - 3);
    }

    #[test]
    fn too_large_gap_is_rejected() {
        let Peers { mut a, mut b } = handshake();
        let e0 = a.seal(b"0", &ad_ab(0)).unwrap();

        // First message (DH step on B) claiming a counter beyond the gap.
        for counter in [MAX_CHAIN_GAP + 1, u32::MAX] {
            let mut t = e0.clone();
            t.header.counter = counter;
            let before = state(&b);
            assert_eq!(b.open(&t, &ad_ab(0)), Err(E2eError::TooManySkipped));
            assert_eq!(state(&b), before);
        }
        b.open(&e0, &ad_ab(0)).unwrap();

        // Within the current chain: relative to the next expected counter (1).
        let e1 = a.seal(b"1", &ad_ab(1)).unwrap();
        let mut t = e1.clone();
        t.header.counter = 1 + MAX_CHAIN_GAP + 1;
        let before = state(&b);
        assert_eq!(b.open(&t, &ad_ab(1)), Err(E2eError::TooManySkipped));
        assert_eq!(state(&b), before);

        // A DH step whose old-chain plus new-chain gap together exceed the limit.
        let r = b.seal(b"r", &ad_ba(0)).unwrap();
        a.open(&r, &ad_ba(0)).unwrap();
        let c0 = a.seal(b"c", &ad_ab(2)).unwrap();
        let mut t = c0.clone();
        t.header.previous_chain_len = 1 + MAX_CHAIN_GAP; // B is at nr = 1: gap 2000 in the old chain
        t.header.counter = 1; // plus 1 in the new chain
        let before = state(&b);
        assert_eq!(b.open(&t, &ad_ab(2)), Err(E2eError::TooManySkipped));
        assert_eq!(state(&b), before);

        // A genuine gap past the limit (sender really sent that many) is rejected too.
        for i in 0..=MAX_CHAIN_GAP {
            a.seal(b"lost", &ad_ab(i)).unwrap();
        }
        let far = a.seal(b"far", &ad_ab(9)).unwrap();
        assert_eq!(far.header.counter, MAX_CHAIN_GAP + 2);
        assert_eq!(b.open(&far, &ad_ab(9)), Err(E2eError::TooManySkipped));

        // Everything in range still works.
        assert_eq!(b.open(&e1, &ad_ab(1)).unwrap(), b"1");
        assert_eq!(b.open(&c0, &ad_ab(2)).unwrap(), b"c");
    }

    #[test]
    fn non_contributory_identity_or_ephemeral_is_rejected() {
        let (ika, ika_pub) = identity();
        let (ikb, ikb_pub) = identity();
        for bad in low_order_points() {
            // Responder: bad initiator identity or ephemeral.
            let (_pending, eka) = InitiatorHandshake::start();
            assert_eq!(
                respond(&ikb, &bad, &eka, BINDING).err(),
                Some(E2eError::NonContributory)
            );
            assert_eq!(
                respond(&ikb, &ika_pub, &bad, BINDING).err(),
                Some(E2eError::NonContributory)
            );

            // Initiator: bad responder identity or ephemeral.
            let (pending, eka) = InitiatorHandshake::start();
            let (_b, ekb) = respond(&ikb, &ika_pub, &eka, BINDING).unwrap();
            assert_eq!(
                pending.complete(&ika, &bad, &ekb, BINDING).err(),
                Some(E2eError::NonContributory)
            );
            let (pending, _eka) = InitiatorHandshake::start();
            assert_eq!(
                pending.complete(&ika, &ikb_pub, &bad, BINDING).err(),
                Some(E2eError::NonContributory)
            );
        }

        // Ratchet step: a low-order ratchet key in a header is rejected, state unchanged.
        let Peers { mut a, mut b } = handshake();
        let env = a.seal(b"hi", &ad_ab(0)).unwrap();
        for bad in low_order_points() {
            let mut t = env.clone();
            t.header.ratchet_key = bad;
            let before = state(&b);
            assert_eq!(b.open(&t, &ad_ab(0)), Err(E2eError::NonContributory));
            assert_eq!(state(&b), before);
        }
        assert_eq!(b.open(&env, &ad_ab(0)).unwrap(), b"hi");
    }

    #[test]
    fn session_survives_serialize_roundtrip_mid_conversation() {
        let Peers { mut a, mut b } = handshake();
        let e0 = a.seal(b"0", &ad_ab(0)).unwrap();
        let e1 = a.seal(b"1", &ad_ab(1)).unwrap();
        b.open(&e1, &ad_ab(1)).unwrap(); // leaves a skipped key for e0
        let r0 = b.seal(b"r0", &ad_ba(0)).unwrap();

        let bytes_a = state(&a);
        let bytes_b = state(&b);
        let mut a2: Session = postcard::from_bytes(&bytes_a).unwrap();
        let mut b2: Session = postcard::from_bytes(&bytes_b).unwrap();
        drop(a);
        drop(b);
        assert_eq!(state(&a2), bytes_a);
        assert_eq!(state(&b2), bytes_b);
        assert_eq!(b2.skipped_keys(), 1);
        assert!(b2.can_send());

        assert_eq!(b2.open(&e0, &ad_ab(0)).unwrap(), b"0");
        assert_eq!(a2.open(&r0, &ad_ba(0)).unwrap(), b"r0");
        let e2 = a2.seal(b"2", &ad_ab(2)).unwrap();
        assert_eq!(b2.open(&e2, &ad_ab(2)).unwrap(), b"2");
        let r1 = b2.seal(b"r1", &ad_ba(1)).unwrap();
        assert_eq!(a2.open(&r1, &ad_ba(1)).unwrap(), b"r1");

        // Envelopes round-trip through postcard as well.
        let wire = postcard::to_allocvec(&r1).unwrap();
        let back: Envelope = postcard::from_bytes(&wire).unwrap();
        assert_eq!(back, r1);
    }

    #[test]
    fn responder_cannot_send_before_first_message() {
        let Peers { mut a, mut b } = handshake();
        assert!(a.can_send());
        assert!(!b.can_send());
        let before = state(&b);
        assert_eq!(
            b.seal(b"too early", &ad_ba(0)).err(),
            Some(E2eError::NoSendingChain)
        );
        assert_eq!(state(&b), before);

        let env = a.seal(b"hello", &ad_ab(0)).unwrap();
        b.open(&env, &ad_ab(0)).unwrap();
        assert!(b.can_send());
        let r = b.seal(b"now", &ad_ba(0)).unwrap();
        assert_eq!(a.open(&r, &ad_ba(0)).unwrap(), b"now");
    }

    #[test]
    fn counter_overflow_is_reported() {
        let Peers { mut a, mut b } = handshake();
        a.ns = u32::MAX;
        let before = state(&a);
        assert_eq!(
            a.seal(b"x", &ad_ab(0)).err(),
            Some(E2eError::CounterOverflow)
        );
        assert_eq!(state(&a), before);

        // Receiving side: a header at u32::MAX in the current chain (forced state).
        b.nr = u32::MAX - 1;
        b.dhr = Some([9; 32]);
        b.ckr = Some(Key32([3; 32]));
        let mut t = Envelope {
            header: Header {
                ratchet_key: [9; 32],
                previous_chain_len: 0,
                counter: u32::MAX,
            },
            nonce: [0; NONCE_LEN],
            ciphertext: vec![0; 32],
        };
        let before = state(&b);
        assert_eq!(b.open(&t, &ad_ab(0)), Err(E2eError::CounterOverflow));
        assert_eq!(state(&b), before);
        t.header.counter = u32::MAX - 1;
        assert_eq!(b.open(&t, &ad_ab(0)), Err(E2eError::Decrypt));
        assert_eq!(state(&b), before);
    }

    #[test]
    fn debug_output_has_no_secrets() {
        let Peers { a, .. } = handshake();
        let text = format!("{a:?}");
        assert!(text.contains("Session"));
        assert!(!text.contains(&format!("{:?}", a.root_key())));
        assert!(!text.contains(&format!("{:?}", a.dhs_secret.0)));
        let (pending, _) = InitiatorHandshake::start();
        assert!(format!("{pending:?}").contains("InitiatorHandshake"));
    }
}
