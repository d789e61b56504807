//! Real nodes on loopback, relays disabled: pairing, chat, restarts, the outbox, invites,
//! strangers and address changes.

use std::time::Duration;

use anyhow::Result;
use ferry_core::wire::{self, ChatRequest, ChatResponse, ALPN_CHAT};
use ferry_core::{Config, Direction, Error, Event, MessageState, PathKind, Presence};
use ferry_tests::*;

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
    let page = alice.history("Bob", None, 100, false).await?;
    let bodies: Vec<&str> = page.iter().map(|m| m.body.as_str()).collect();
    let expected: Vec<String> = (0..12).map(|i| format!("queued {i}")).collect();
    assert_eq!(bodies, expected, "each message once, in order");
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
/// order, with none failed and nothing left queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_allowance_is_slowed_and_arrives_whole() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let alice = open(&new_home(dir.path(), "Alice")?, test_config()).await?;
    // Bob takes 10 frames at once and 20 a second after that.
    let slow = ferry_core::inbox::Allowances {
        frames_per_sec: 20.0,
        frames_burst: 10.0,
        ..Default::default()
    };
    let bob = open(
        &new_home(dir.path(), "Bob")?,
        Config {
            allowances: slow,
            ..test_config()
        },
    )
    .await?;
    pair(&alice, &bob).await?;
    let mut bob_events = bob.subscribe();
    const N: usize = 50;
    let mut sent = Vec::new();
    for i in 0..N {
        sent.push(alice.send_text("Bob", &format!("burst {i}")).await?.id);
    }
    let mut arrivals = Vec::new();
    while arrivals.len() < N {
        let body = next_message(&mut bob_events).await?;
        arrivals.push((tokio::time::Instant::now(), body));
    }
    assert!(
        alice.wait_outbox_drained(None, WAIT).await?,
        "nothing left queued"
    );
    let bodies: Vec<&str> = arrivals.iter().map(|(_, b)| b.as_str()).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("burst {i}")).collect();
    assert_eq!(bodies, expected, "each message once, in order");
    let page = bob.history("Alice", None, 1000, false).await?;
    assert_eq!(page.len(), N, "stored once each");
    for id in &sent {
        assert_eq!(
            alice.message(id)?.map(|m| m.state),
            Some(MessageState::Delivered),
            "none failed"
        );
    }
    // The limiter did hold the sender to Bob's allowance: after the first 10, no faster than
    // 20 a second (a lower bound on the time taken, so it cannot flake on a slow machine).
    let span = arrivals[N - 1].0 - arrivals[0].0;
    let floor = Duration::from_secs_f64((N - 10) as f64 / 20.0 * 0.8);
    assert!(
        span >= floor,
        "{N} arrived in {span:?}, faster than the allowance"
    );
    alice.shutdown().await;
    bob.shutdown().await;
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
