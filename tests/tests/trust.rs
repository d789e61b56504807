//! Trust between real nodes on loopback: blocking and unblocking, removing and pairing again,
//! a pairing only one side kept, verifying by a scanned safety number, and session resets.

use anyhow::{ensure, Result};
use ferry_core::wire::{self, ChatRequest, ChatResponse, ALPN_CHAT, ALPN_PAIR};
use std::sync::Arc;

use ferry_core::{Config, Event, MessageState, Node, Transfer, TransferState, TrustState};
use ferry_tests::*;
use tokio::sync::broadcast::Receiver;

/// Alice and Bob, paired, on loopback.
async fn paired(root: &std::path::Path) -> Result<(Arc<Node>, Arc<Node>)> {
    init_tracing();
    let alice = open(&new_home(root, "Alice")?, test_config()).await?;
    let bob = open(&new_home(root, "Bob")?, test_config()).await?;
    pair(&alice, &bob).await?;
    Ok((alice, bob))
}

/// Waits until the receiver has the offer of `sent`.
async fn offered_to(events: &mut Receiver<Event>, sent: &Transfer) -> Result<()> {
    wait_for(events, |e| match e {
        Event::TransferOffered { transfer } if transfer.id == sent.id => Some(()),
        _ => None,
    })
    .await
}

/// Waits until the expiry of `sent`'s message has stopped its transfer and dropped what it
/// held (the record goes with the message; the grant and the blob tag right after).
async fn transfer_disappeared(events: &mut Receiver<Event>, sent: &Transfer) -> Result<()> {
    wait_for(events, |e| match e {
        Event::TransferChanged { transfer }
            if transfer.id == sent.id
                && transfer.error.as_deref() == Some("the message disappeared") =>
        {
            Some(())
        }
        _ => None,
    })
    .await
}

/// The error of something that must fail.
fn failed<T: std::fmt::Debug>(r: Result<T, ferry_core::Error>) -> Result<ferry_core::Error> {
    match r {
        Ok(v) => anyhow::bail!("succeeded: {v:?}"),
        Err(e) => Ok(e),
    }
}

async fn bodies(node: &Node, contact: &str) -> Result<Vec<String>> {
    let page = node.history(contact, None, 1000, false).await?;
    Ok(page.into_iter().map(|m| m.body).collect())
}

/// How a connection from `from` to `to` on `alpn` ends when `to` refuses it: the reason it
/// closes with (no request on it is ever answered).
async fn refusal(from: &Node, to: &Node, alpn: &[u8]) -> Result<String> {
    let conn =
        tokio::time::timeout(WAIT, from.endpoint().connect(to.endpoint().addr(), alpn)).await??;
    let attempt = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        wire::write_frame(&mut send, &ChatRequest::Ping).await?;
        send.finish()?;
        let r: ChatResponse = wire::read_frame(&mut recv).await?;
        anyhow::Ok(r)
    };
    let answer = tokio::time::timeout(WAIT, attempt).await?;
    ensure!(answer.is_err(), "answered: {answer:?}");
    let reason = tokio::time::timeout(WAIT, conn.closed()).await?;
    Ok(format!("{reason:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_contact_is_refused_everywhere_and_unblocking_resumes_the_chat() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (alice, bob) = paired(dir.path()).await?;
    let mut bob_events = bob.subscribe();
    alice.send_text("Bob", "before").await?;
    assert_eq!(next_message(&mut bob_events).await?, "before");

    let view = bob.block("Alice").await?;
    assert_eq!(view.state, TrustState::Blocked);
    assert_eq!(bob.contact("Alice")?.state, TrustState::Blocked);
    let e = failed(bob.send_text("Alice", "to a blocked contact").await)?;
    assert_eq!(e.code(), "blocked", "{e}");

    // Alice's connections are refused on chat, pairing and blobs alike.
    for alpn in [ALPN_CHAT, ALPN_PAIR] {
        let why = refusal(&alice, &bob, alpn).await?;
        assert!(
            why.contains("not a contact") || why.contains("refused"),
            "{why}"
        );
    }
    refusal(&alice, &bob, iroh_blobs::ALPN).await?;
    let file = dir.path().join("note.txt");
    std::fs::write(&file, b"a file for Alice")?;
    let e = failed(bob.send_file("Alice", &file).await)?;
    assert_eq!(e.code(), "blocked", "{e}");

    // What Alice sends is neither stored nor acknowledged: it stays queued on her side.
    let mut alice_events = alice.subscribe();
    let held = alice.send_text("Bob", "while blocked").await?;
    let refused = refusal(&alice, &bob, ALPN_CHAT).await?;
    assert!(refused.contains("not a contact"), "{refused}");
    assert_eq!(bodies(&bob, "Alice").await?, vec!["before"]);
    assert_eq!(
        alice.message(&held.id)?.map(|m| m.state),
        Some(MessageState::Queued)
    );

    // Unblocked, the held message arrives, and chat goes on both ways.
    let view = bob.unblock("Alice").await?;
    assert_eq!(view.state, TrustState::Unverified);
    assert_eq!(next_message(&mut bob_events).await?, "while blocked");
    bob.send_text("Alice", "welcome back").await?;
    assert_eq!(next_message(&mut alice_events).await?, "welcome back");
    assert_eq!(
        bodies(&bob, "Alice").await?,
        vec!["before", "while blocked", "welcome back"]
    );
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_a_sender_stops_its_transfer_and_unblocking_finishes_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (alice, bob) = paired(dir.path()).await?;
    let mut bob_events = bob.subscribe();
    let file = dir.path().join("photo.bin");
    std::fs::write(&file, vec![7u8; 300_000])?;
    let offered = alice.send_file("Bob", &file).await?;
    offered_to(&mut bob_events, &offered).await?;
    bob.block("Alice").await?;
    let id = offered.id.to_string();
    let e = failed(bob.accept_transfer(&id).await)?;
    assert_eq!(e.code(), "blocked", "{e}");
    bob.unblock("Alice").await?;
    bob.accept_transfer(&id).await?;
    wait_for(&mut bob_events, |e| match e {
        Event::TransferCompleted { id, .. } if *id == offered.id => Some(()),
        _ => None,
    })
    .await?;
    assert_eq!(bob.transfer(&id)?.state, TransferState::Done);
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_contact_pairs_again_and_chats() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (alice, bob) = paired(dir.path()).await?;
    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    bob.send_text("Alice", "first").await?;
    assert_eq!(next_message(&mut alice_events).await?, "first");
    let file = dir.path().join("offer.txt");
    std::fs::write(&file, b"an offer Alice never answers")?;
    let offer = bob.send_file("Alice", &file).await?;
    offered_to(&mut alice_events, &offer).await?;

    let removed = alice.remove_contact("Bob", false).await?;
    assert_eq!(removed.name, "Bob");
    assert!(alice.contacts()?.is_empty());
    assert!(alice.transfers()?.is_empty());
    assert!(alice.conversations()?.is_empty());
    assert_eq!(failed(alice.contact("Bob"))?.code(), "unknown_contact");
    // Bob, who still has Alice, is a stranger to her now.
    let why = refusal(&bob, &alice, ALPN_CHAT).await?;
    assert!(why.contains("not a contact"), "{why}");

    // A fresh invite replaces the pairing Bob kept; chat works both ways, from nothing.
    pair(&alice, &bob).await?;
    alice.send_text("Bob", "hello again").await?;
    assert_eq!(next_message(&mut bob_events).await?, "hello again");
    bob.send_text("Alice", "glad you are back").await?;
    assert_eq!(next_message(&mut alice_events).await?, "glad you are back");
    let fresh = vec!["hello again", "glad you are back"];
    assert_eq!(bodies(&alice, "Bob").await?, fresh);

    // Removed with its history kept, the conversation shows again after pairing again.
    alice.remove_contact("Bob", true).await?;
    assert!(alice.contacts()?.is_empty());
    pair(&bob, &alice).await?;
    assert_eq!(bodies(&alice, "Bob").await?, fresh);
    assert_eq!(alice.contact("Bob")?.unread, 0);
    alice.send_text("Bob", "and again").await?;
    assert_eq!(next_message(&mut bob_events).await?, "and again");
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pairing_whose_done_was_lost_is_repaired_by_a_fresh_invite() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let faulty = Config {
        drop_next_pair_done: true,
        ..test_config()
    };
    let alice = open(&new_home(dir.path(), "Alice")?, faulty).await?;
    let bob = open(&new_home(dir.path(), "Bob")?, test_config()).await?;
    let invite = alice.create_invite(None).await?;
    let e = failed(bob.pair(&invite).await)?;
    assert_eq!(e.code(), "pairing_failed", "{e}");
    // Half a pairing: Alice kept Bob, Bob has nobody.
    assert_eq!(alice.contacts()?.len(), 1);
    assert!(bob.contacts()?.is_empty());

    // The next invite from Alice is not refused as "already paired": it replaces the pairing.
    pair(&alice, &bob).await?;
    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    bob.send_text("Alice", "repaired").await?;
    assert_eq!(next_message(&mut alice_events).await?, "repaired");
    alice.send_text("Bob", "both ways").await?;
    assert_eq!(next_message(&mut bob_events).await?, "both ways");
    assert_eq!(alice.contacts()?.len(), 1);
    assert_eq!(
        alice.contact("Bob")?.safety_number,
        bob.contact("Alice")?.safety_number
    );
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_scanned_safety_number_verifies_and_a_wrong_one_changes_nothing() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let alice = open(&new_home(dir.path(), "Alice")?, test_config()).await?;
    let bob = open(&new_home(dir.path(), "Bob")?, test_config()).await?;
    let carol = open(&new_home(dir.path(), "Carol")?, test_config()).await?;
    pair(&alice, &bob).await?;
    pair(&alice, &carol).await?;

    // A number Alice shows Carol is not Bob's: refused, nothing marked.
    let for_carol = alice.safety_text("Carol")?;
    let e = failed(bob.verify_scanned(&for_carol).await)?;
    assert_eq!(e.code(), "invalid_input", "{e}");
    assert!(e.to_string().contains("does not match"), "{e}");
    assert_eq!(bob.contact("Alice")?.state, TrustState::Unverified);
    // Bob's own code, and garbage, are refused too.
    let e = failed(bob.verify_scanned(&bob.safety_text("Alice")?).await)?;
    assert!(e.to_string().contains("your own"), "{e}");
    assert!(bob.verify_scanned("ferry-safety:1:nonsense").await.is_err());

    // The one Alice shows Bob, scanned in the upper case a QR code carries, verifies.
    let text = alice.safety_text("Bob")?.to_ascii_uppercase();
    let view = bob.verify_scanned(&text).await?;
    assert_eq!(view.state, TrustState::Verified);
    assert!(view.verified);
    let view = bob.set_verified("Alice", false).await?;
    assert_eq!(view.state, TrustState::Unverified);
    for n in [&alice, &bob, &carol] {
        n.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_identity_key_shows_in_the_history_and_pauses_sending_until_accepted() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let alice = open(&new_home(dir.path(), "Alice")?, test_config()).await?;
    let bob_home = new_home(dir.path(), "Bob")?;
    let bob = open(&bob_home, test_config()).await?;
    pair(&alice, &bob).await?;
    alice.set_verified("Bob", true).await?;
    let before = alice.contact("Bob")?.safety_number;
    bob.shutdown().await;
    drop(bob);

    // Bob restores his endpoint key on another computer, with a new identity key: the
    // identity file holds a format byte, the Ed25519 secret, then the X25519 secret.
    // (Written in clear as an earlier release kept it; the next open seals it again.)
    let identity = ferry_core::identity::load_identity(&bob_home, None)?;
    let mut bytes = identity.to_file_bytes()?.to_vec();
    ensure!(bytes.len() == 65, "identity file of {} bytes", bytes.len());
    bytes[33..].copy_from_slice(&[0x5a; 32]);
    std::fs::remove_file(bob_home.join(ferry_core::home::SEALED_IDENTITY_FILE))?;
    ferry_core::identity::save_plain(
        &ferry_core::identity::Identity::from_file_bytes(&bytes)?,
        &bob_home,
    )?;
    let bob = open(&bob_home, test_config()).await?;
    let mut alice_events = alice.subscribe();
    // He asks Alice for a fresh invite, since his session is gone with his old key.
    pair(&alice, &bob).await?;
    let line = wait_for(&mut alice_events, |e| match e {
        Event::MessageReceived { message, .. }
            if message.direction == ferry_core::Direction::System =>
        {
            Some(message.body.clone())
        }
        _ => None,
    })
    .await?;
    assert!(line.contains("Bob's safety number changed"), "{line}");
    let view = alice.contact("Bob")?;
    assert!(view.key_changed);
    assert_eq!(view.state, TrustState::Unverified);
    assert_ne!(view.safety_number, before);
    assert_eq!(view.safety_number, bob.contact("Alice")?.safety_number);

    // Alice's sending waits; what Bob sends still arrives.
    let e = failed(alice.send_text("Bob", "is that you?").await)?;
    assert_eq!(e.code(), "key_changed", "{e}");
    bob.send_text("Alice", "new computer").await?;
    assert_eq!(next_message(&mut alice_events).await?, "new computer");

    // Accepted, sending resumes; both lines stay in the history.
    let mut bob_events = bob.subscribe();
    let view = alice.accept_key("Bob").await?;
    assert!(!view.key_changed);
    alice.send_text("Bob", "welcome back").await?;
    assert_eq!(next_message(&mut bob_events).await?, "welcome back");
    let history = alice.history("Bob", None, 100, false).await?;
    let system: Vec<&str> = history
        .iter()
        .filter(|m| m.direction == ferry_core::Direction::System)
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(system.len(), 2, "{system:?}");
    assert!(system[1].contains("You accepted"), "{system:?}");
    assert_eq!(alice.contact("Bob")?.unread, 1);
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

/// The system lines of a conversation.
async fn system_lines(node: &Node, contact: &str) -> Result<Vec<String>> {
    let page = node.history(contact, None, 1000, false).await?;
    Ok(page
        .into_iter()
        .filter(|m| m.direction == ferry_core::Direction::System)
        .map(|m| m.body)
        .collect())
}

/// The ordinary messages of a conversation, oldest first.
async fn texts(node: &Node, contact: &str) -> Result<Vec<String>> {
    let page = node.history(contact, None, 1000, false).await?;
    Ok(page
        .into_iter()
        .filter(|m| m.direction != ferry_core::Direction::System)
        .map(|m| m.body)
        .collect())
}

/// Waits until `node`'s conversation with `contact` holds exactly `want` (ordinary messages).
async fn until_texts(node: &Node, contact: &str, want: &[String]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let have = texts(node, contact).await?;
        if have == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("{contact}'s conversation holds {have:?}, not {want:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The session a home holds with `with`, read from its store (the node must be shut down).
fn stored_session(
    home: &std::path::Path,
    with: &ferry_core::ContactId,
) -> Result<ferry_core::e2e::Session> {
    let store = ferry_core::store::Store::open_home(home, None)?;
    store
        .session(with)?
        .ok_or_else(|| anyhow::anyhow!("no session"))
}

/// Puts `session` back as the one a home holds with `with`, as restoring a backup would.
async fn restore_session(
    home: &std::path::Path,
    with: &ferry_core::ContactId,
    session: ferry_core::e2e::Session,
) -> Result<()> {
    let store = ferry_core::store::Store::open_home(home, None)?;
    store.apply(&ferry_core::store::Changes {
        session: Some((*with, session)),
        ..Default::default()
    })?;
    store.flush().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_session_is_reset_by_itself_and_nothing_is_lost() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let alice = open(&new_home(dir.path(), "Alice")?, test_config()).await?;
    let bob_home = new_home(dir.path(), "Bob")?;
    let bob = open(&bob_home, test_config()).await?;
    pair(&alice, &bob).await?;
    let a = alice.id();
    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    alice.send_text("Bob", "one").await?;
    assert_eq!(next_message(&mut bob_events).await?, "one");
    bob.send_text("Alice", "two").await?;
    assert_eq!(next_message(&mut alice_events).await?, "two");
    // Bob's session as a backup made now would hold it.
    bob.shutdown().await;
    drop(bob);
    let saved = stored_session(&bob_home, &a)?;
    let bob = open(&bob_home, test_config()).await?;
    alice.send_text("Bob", "three").await?;
    until_texts(&bob, "Alice", &["one".into(), "two".into(), "three".into()]).await?;
    bob.send_text("Alice", "four").await?;
    assert_eq!(next_message(&mut alice_events).await?, "four");
    bob.shutdown().await;
    drop(bob);
    // Bob restores that backup: his ratchet is behind Alice's.
    restore_session(&bob_home, &a, saved).await?;
    let bob = open(&bob_home, test_config()).await?;

    // What he sends from the old state cannot be opened: Alice resets the session by herself,
    // Bob's message is sealed again with the new one and arrives, once.
    bob.send_text("Alice", "five").await?;
    assert_eq!(next_message(&mut alice_events).await?, "five");
    alice.send_text("Bob", "six").await?;
    let all: Vec<String> = ["one", "two", "three", "four", "five", "six"]
        .map(String::from)
        .to_vec();
    until_texts(&bob, "Alice", &all).await?;
    until_texts(&alice, "Bob", &all).await?;
    for (node, other) in [(&alice, "Bob"), (&bob, "Alice")] {
        let lines = system_lines(node, other).await?;
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("secured again"), "{lines:?}");
    }
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_on_request_keeps_what_both_sides_sent_meanwhile() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (alice, bob) = paired(dir.path()).await?;
    let mut bob_events = bob.subscribe();
    alice.send_text("Bob", "before").await?;
    assert_eq!(next_message(&mut bob_events).await?, "before");

    // Both keep writing while Alice resets the session.
    let sending = |from: Arc<Node>, to: &'static str, tag: &'static str| {
        tokio::spawn(async move {
            for i in 0..20 {
                from.send_text(to, &format!("{tag}{i}")).await?;
                tokio::task::yield_now().await;
            }
            anyhow::Ok(())
        })
    };
    let from_alice = sending(alice.clone(), "Bob", "a");
    let from_bob = sending(bob.clone(), "Alice", "b");
    let view = alice.reset_session("Bob").await?;
    assert_eq!(view.name, "Bob");
    from_alice.await??;
    from_bob.await??;

    // Everything arrives, exactly once and in each sender's order; chat goes on after.
    alice.send_text("Bob", "after").await?;
    let wait_all = |node: Arc<Node>, other: &'static str| async move {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let have = texts(&node, other).await?;
            let of = |tag: char| -> Vec<String> {
                have.iter()
                    .filter(|b| b.starts_with(tag) && b[1..].parse::<u32>().is_ok())
                    .cloned()
                    .collect()
            };
            let want =
                |tag: char| -> Vec<String> { (0..20).map(|i| format!("{tag}{i}")).collect() };
            if of('a') == want('a') && of('b') == want('b') && have.contains(&"after".to_string()) {
                ensure!(have.len() == 42, "{have:?}");
                return anyhow::Ok(());
            }
            ensure!(tokio::time::Instant::now() < deadline, "{other}: {have:?}");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    };
    wait_all(alice.clone(), "Bob").await?;
    wait_all(bob.clone(), "Alice").await?;
    for (node, other) in [(&alice, "Bob"), (&bob, "Alice")] {
        let lines = system_lines(node, other).await?;
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("Messages with"), "{lines:?}");
    }
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_resets_at_once_end_on_one_session() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (alice, bob) = paired(dir.path()).await?;
    let (x, y) = tokio::join!(alice.reset_session("Bob"), bob.reset_session("Alice"));
    x?;
    y?;
    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    alice.send_text("Bob", "ping").await?;
    assert_eq!(next_message(&mut bob_events).await?, "ping");
    bob.send_text("Alice", "pong").await?;
    assert_eq!(next_message(&mut alice_events).await?, "pong");
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_whose_done_was_lost_runs_again_and_an_old_release_is_told_plainly() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let alice = open(&new_home(dir.path(), "Alice")?, test_config()).await?;
    let faulty = Config {
        drop_next_reset_done: true,
        ..test_config()
    };
    let bob = open(&new_home(dir.path(), "Bob")?, faulty).await?;
    let old = Config {
        resets: false,
        ..test_config()
    };
    let carol = open(&new_home(dir.path(), "Carol")?, old).await?;
    pair(&alice, &bob).await?;
    pair(&alice, &carol).await?;

    // Bob stores the reset but his `Done` never reaches Alice: she runs it once more, so both
    // end on the same session.
    alice.reset_session("Bob").await?;
    let mut bob_events = bob.subscribe();
    let mut alice_events = alice.subscribe();
    alice.send_text("Bob", "still there?").await?;
    assert_eq!(next_message(&mut bob_events).await?, "still there?");
    bob.send_text("Alice", "yes").await?;
    assert_eq!(next_message(&mut alice_events).await?, "yes");

    // Carol's release does not know resets: a clear error, and her chat is untouched.
    let e = failed(alice.reset_session("Carol").await)?;
    assert_eq!(e.code(), "reset_failed", "{e}");
    assert!(e.to_string().contains("earlier release"), "{e}");
    let mut carol_events = carol.subscribe();
    alice.send_text("Carol", "hi Carol").await?;
    assert_eq!(next_message(&mut carol_events).await?, "hi Carol");

    // A blocked contact is not reset.
    alice.block("Bob").await?;
    let e = failed(alice.reset_session("Bob").await)?;
    assert_eq!(e.code(), "blocked", "{e}");
    for n in [&alice, &bob, &carol] {
        n.shutdown().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disappearing_messages_are_set_on_both_sides_and_deleted_from_both_stores() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    // One second of a timer lasts 2 ms here: 5 minutes run out in 0.6 s.
    let fast = Config {
        timer_ms: 2,
        ..test_config()
    };
    let alice = open(&new_home(dir.path(), "Alice")?, fast.clone()).await?;
    let bob = open(&new_home(dir.path(), "Bob")?, fast).await?;
    pair(&alice, &bob).await?;
    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    alice.send_text("Bob", "kept").await?;
    assert_eq!(next_message(&mut bob_events).await?, "kept");

    // A timer that is not offered is refused; 5 minutes is set, and Bob's side shows it.
    let e = failed(alice.set_timer("Bob", 7).await)?;
    assert_eq!(e.code(), "invalid_input", "{e}");
    let view = alice.set_timer("Bob", 300).await?;
    assert_eq!(view.timer_secs, 300);
    let line = next_message(&mut bob_events).await?;
    assert!(
        line.starts_with("Alice set disappearing messages to 5 minutes"),
        "{line}"
    );
    assert_eq!(bob.contact("Alice")?.timer_secs, 300);

    // What both write now disappears from both stores, a file offer with its transfer.
    alice.send_text("Bob", "secret").await?;
    assert_eq!(next_message(&mut bob_events).await?, "secret");
    bob.send_text("Alice", "reply").await?;
    assert_eq!(next_message(&mut alice_events).await?, "reply");
    let file = dir.path().join("note.txt");
    std::fs::write(&file, b"this goes too")?;
    let sent = alice.send_file("Bob", &file).await?;
    offered_to(&mut bob_events, &sent).await?;
    wait_for(&mut alice_events, |e| match e {
        Event::MessagesExpired { ids, .. } if !ids.is_empty() => Some(()),
        _ => None,
    })
    .await?;
    for (node, other, events) in [
        (&alice, "Bob", &mut alice_events),
        (&bob, "Alice", &mut bob_events),
    ] {
        until_texts(node, other, &["kept".to_string()]).await?;
        let lines = system_lines(node, other).await?;
        assert_eq!(lines.len(), 1, "{lines:?}");
        ensure!(node.transfers()?.iter().all(|t| t.id != sent.id));
        transfer_disappeared(events, &sent).await?;
        // The offer was still open: the expiry itself dropped Alice's blob-store tag, so the
        // clean-up finds nothing left over.
        ensure!(
            node.clean_storage().await? == 0,
            "{other}'s side kept a tag"
        );
    }

    // Bob turns it off; Alice's side follows, and messages stay again.
    bob.set_timer("Alice", 0).await?;
    let line = next_message(&mut alice_events).await?;
    assert_eq!(line, "Bob turned off disappearing messages.");
    assert_eq!(alice.contact("Bob")?.timer_secs, 0);
    alice.send_text("Bob", "stays").await?;
    assert_eq!(next_message(&mut bob_events).await?, "stays");
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_received_file_and_a_message_still_waiting_disappear_with_their_copies_and_counts(
) -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    // One second of a timer lasts 10 ms here: 5 minutes run out in 3 s, time enough for a
    // small file to arrive first.
    let slow = Config {
        timer_ms: 10,
        ..test_config()
    };
    let bob_home = new_home(dir.path(), "Bob")?;
    let alice = open(&new_home(dir.path(), "Alice")?, slow.clone()).await?;
    let bob = open(&bob_home, slow.clone()).await?;
    pair(&alice, &bob).await?;
    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    alice.set_timer("Bob", 300).await?;
    next_message(&mut bob_events).await?;

    // A file Bob accepts and receives whole: its record and the blob store's copy (its tag)
    // go on both sides when the message expires.
    let file = dir.path().join("photo.bin");
    std::fs::write(&file, vec![7u8; 200_000])?;
    let sent = alice.send_file("Bob", &file).await?;
    offered_to(&mut bob_events, &sent).await?;
    bob.accept_transfer(&sent.id.to_string()).await?;
    let mut saved = None;
    eventually(|| {
        saved = bob
            .transfer_by_id(&sent.id)?
            .filter(|t| t.state == TransferState::Done)
            .and_then(|t| t.path);
        Ok(saved.is_some())
    })
    .await
    .map_err(|e| anyhow::anyhow!("the file did not arrive before its time ran out: {e}"))?;
    for (node, events) in [(&alice, &mut alice_events), (&bob, &mut bob_events)] {
        transfer_disappeared(events, &sent).await?;
        ensure!(node.transfer_by_id(&sent.id)?.is_none());
        // Nothing is left for the clean-up to drop: the expiry dropped the tags itself.
        ensure!(
            node.clean_storage().await? == 0,
            "a blob tag outlived its message"
        );
    }
    // The saved copy is the user's and stays.
    let saved = saved.unwrap_or_default();
    ensure!(std::fs::read(&saved)? == vec![7u8; 200_000], "{saved:?}");

    // A message written while Bob is away waits in Alice's outbox; when its time runs out it
    // leaves the outbox, the count of waiting messages, and the history, and Bob never gets it.
    bob.shutdown().await;
    drop(bob);
    let waiting = alice.send_text("Bob", "too late").await?;
    ensure!(alice.contact("Bob")?.queued == 1);
    let expired = wait_for(&mut alice_events, |e| match e {
        Event::MessagesExpired { ids, .. } if ids.contains(&waiting.id) => Some(()),
        _ => None,
    });
    expired.await?;
    ensure!(alice.contact("Bob")?.queued == 0);
    ensure!(alice.outbox_len(None)? == 0);
    ensure!(alice.message(&waiting.id)?.is_none());
    let bob = open(&bob_home, slow).await?;
    let mut bob_events = bob.subscribe();
    alice.send_text("Bob", "after").await?;
    let mut seen = Vec::new();
    wait_for(&mut bob_events, |e| match e {
        Event::MessageReceived { message, .. } => {
            seen.push(message.body.clone());
            (message.body == "after").then_some(())
        }
        _ => None,
    })
    .await?;
    ensure!(!seen.iter().any(|t| t == "too late"), "{seen:?}");
    let texts = bodies(&bob, "Alice").await?;
    ensure!(!texts.iter().any(|t| t == "too late"), "{texts:?}");
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}
