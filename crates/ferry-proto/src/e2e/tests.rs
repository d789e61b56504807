#![allow(clippy::unwrap_used)]
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
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ]);
    points.push([
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
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
