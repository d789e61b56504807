//! Runs every fuzz check on the committed inputs: the seeds the fuzzers start from
//! (`fuzz/seeds/<target>/`) and every input a fuzzer once failed on
//! (`fuzz/regressions/<target>/`), so a found crash stays fixed on the stable toolchain.
//!
//! `FERRY_WRITE_FUZZ_SEEDS=1 cargo test -p ferry-proto --test fuzz_regressions` rewrites the
//! seeds from real values.

use std::path::{Path, PathBuf};

use ferry_proto::e2e::{respond, AssociatedData, InitiatorHandshake};
use ferry_proto::fuzzing::TARGETS;
use ferry_proto::group;
use ferry_proto::invite::Invite;
use ferry_proto::keys::Identity;
use ferry_proto::model::{
    Contact, Conversation, ConversationId, Direction, MessageId, MessageState, WireAddr,
};
use ferry_proto::records::{InviteRecord, MessageV1};
use ferry_proto::wire::{encode_frame, ChatRequest, ChatResponse, PairFrame, Payload};

/// This package's folder, as cargo says when it runs the test (the compile-time value can name
/// another checkout when several share one target folder).
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn fuzz_dir() -> PathBuf {
    manifest_dir().join("../../fuzz")
}

fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect();
    out.sort();
    out
}

/// A PNG of `text`'s QR code, 3 pixels a module with a quiet zone.
fn qr_png(text: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let code =
        qrcode::QrCode::with_error_correction_level(text.to_ascii_uppercase(), qrcode::EcLevel::L)?;
    let width = code.width() as u32;
    let colors = code.to_colors();
    let side = (width + 8) * 3;
    let picture = image::GrayImage::from_fn(side, side, |x, y| {
        let (mx, my) = ((x / 3) as i64 - 4, (y / 3) as i64 - 4);
        let dark = (0..width as i64).contains(&mx)
            && (0..width as i64).contains(&my)
            && colors[(my as u32 * width + mx as u32) as usize] == qrcode::Color::Dark;
        image::Luma([if dark { 0 } else { 255 }])
    });
    let mut png = Vec::new();
    picture.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

/// A seed: its target, its file name, its bytes.
type Seed = (&'static str, &'static str, Vec<u8>);

/// Real values of each kind, encoded as their decoder meets them.
fn seeds() -> Result<Vec<Seed>, Box<dyn std::error::Error>> {
    // A group: its first entry, a sealed message after it, and the author's key share.
    let creator = iroh_base::SecretKey::from_bytes(&[3; 32]);
    let me = *creator.public().as_bytes();
    let nonce = [4; 16];
    let create = group::Entry {
        group: group::group_id(&me, &nonce, 1_000),
        author: me,
        seq: 1,
        lamport: 1,
        parents: vec![],
        at: 1_000,
        body: group::Body::Create {
            name: "Climbing".into(),
            nonce,
            members: vec![
                group::MemberCard {
                    id: me,
                    name: "Ann".into(),
                },
                group::MemberCard {
                    id: [5; 32],
                    name: "Bea".into(),
                },
            ],
        },
    };
    let mut chain = group::SenderChain::new(0);
    let group_share = chain.share(create.group, &creator);
    let group_text = group::Entry {
        group: create.group,
        author: me,
        seq: 2,
        lamport: 2,
        parents: vec![create.hash()],
        at: 1_001,
        body: chain.seal(
            &create.group,
            &me,
            &group::Content::Text { body: "hi".into() },
        ),
    }
    .sign(&creator);
    let group_create = create.sign(&creator);
    let alice = Identity::generate();
    let addr = WireAddr {
        relay: Some("https://relay.example./".into()),
        direct: vec!["127.0.0.1:4433".parse()?],
    };
    let invite = Invite {
        version: ferry_proto::invite::INVITE_VERSION,
        id: alice.id(),
        addr: addr.clone(),
        x25519: alice.x25519_public(),
        name: "Alice".into(),
        secret: [7; 16],
        expires_at: 4_000_000_000,
    };
    let text = invite.to_text()?;
    let bob = Identity::generate();
    let (hs, eph) = InitiatorHandshake::start();
    let (_, b_eph) = respond(bob.x25519_secret(), &alice.x25519_public(), &eph, b"s")?;
    let mut session = hs.complete(alice.x25519_secret(), &bob.x25519_public(), &b_eph, b"s")?;
    let ad = AssociatedData {
        sender: [0; 32],
        recipient: [0; 32],
        message_id: [7; 16],
    };
    let envelope = session.seal(b"hello", &ad)?;
    let text_payload = Payload::Text {
        body: "hello".into(),
        sent_at: 1,
    };
    let offer = Payload::FileOffer {
        transfer: [1; 16],
        hash: [2; 32],
        folder: true,
        name: "../Photos".into(),
        size: 1 << 20,
        files: 3,
    };
    let contact = Contact {
        id: bob.id(),
        name: "Bob".into(),
        x25519: bob.x25519_public(),
        addr,
        paired_at: 1,
        verified: false,
    };
    let old_message = MessageV1 {
        id: MessageId([4; 16]),
        conversation: ConversationId::direct(&alice.id(), &bob.id()),
        contact: bob.id(),
        seq: 7,
        direction: Direction::Incoming,
        body: "from schema 1".into(),
        sent_at: 1,
        stored_at: 2,
        state: MessageState::Seen,
        transfer: None,
    };
    Ok(vec![
        ("frame", "ping", encode_frame(&ChatRequest::Ping)?),
        (
            "frame",
            "deliver",
            encode_frame(&ChatRequest::Deliver {
                message_id: [7; 16],
                envelope: envelope.clone(),
            })?,
        ),
        (
            "frame",
            "reject",
            encode_frame(&ChatResponse::Reject {
                reason: "rate limited".into(),
                retry: true,
            })?,
        ),
        (
            "frame",
            "pair_refuse",
            encode_frame(&PairFrame::Refuse {
                reason: "no".into(),
            })?,
        ),
        ("payload", "text", postcard::to_allocvec(&text_payload)?),
        ("payload", "offer", postcard::to_allocvec(&offer)?),
        ("envelope", "sealed", postcard::to_allocvec(&envelope)?),
        ("invite_text", "invite", text.clone().into_bytes()),
        ("invite_qr", "png", qr_png(&text)?),
        (
            "invite_qr",
            "svg_is_not_a_picture",
            ferry_proto::qr::svg(&text)?.into_bytes(),
        ),
        ("record", "contact", postcard::to_allocvec(&contact)?),
        (
            "record",
            "invite",
            postcard::to_allocvec(&InviteRecord {
                expires_at: 5,
                used: false,
            })?,
        ),
        ("record", "session", postcard::to_allocvec(&session)?),
        ("record", "message_v1", postcard::to_allocvec(&old_message)?),
        (
            "record",
            "message",
            postcard::to_allocvec(&old_message.clone().upgrade(&alice.id()))?,
        ),
        (
            "record",
            "conversation",
            postcard::to_allocvec(&Conversation::direct(&alice.id(), &contact.id, 9))?,
        ),
        ("record", "identity", alice.to_file_bytes()?.to_vec()),
        ("name", "traversal", b"../../etc/passwd".to_vec()),
        ("name", "bidi", "report\u{202E}fdp.exe".as_bytes().to_vec()),
        ("name", "device", b"a/CON.txt/./b".to_vec()),
        (
            "group_entry",
            "create",
            postcard::to_allocvec(&group_create)?,
        ),
        ("group_entry", "sealed", postcard::to_allocvec(&group_text)?),
        (
            "group_entry",
            "key_share",
            postcard::to_allocvec(&group_share)?,
        ),
    ])
}

#[test]
fn committed_fuzz_inputs_pass_every_check() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("FERRY_WRITE_FUZZ_SEEDS").is_some() {
        for (target, name, bytes) in seeds()? {
            let dir = fuzz_dir().join("seeds").join(target);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join(name), bytes)?;
        }
    }
    let mut seen = 0;
    for (target, check) in TARGETS {
        let seeds = inputs(&fuzz_dir().join("seeds").join(target));
        assert!(!seeds.is_empty(), "no seeds for fuzz target {target}");
        for kind in ["seeds", "regressions"] {
            for (path, bytes) in inputs(&fuzz_dir().join(kind).join(target)) {
                let result = std::panic::catch_unwind(|| check(&bytes));
                assert!(result.is_ok(), "{target} fails on {}", path.display());
                seen += 1;
            }
        }
    }
    assert!(seen >= TARGETS.len());
    Ok(())
}

#[test]
fn fresh_seeds_pass_every_check() -> Result<(), Box<dyn std::error::Error>> {
    for (target, _, bytes) in seeds()? {
        let check = TARGETS
            .iter()
            .find(|(name, _)| *name == target)
            .map(|(_, c)| *c)
            .ok_or("unknown target")?;
        check(&bytes);
    }
    Ok(())
}
