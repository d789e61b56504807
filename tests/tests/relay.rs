//! The relay path: a relay server started inside the test (plain HTTP on loopback), one peer
//! with no direct transport at all, and an assertion that the connection really is relayed.

use anyhow::{Context, Result};
use ferry_core::node::NetSettings;
use ferry_core::{Config, Node, PathKind, Presence, RelayChoice};
use ferry_tests::*;
use iroh_relay::server::{RelayConfig, Server, ServerConfig};

async fn relay_server() -> Result<(Server, String)> {
    let mut config = ServerConfig::default();
    config.relay = Some(RelayConfig::new(([127, 0, 0, 1], 0)));
    let server = Server::spawn(config).await?;
    let addr = server.http_addr().context("relay has an http address")?;
    Ok((server, format!("http://{addr}")))
}

#[tokio::test]
async fn peer_without_direct_transport_chats_through_the_relay() -> Result<()> {
    init_tracing();
    let (server, url) = relay_server().await?;
    let dir = tempfile::tempdir()?;
    let settings = NetSettings {
        relay: RelayChoice::Custom(url.clone()),
        bind: Some("127.0.0.1:0".parse()?),
        local_discovery: false,
    };
    let (ah, bh) = (dir.path().join("alice"), dir.path().join("bob"));
    Node::init_with(&ah, "Alice", &settings)?;
    Node::init_with(&bh, "Bob", &settings)?;
    let alice = open(&ah, test_config()).await?;
    // Bob has no IP transport: whatever reaches him must cross the relay.
    let bob = open(
        &bh,
        Config {
            direct: false,
            ..test_config()
        },
    )
    .await?;
    assert!(bob.endpoint().bound_sockets().is_empty());

    let invite = alice.create_invite(None).await?;
    let parsed = ferry_core::invite::Invite::parse(&invite)?;
    assert_eq!(
        parsed
            .addr
            .relay
            .as_deref()
            .map(|u| u.trim_end_matches('/')),
        Some(url.as_str())
    );
    bob.pair(&invite).await?;

    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    bob.send_text("Alice", "via the relay").await?;
    let got = next_message(&mut alice_events).await?;
    assert_eq!(got, "via the relay");
    alice.send_text("Bob", "and back").await?;
    let back = next_message(&mut bob_events).await?;
    assert_eq!(back, "and back");

    for (node, other) in [(&alice, "Bob"), (&bob, "Alice")] {
        let presence = node.contact(other)?.presence;
        assert!(
            matches!(
                presence,
                Presence::Online {
                    path: PathKind::Relayed,
                    ..
                }
            ),
            "{other} should be reached through the relay, got {presence:?}"
        );
    }
    alice.shutdown().await;
    bob.shutdown().await;
    server.shutdown().await?;
    Ok(())
}
