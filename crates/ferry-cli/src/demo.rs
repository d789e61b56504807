//! `ferry demo`: two real nodes on loopback, no network needed.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferry_core::node::NetSettings;
use ferry_core::{Config, Event, Node, RelayChoice};

const WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn run() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let settings = NetSettings {
        relay: RelayChoice::Disabled,
        bind: Some("127.0.0.1:0".parse()?),
        local_discovery: false,
    };
    let (alice_home, bob_home) = (dir.path().join("alice"), dir.path().join("bob"));
    Node::init_with(&alice_home, "Alice", &settings)?;
    Node::init_with(&bob_home, "Bob", &settings)?;
    let config = Config::default();
    let alice = Node::open(&alice_home, config.clone()).await?;
    let bob = Node::open(&bob_home, config).await?;
    println!("Two homes in {}", dir.path().display());
    println!("  Alice {}", alice.id());
    println!("  Bob   {}", bob.id());

    let invite = alice.create_invite(None).await?;
    println!(
        "\n1. Alice makes an invite:\n   {}…",
        &invite[..48.min(invite.len())]
    );
    let contact = bob.pair(&invite).await.context("Bob pairs")?;
    println!(
        "2. Bob pairs with it. Safety number on both sides:\n   {}",
        contact.safety_number
    );
    let alice_view = alice.contact("Bob")?;
    if alice_view.safety_number != contact.safety_number {
        bail!("safety numbers differ");
    }

    let mut alice_events = alice.subscribe();
    let mut bob_events = bob.subscribe();
    let sent = bob
        .send_text("Alice", "Hi Alice! This went end-to-end encrypted.")
        .await?;
    println!("3. Bob sends: {:?}", sent.body);
    let got = wait_message(&mut alice_events).await?;
    println!("   Alice receives: {got:?}");
    alice.send_text("Bob", "Hi Bob, got it.").await?;
    let got = wait_message(&mut bob_events).await?;
    println!("4. Alice replies; Bob receives: {got:?}");

    let page = alice.history("Bob", None, 10, true).await?;
    println!(
        "5. Alice reads the conversation ({} messages); Bob gets a read receipt:",
        page.len()
    );
    let read = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Event::DeliveryChanged { state, .. }) = bob_events.recv().await {
                if state == ferry_core::MessageState::Read {
                    return;
                }
            }
        }
    })
    .await;
    println!(
        "   {}",
        if read.is_ok() {
            "read ✓✓"
        } else {
            "(no receipt in time)"
        }
    );
    for m in bob.history("Alice", None, 10, false).await? {
        println!("   [{:?}] {:?}: {}", m.state, m.direction, m.body);
    }
    alice.shutdown().await;
    bob.shutdown().await;
    println!("\nDone: both nodes shut down; the temporary homes are removed.");
    Ok(())
}

async fn wait_message(events: &mut tokio::sync::broadcast::Receiver<Event>) -> Result<String> {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(Event::MessageReceived { message, .. }) => return Ok(message.body),
                Ok(_) => {}
                Err(e) => bail!("event stream: {e}"),
            }
        }
    })
    .await
    .context("no message within 10 s")?
}
