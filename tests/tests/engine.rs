//! Real nodes on loopback, relays disabled: pairing, chat, restarts, the outbox, invites,
//! strangers and address changes.

use std::time::Duration;

use anyhow::Result;
use ferry_core::wire::{self, ChatRequest, ChatResponse, ALPN_CHAT};
use ferry_core::{Config, Direction, Error, Event, MessageState, Node, PathKind, Presence};
use ferry_tests::*;

/// The bodies of a conversation, oldest first.
async fn bodies(node: &Node, contact: &str) -> Result<Vec<String>> {
    let page = node.history(contact, None, 1000, false).await?;
    Ok(page.into_iter().map(|m| m.body).collect())
}

/// Test settings with these allowances for every contact.
fn allowing(allowances: ferry_core::inbox::Allowances) -> Config {
    Config {
        allowances,
        ..test_config()
    }
}

#[tokio::test]
async fn pair_then_chat_both_ways_with_ticks_and_matching_safety_numbers() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let alice = open(&new_home(dir.path(), "Alice")?, test_config()).await?;
    let bob = open(&new_home(dir.path(), "Bob")?, test_config()).await?;
    let mut alice_events = alice.subscribe();
    pair(&alice, &bob).await?;
    let paired = wait_for(&mut alice_events, |e| match e {
        Event::PairingCompleted { contact } => Some(contact.clone()),
        _ => None,
    })
    .await?;
    assert_eq!(paired.name, "Bob");
    let bob_view = bob.contact("alice")?;
    assert_eq!(bob_view.safety_number, alice.contact("Bob")?.safety_number);
    assert!(!bob_view.verified);

    let mut bob_events = bob.subscribe();
    let sent = bob.send_text("Alice", "hello from Bob").await?;
    assert_eq!(sent.state, MessageState::Queued);
    let got = wait_for(&mut alice_events, |e| match e {
        Event::MessageReceived { message, from } => Some((message.clone(), from.clone())),
        _ => None,
    })
    .await?;
    assert_eq!(got.0.body, "hello from Bob");
    assert_eq!(got.0.id, sent.id);
    assert_eq!(got.1, "Bob");
    wait_for(&mut bob_events, |e| match e {
        Event::DeliveryChanged { id, state, .. }
            if *id == sent.id && *state == MessageState::Delivered =>
        {
            Some(())
        }
        _ => None,
    })
    .await?;

    alice.send_text("bob", "hi Bob").await?;
    let reply = next_message(&mut bob_events).await?;
    assert_eq!(reply, "hi Bob");

    // Alice reads: Bob's message turns Read on Bob's side.
    let page = alice.history("Bob", None, 10, true).await?;
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].direction, Direction::Incoming);
    assert_eq!(page[0].state, MessageState::Seen);
    wait_for(&mut bob_events, |e| match e {
        Event::DeliveryChanged { id, state, .. }
            if *id == sent.id && *state == MessageState::Read =>
        {
            Some(())
        }
        _ => None,
    })
    .await?;
    assert_eq!(
        bob.message(&sent.id)?.map(|m| m.state),
        Some(MessageState::Read)
    );
    assert_eq!(alice.contact("Bob")?.unread, 0);

    // Presence is live and direct on loopback.
    eventually(|| {
        Ok(matches!(
            bob.contact("Alice")?.presence,
            Presence::Online {
                path: PathKind::Direct,
                ..
            }
        ))
    })
    .await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn history_and_sessions_survive_restart() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let (ah, bh) = (new_home(dir.path(), "Alice")?, new_home(dir.path(), "Bob")?);
    {
        let alice = open(&ah, test_config()).await?;
        let bob = open(&bh, test_config()).await?;
        pair(&alice, &bob).await?;
        let mut rx = alice.subscribe();
        bob.send_text("Alice", "before restart").await?;
        wait_for(&mut rx, |e| {
            matches!(e, Event::MessageReceived { .. }).then_some(())
        })
        .await?;
        alice.shutdown().await;
        bob.shutdown().await;
    }
    let alice = open(&ah, test_config()).await?;
    let bob = open(&bh, test_config()).await?;
    let mut rx = alice.subscribe();
    bob.send_text("Alice", "after restart").await?;
    wait_for(&mut rx, |e| {
        matches!(e, Event::MessageReceived { .. }).then_some(())
    })
    .await?;
    let mut brx = bob.subscribe();
    alice.send_text("Bob", "and back").await?;
    wait_for(&mut brx, |e| {
        matches!(e, Event::MessageReceived { .. }).then_some(())
    })
    .await?;
    let bodies: Vec<String> = alice
        .history("Bob", None, 10, false)
        .await?
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["before restart", "after restart", "and back"]);
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn offline_recipient_gets_queued_messages_once_and_in_order() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let ah = new_home(dir.path(), "Alice")?;
    let alice = open(&ah, test_config()).await?;
    let bob = open(&new_home(dir.path(), "Bob")?, test_config()).await?;
    pair(&alice, &bob).await?;
    alice.shutdown().await;
    drop(alice);

    let mut sent = Vec::new();
    for i in 0..12 {
        sent.push(bob.send_text("Alice", &format!("queued {i}")).await?.id);
    }
    assert!(bob.outbox_len(None)? >= 12);
    assert_eq!(bob.contact("Alice")?.queued, 12);

    let alice = open(&ah, test_config()).await?;
    assert!(bob.wait_outbox_drained(None, WAIT).await?, "outbox drained");
    let expected: Vec<String> = (0..12).map(|i| format!("queued {i}")).collect();
    assert_eq!(
        bodies(&alice, "Bob").await?,
        expected,
        "each message once, in order"
    );
    for id in &sent {
        assert_eq!(
            bob.message(id)?.map(|m| m.state),
            Some(MessageState::Delivered)
        );
    }
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

/// A burst over the receiver's allowance is slowed down, not refused: the receiver answers
/// "retry after N ms", the sender waits exactly that long, and every message arrives once, in
/// order, with none failed and nothing left queued. Here the sender speaks only
/// `ferry/chat/1` (as releases before batches did), one frame a message, and Bob counts frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_allowance_is_slowed_and_arrives_whole() -> Result<()> {
    // Bob takes 10 frames at once and 20 a second after that.
    let frames = ferry_core::inbox::Allowances {
        frames_per_sec: 20.0,
        frames_burst: 10.0,
        ..Default::default()
    };
    let body = |i| format!("burst {i}");
    let floor = Duration::from_secs_f64((50 - 10) as f64 / 20.0);
    burst_against(false, frames, 50, body, floor).await
}

/// The same with batches (`ferry/chat/2`): a batch is one frame, so it is the byte allowance
/// that holds the sender back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_in_batches_is_held_to_the_byte_allowance_and_arrives_whole() -> Result<()> {
    // Bob takes 64 KiB at once (one whole frame) and 64 KiB a second after that.
    let bytes = ferry_core::inbox::Allowances {
        bytes_per_sec: 64.0 * 1024.0,
        bytes_burst: 64.0 * 1024.0,
        ..Default::default()
    };
    // 200 messages of about 1 KiB: 200 KiB, so at least (200 - 64) / 64 seconds.
    let body = |i| format!("{i:04} {}", "x".repeat(1000));
    let floor = Duration::from_secs_f64((200.0 - 64.0) / 64.0);
    burst_against(true, bytes, 200, body, floor).await
}

/// Alice sends `n` messages back to back to a Bob with `allowances`; each arrives once, in
/// order, none fails, and the whole took at least 80% of `floor` (a lower bound, so it
/// cannot flake on a slow machine).
async fn burst_against(
    batches: bool,
    allowances: ferry_core::inbox::Allowances,
    n: usize,
    body: impl Fn(usize) -> String,
    floor: Duration,
) -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let alice = open(
        &new_home(dir.path(), "Alice")?,
        Config {
            batches,
            ..test_config()
        },
    )
    .await?;
    let bob = open(&new_home(dir.path(), "Bob")?, allowing(allowances)).await?;
    pair(&alice, &bob).await?;
    let mut bob_events = bob.subscribe();
    let mut sent = Vec::new();
    let t0 = tokio::time::Instant::now();
    for i in 0..n {
        sent.push(alice.send_text("Bob", &body(i)).await?.id);
    }
    let mut arrivals = Vec::new();
    while arrivals.len() < n {
        arrivals.push(next_message(&mut bob_events).await?);
    }
    let span = t0.elapsed();
    assert!(
        alice.wait_outbox_drained(None, WAIT).await?,
        "nothing left queued"
    );
    let expected: Vec<String> = (0..n).map(body).collect();
    assert_eq!(arrivals, expected, "each message once, in order");
    let page = bob.history("Alice", None, 1000, false).await?;
    assert_eq!(page.len(), n, "stored once each");
    for id in &sent {
        assert_eq!(
            alice.message(id)?.map(|m| m.state),
            Some(MessageState::Delivered),
            "none failed"
        );
    }
    // The limiter did hold the sender to Bob's allowance.
    assert!(
        span >= floor.mul_f64(0.8),
        "{n} arrived in {span:?}, faster than the allowance ({floor:?})"
    );
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

/// What waited while Bob was away goes in batches when he is back: 200 messages reach a Bob
/// who takes six frames and then almost nothing, whole and in order. (Each dial's `Announce`
/// is a frame too, and both sides may dial while Bob starts: three frames were once too few
/// under a loaded CI run. One message a frame would need 200.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_go_in_batches_under_a_tight_frame_allowance() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let alice = open(&new_home(dir.path(), "Alice")?, test_config()).await?;
    let bh = new_home(dir.path(), "Bob")?;
    let bob = open(&bh, test_config()).await?;
    pair(&alice, &bob).await?;
    bob.shutdown().await;
    drop(bob);
    const N: usize = 200;
    for i in 0..N {
        alice.send_text("Bob", &format!("while away {i}")).await?;
    }
    let tight = ferry_core::inbox::Allowances {
        frames_per_sec: 0.001,
        frames_burst: 6.0,
        ..Default::default()
    };
    let bob = open(&bh, allowing(tight)).await?;
    assert!(alice.wait_outbox_drained(None, WAIT).await?, "drained");
    let expected: Vec<String> = (0..N).map(|i| format!("while away {i}")).collect();
    assert_eq!(
        bodies(&bob, "Alice").await?,
        expected,
        "each message once, in order"
    );
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

/// A node of a release before batches (`ferry/chat/1` only) and this one pair and talk both
/// ways, whoever dials, including what was queued while the other was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_batches_and_this_one_talk_both_ways() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let old = Config {
        batches: false,
        ..test_config()
    };
    let oh = new_home(dir.path(), "Old")?;
    let nh = new_home(dir.path(), "New")?;
    let older = open(&oh, old.clone()).await?;
    let newer = open(&nh, test_config()).await?;
    pair(&older, &newer).await?;
    let (mut at_new, mut at_old) = (newer.subscribe(), older.subscribe());
    older.send_text("New", "from old").await?;
    assert_eq!(next_message(&mut at_new).await?, "from old");
    newer.send_text("Old", "from new").await?;
    assert_eq!(next_message(&mut at_old).await?, "from new");

    // The old one away: the new one queues, then delivers one at a time when it is back
    // (whichever side dials first).
    older.shutdown().await;
    drop(older);
    for i in 0..5 {
        newer.send_text("Old", &format!("queued {i}")).await?;
    }
    let older = open(&oh, old).await?;
    assert!(newer.wait_outbox_drained(None, WAIT).await?, "drained");
    let mut queued = bodies(&older, "New").await?;
    queued.retain(|b| b.starts_with("queued"));
    assert_eq!(
        queued,
        ["queued 0", "queued 1", "queued 2", "queued 3", "queued 4"]
    );
    // And the other way, the new one away.
    newer.shutdown().await;
    drop(newer);
    for i in 0..5 {
        older.send_text("New", &format!("back {i}")).await?;
    }
    let newer = open(&nh, test_config()).await?;
    assert!(older.wait_outbox_drained(None, WAIT).await?, "drained");
    let page = newer.history("Old", None, 100, false).await?;
    assert_eq!(page.len(), 12, "every message once");
    older.shutdown().await;
    newer.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn reused_and_expired_invites_are_refused() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let alice = open(&new_home(dir.path(), "Alice")?, test_config()).await?;
    let bob = open(&new_home(dir.path(), "Bob")?, test_config()).await?;
    let carol = open(&new_home(dir.path(), "Carol")?, test_config()).await?;
    let invite = alice.create_invite(None).await?;
    bob.pair(&invite).await?;
    match carol.pair(&invite).await {
        Err(Error::PairingRefused(reason)) => assert!(reason.contains("already used"), "{reason}"),
        other => panic!("reused invite: {other:?}"),
    }
    let expired = alice.create_invite(Some(Duration::ZERO)).await?;
    assert!(matches!(
        carol.pair(&expired).await,
        Err(Error::InviteExpired)
    ));
    assert!(carol.contacts()?.is_empty());
    assert_eq!(alice.contacts()?.len(), 1);
    for n in [alice, bob, carol] {
        n.shutdown().await;
    }
    Ok(())
}

#[tokio::test]
async fn garbage_invite_gives_a_clear_error() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let bob = open(&new_home(dir.path(), "Bob")?, test_config()).await?;
    for bad in [
        "",
        "ferry:",
        "ferry:zzzz1111",
        "https://example.com",
        "ferry:aaaaaaaaaaaaaaaa",
    ] {
        let err = bob.pair(bad).await.expect_err(bad);
        assert_eq!(err.code(), "invalid_invite", "{bad:?}: {err}");
    }
    bob.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn stranger_is_refused_on_chat() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let alice = open(&new_home(dir.path(), "Alice")?, test_config()).await?;
    let stranger = iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
        .relay_mode(iroh::RelayMode::Disabled)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")?
        .bind()
        .await?;
    let addr = alice.endpoint().addr();
    let conn = tokio::time::timeout(WAIT, stranger.connect(addr, ALPN_CHAT)).await??;
    let attempt = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        wire::write_frame(&mut send, &ChatRequest::Ping).await?;
        send.finish()?;
        let r: ChatResponse = wire::read_frame(&mut recv).await?;
        anyhow::Ok(r)
    };
    let r = tokio::time::timeout(WAIT, attempt).await?;
    assert!(r.is_err(), "a stranger got an answer: {r:?}");
    let reason = tokio::time::timeout(WAIT, conn.closed()).await?;
    assert!(
        format!("{reason:?}").contains("not a contact"),
        "{reason:?}"
    );
    assert!(alice.contacts()?.is_empty());
    stranger.close().await;
    alice.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn node_that_changed_port_is_reached_after_announcing_itself() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let (ah, bh) = (new_home(dir.path(), "Alice")?, new_home(dir.path(), "Bob")?);
    let alice = open(&ah, test_config()).await?;
    let bob = open(&bh, test_config()).await?;
    pair(&alice, &bob).await?;
    let old_port = alice.endpoint().bound_sockets()[0].port();
    alice.shutdown().await;
    drop(alice);
    bob.shutdown().await;
    drop(bob);

    // Alice comes back on another port while Bob is away; Bob comes back and Alice announces.
    let free = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let moved = Config {
        bind: Some(free),
        ..test_config()
    };
    let alice = open(&ah, moved.clone()).await?;
    let new_port = alice.endpoint().bound_sockets()[0].port();
    assert_ne!(old_port, new_port);
    let bob = open(&bh, test_config()).await?;
    let alice_id = alice.id();
    eventually(|| {
        Ok(bob
            .stored_contact(&alice_id)?
            .is_some_and(|c| c.addr.direct.iter().any(|a| a.port() == new_port)))
    })
    .await?;

    // Bob restarts with no live link and dials Alice at the announced address.
    bob.shutdown().await;
    drop(bob);
    let bob = open(&bh, test_config()).await?;
    let mut rx = alice.subscribe();
    bob.send_text("Alice", "found you").await?;
    let body = next_message(&mut rx).await?;
    assert_eq!(body, "found you");
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

/// At most `MAX_OPEN_INVITES` invites are open at once; one more is refused with a clear
/// error, and using one makes room again.
#[tokio::test]
async fn open_invites_have_a_quota_and_using_one_makes_room() -> Result<()> {
    use ferry_core::pairing::MAX_OPEN_INVITES;
    init_tracing();
    let dir = tempfile::tempdir()?;
    let alice = open(&new_home(dir.path(), "Alice")?, test_config()).await?;
    let bob = open(&new_home(dir.path(), "Bob")?, test_config()).await?;
    let mut invites = Vec::new();
    for _ in 0..MAX_OPEN_INVITES {
        invites.push(alice.create_invite(None).await?);
    }
    let over = alice.create_invite(None).await;
    match over {
        Err(e @ Error::Quota(_)) => {
            assert_eq!(e.code(), "quota");
            assert!(e.to_string().contains("invites are still open"), "{e}");
        }
        other => panic!("expected a quota error, got {other:?}"),
    }
    bob.pair(&invites[0]).await?;
    alice.create_invite(None).await?;
    alice.shutdown().await;
    bob.shutdown().await;
    Ok(())
}
