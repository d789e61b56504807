//! The checks behind the fuzz targets (`fuzz/`), one per decoder of outside bytes. The stable
//! test suite runs them too, on every input a fuzzer once found (`fuzz/regressions/`), so a
//! crash stays fixed.
//!
//! Each takes arbitrary bytes. Refusing bad input with an error is the expected outcome; a
//! check panics only when an invariant breaks: a decoder panics, a value does not survive
//! re-encoding, a failed `open` changes the session, or a cleaned name is not clean.

use std::fmt::Debug;
use std::path::Component;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::e2e::{respond, AssociatedData, Envelope, InitiatorHandshake, Session};
use crate::group::{
    check_in_log, fold, Body, Content, EntryHash, KeyShare, LogView, SenderChain, SignedEntry,
};
use crate::invite::Invite;
use crate::keys::Identity;
use crate::model::{Contact, Conversation, Message, Transfer};
use crate::naming::{
    classify_remote, clean_display_name, safe_name, safe_relative_path, MAX_NAME_BYTES,
};
use crate::records::{InviteRecord, MessageV1, OutboxItem};
use crate::wire::{decode_frame, encode_frame, ChatRequest, ChatResponse, PairFrame, Payload};

/// One check: arbitrary bytes in, a panic only on a broken invariant.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name: what `scripts/fuzz.sh` runs and the regression test replays.
pub const TARGETS: &[(&str, Check)] = &[
    ("frame", frame),
    ("payload", payload),
    ("envelope", envelope),
    ("invite_text", invite_text),
    ("invite_qr", invite_qr),
    ("record", record),
    ("name", name),
    ("group_entry", group_entry),
];

/// A value decoded from `bytes` must encode and decode back to itself.
fn roundtrips<T>(bytes: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    if let Ok(value) = postcard::from_bytes::<T>(bytes) {
        let again = postcard::to_allocvec(&value).expect("a decoded value encodes");
        let back = postcard::from_bytes::<T>(&again).expect("its encoding decodes");
        assert_eq!(back, value);
    }
}

/// Frames of both protocols: decoding a whole frame never panics, and what decodes re-frames.
pub fn frame(data: &[u8]) {
    fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
        if let Ok(value) = decode_frame::<T>(data) {
            let again = encode_frame(&value).expect("a decoded frame re-encodes");
            assert_eq!(decode_frame::<T>(&again).ok().as_ref(), Some(&value));
        }
    }
    check::<ChatRequest>(data);
    check::<ChatResponse>(data);
    check::<PairFrame>(data);
}

/// What a sealed envelope holds once opened.
pub fn payload(data: &[u8]) {
    roundtrips::<Payload>(data);
}

/// One session for the whole run (its keys are random per process; the checks do not depend
/// on them).
fn fixed_session() -> &'static (Session, AssociatedData) {
    static SESSION: OnceLock<(Session, AssociatedData)> = OnceLock::new();
    SESSION.get_or_init(|| {
        let (a, b) = (Identity::generate(), Identity::generate());
        let (handshake, a_eph) = InitiatorHandshake::start();
        let (mut responder, b_eph) =
            respond(b.x25519_secret(), &a.x25519_public(), &a_eph, b"fuzz").expect("respond");
        let mut initiator = handshake
            .complete(a.x25519_secret(), &b.x25519_public(), &b_eph, b"fuzz")
            .expect("complete");
        let ad = AssociatedData {
            sender: *a.id().as_bytes(),
            recipient: *b.id().as_bytes(),
            message_id: [7; 16],
        };
        // A few messages in, so the responder has a receiving chain and skipped keys.
        let mut sealed = Vec::new();
        for i in 0..4u8 {
            sealed.push(initiator.seal(&[i], &ad).expect("seal"));
        }
        for e in sealed.iter().rev().take(2) {
            responder.open(e, &ad).expect("open");
        }
        (responder, ad)
    })
}

/// An envelope from a peer, opened against a live session: never a panic, and a failed open
/// leaves the session exactly as it was.
pub fn envelope(data: &[u8]) {
    let Ok(envelope) = postcard::from_bytes::<Envelope>(data) else {
        return;
    };
    let (session, ad) = fixed_session();
    let mut session = session.clone();
    let before = postcard::to_allocvec(&session).expect("a session encodes");
    if session.open(&envelope, ad).is_err() {
        let after = postcard::to_allocvec(&session).expect("a session encodes");
        assert!(before == after, "a failed open changed the session");
    }
}

/// Invite text as pasted: what parses is an invite that writes out and parses back the same.
pub fn invite_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(invite) = Invite::parse(&text) {
        let again = invite.to_text().expect("a parsed invite writes out");
        assert_eq!(Invite::parse(&again).ok(), Some(invite));
    }
}

/// A picture of a QR code (any encoded image): decoding never panics.
pub fn invite_qr(data: &[u8]) {
    if let Ok(text) = crate::qr::read_invite_bytes(data) {
        assert!(
            Invite::parse(&text).is_ok(),
            "read an invite that does not parse"
        );
    }
}

/// Every kind of value the store keeps, and the identity file.
pub fn record(data: &[u8]) {
    roundtrips::<Contact>(data);
    roundtrips::<Message>(data);
    roundtrips::<Transfer>(data);
    roundtrips::<OutboxItem>(data);
    roundtrips::<InviteRecord>(data);
    roundtrips::<Conversation>(data);
    roundtrips::<MessageV1>(data);
    if let Ok(old) = postcard::from_bytes::<MessageV1>(data) {
        // The migration's upgrade of any schema-1 record that decodes encodes and decodes.
        let me = old.contact;
        let new = old.upgrade(&me);
        let bytes = postcard::to_allocvec(&new).expect("a message encodes");
        assert_eq!(postcard::from_bytes::<Message>(&bytes).ok(), Some(new));
    }
    if let Ok(session) = postcard::from_bytes::<Session>(data) {
        // A stored session that decodes must also be usable without a panic.
        let mut session = session;
        let _ = session.seal(b"x", &fixed_session().1);
    }
    if let Ok(identity) = Identity::from_file_bytes(data) {
        let again = identity.to_file_bytes().expect("keys encode");
        let back = Identity::from_file_bytes(&again).expect("their encoding decodes");
        assert_eq!(back.id(), identity.id());
    }
}

/// A group's sender chain a few messages in, with keys skipped (one for the whole run).
fn fixed_chain() -> &'static SenderChain {
    static CHAIN: OnceLock<SenderChain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let share = SenderChain::new(0).share([1; 16], &iroh_base::SecretKey::from_bytes(&[1; 32]));
        let mut chain = SenderChain::from_share(&share);
        let mut theirs = SenderChain::from_share(&share);
        let author = *iroh_base::SecretKey::from_bytes(&[1; 32])
            .public()
            .as_bytes();
        let bodies: Vec<Body> = (0..4)
            .map(|i| {
                theirs.seal(
                    &[1; 16],
                    &author,
                    &Content::Text {
                        body: format!("{i}"),
                    },
                )
            })
            .collect();
        if let Body::Sealed {
            index,
            nonce,
            ciphertext,
            ..
        } = &bodies[3]
        {
            chain
                .open(&[1; 16], &author, *index, nonce, ciphertext)
                .expect("a fresh message opens");
        }
        chain
    })
}

/// A log that holds nothing.
struct NoLog;

impl LogView for NoLog {
    fn group(&self) -> [u8; 16] {
        [1; 16]
    }
    fn lamport_of(&self, _: &EntryHash) -> Option<u64> {
        None
    }
    fn by_author(&self, _: &[u8; 32], _: u64) -> Option<EntryHash> {
        None
    }
}

/// A group entry or key share from a peer (or passed on by one): checking it never panics,
/// what decodes re-encodes, and a sealed entry that fails to open against a live chain leaves
/// the chain as it was.
pub fn group_entry(data: &[u8]) {
    roundtrips::<SignedEntry>(data);
    roundtrips::<Content>(data);
    if let Ok(e) = postcard::from_bytes::<SignedEntry>(data) {
        let _ = e.verify();
        let _ = check_in_log(&e.entry, &e.entry.hash(), &NoLog);
        let _ = fold([&e.entry]);
        if let Body::Sealed {
            index,
            nonce,
            ciphertext,
            ..
        } = &e.entry.body
        {
            let mut chain = fixed_chain().clone();
            let before = postcard::to_allocvec(&chain).expect("a chain encodes");
            if chain
                .open(&e.entry.group, &e.entry.author, *index, nonce, ciphertext)
                .is_err()
            {
                let after = postcard::to_allocvec(&chain).expect("a chain encodes");
                assert!(before == after, "a failed open changed the chain");
            }
        }
    }
    if let Ok(share) = postcard::from_bytes::<KeyShare>(data) {
        let _ = share.verify();
        let again = postcard::to_allocvec(&share).expect("a share encodes");
        assert!(postcard::from_bytes::<KeyShare>(&again).ok() == Some(share));
    }
}

/// A sender's file name, folder path or display name: the cleaned forms keep their promises.
pub fn name(data: &[u8]) {
    let remote = String::from_utf8_lossy(data);
    let clean = safe_name(&remote);
    assert!(
        !clean.is_empty() && clean.len() <= MAX_NAME_BYTES,
        "{clean:?}"
    );
    assert!(clean != "." && clean != "..", "{clean:?}");
    assert!(!clean.contains(['/', '\\', '\0']), "{clean:?}");
    assert_eq!(safe_name(&clean), clean, "safe_name is not idempotent");
    if let Some(rel) = safe_relative_path(&remote) {
        for c in rel.components() {
            let Component::Normal(part) = c else {
                panic!("{rel:?} has a component that leaves its folder: {c:?}");
            };
            let part = part.to_string_lossy();
            assert_eq!(safe_name(&part), part, "{rel:?}");
        }
    }
    let _ = classify_remote(&remote);
    if let Ok(display) = clean_display_name(&remote) {
        assert_eq!(clean_display_name(&display).ok(), Some(display));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_takes_empty_and_junk_input() {
        for (_, check) in TARGETS {
            for input in [&b""[..], &[0], &[0xff; 64], b"ferry:abc", &[1, 0, 0, 0, 1]] {
                check(input);
            }
        }
    }

    #[test]
    fn a_valid_envelope_for_another_message_leaves_the_session_alone() {
        let (session, ad) = fixed_session();
        let mut other = session.clone();
        let sealed = other.seal(b"hi", ad);
        // The responder's own seal is not something it can open: the check must hold.
        if let Ok(e) = sealed {
            envelope(&postcard::to_allocvec(&e).unwrap_or_default());
        }
    }
}
