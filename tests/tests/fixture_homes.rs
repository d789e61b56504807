//! Homes written by earlier releases open with everything in them, sealed, and their sessions
//! keep working: nobody has to pair again. Both were made by `tests/fixtures/make_homes.py`:
//! `tests/fixtures/schema1/` with the release of 2026-12-01 (store schema 1),
//! `tests/fixtures/schema2/` with the release of 2026-12-06 before sealing (363ae6b, schema 2,
//! values and identity in clear).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use ferry_core::{ContactId, Direction, Event, MessageState, TransferState};
use ferry_tests::{files_under, init_tracing, open, test_config, wait_for, WAIT};

fn fixtures(schema: &str) -> PathBuf {
    ferry_tests::manifest_dir().join("fixtures").join(schema)
}

/// A copy of the fixture homes (opening one writes to it) in a temporary folder.
fn copy_homes(schema: &str, to: &Path) -> Result<()> {
    fn copy(from: &Path, to: &Path) -> Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let target = to.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                copy(&entry.path(), &target)?;
            } else {
                std::fs::copy(entry.path(), &target)?;
            }
        }
        Ok(())
    }
    copy(&fixtures(schema), to)?;
    // The identity file is owner-only in a real home; git does not keep modes.
    #[cfg(unix)]
    for home in ["alice", "bob", "carol"] {
        use std::os::unix::fs::PermissionsExt;
        let key = to.join(home).join("identity.key");
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// What `make_homes.py` recorded for one home.
struct Expected {
    id: String,
    name: String,
    contacts: Vec<(String, String, bool)>,
    history: BTreeMap<String, Vec<(String, String, String, String)>>,
    transfers: Vec<(String, String, String, String, u64)>,
}

fn expected(schema: &str, home: &str) -> Result<Expected> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures(schema).join("manifest.json"))?)?;
    let m = &manifest[home];
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let rows = |v: &serde_json::Value| v.as_array().cloned().unwrap_or_default();
    Ok(Expected {
        id: s(&m["id"]),
        name: s(&m["name"]),
        contacts: rows(&m["contacts"])
            .iter()
            .map(|c| (s(&c[0]), s(&c[1]), c[2].as_bool().unwrap_or(false)))
            .collect(),
        history: m["history"]
            .as_object()
            .context("history")?
            .iter()
            .map(|(k, msgs)| {
                let msgs = rows(msgs)
                    .iter()
                    .map(|r| (s(&r[0]), s(&r[1]), s(&r[2]), s(&r[3])))
                    .collect();
                (k.clone(), msgs)
            })
            .collect(),
        transfers: rows(&m["transfers"])
            .iter()
            .map(|t| {
                (
                    s(&t[0]),
                    s(&t[1]),
                    s(&t[2]),
                    s(&t[3]),
                    t[4].as_u64().unwrap_or(0),
                )
            })
            .collect(),
    })
}

fn word<T: serde::Serialize>(v: &T) -> Result<String> {
    Ok(serde_json::to_value(v)?
        .as_str()
        .unwrap_or_default()
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homes_of_the_schema_1_release_open_whole_sealed_and_keep_talking() -> Result<()> {
    earlier_homes_open_whole_sealed_and_keep_talking("schema1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homes_of_the_last_release_before_sealing_open_whole_sealed_and_keep_talking() -> Result<()>
{
    earlier_homes_open_whole_sealed_and_keep_talking("schema2").await
}

async fn earlier_homes_open_whole_sealed_and_keep_talking(schema: &str) -> Result<()> {
    init_tracing();
    let tmp = tempfile::tempdir()?;
    copy_homes(schema, tmp.path())?;
    // What the earlier release kept in clear, to look for once the homes are sealed.
    let mut clear: Vec<String> = ["alice", "bob"]
        .iter()
        .map(|h| expected(schema, h))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flat_map(|e| e.history.into_values().flatten().map(|m| m.2))
        .filter(|body| body.len() > 12)
        .collect();
    clear.dedup();
    ensure!(clear.len() >= 2, "bodies to look for: {clear:?}");
    let first = &clear[0];
    ensure!(
        files_under(&tmp.path().join("alice"))?
            .iter()
            .any(|(_, b)| b.windows(first.len()).any(|w| w == first.as_bytes())),
        "the fixture keeps {first:?} in clear (else this test checks nothing)"
    );
    let alice = open(&tmp.path().join("alice"), test_config()).await?;

    // Everything Alice had is there, as the earlier release showed it.
    let want = expected(schema, "alice")?;
    ensure!(alice.id().to_string() == want.id);
    ensure!(alice.profile().await?.name == want.name);
    let mut contacts: Vec<_> = alice
        .contacts()?
        .into_iter()
        .map(|c| (c.name, c.id.to_string(), c.verified))
        .collect();
    contacts.sort();
    ensure!(contacts == want.contacts, "contacts: {contacts:?}");
    for (name, msgs) in &want.history {
        let page = alice.history(name, None, 100, false).await?;
        let got: Vec<_> = page
            .iter()
            .map(|m| -> Result<_> {
                Ok((
                    m.id.to_string(),
                    word(&m.direction)?,
                    m.body.clone(),
                    word(&m.state)?,
                ))
            })
            .collect::<Result<_>>()?;
        ensure!(&got == msgs, "history with {name}: {got:?}");
        // Schema 2 gave each message its author: Alice for hers, the contact for theirs.
        let theirs: ContactId = want
            .contacts
            .iter()
            .find(|c| &c.0 == name)
            .context("the contact of a conversation")?
            .1
            .parse()?;
        for m in &page {
            let author = match m.direction {
                Direction::Outgoing | Direction::System => alice.id(),
                Direction::Incoming => theirs,
            };
            ensure!(m.author == author, "author of {:?}: {}", m.body, m.author);
        }
    }
    // And each contact's conversation a record of its own, with both as members.
    let conversations = alice.conversations()?;
    ensure!(
        conversations.len() == want.contacts.len(),
        "conversations: {conversations:?}"
    );
    for (_, id, _) in &want.contacts {
        let id: ContactId = id.parse()?;
        let c = conversations
            .iter()
            .find(|c| c.id == ferry_core::ConversationId::direct(&alice.id(), &id))
            .context("a contact's conversation")?;
        ensure!(c.kind == ferry_core::ConversationKind::Direct);
        ensure!(c.members.contains(&id) && c.members.contains(&alice.id()));
    }
    let mut transfers: Vec<_> = alice
        .transfers()?
        .iter()
        .map(|t| -> Result<_> {
            Ok((
                t.id.to_string(),
                word(&t.direction)?,
                t.name.clone(),
                word(&t.state)?,
                t.size,
            ))
        })
        .collect::<Result<_>>()?;
    transfers.sort();
    ensure!(transfers == want.transfers, "transfers: {transfers:?}");
    ensure!(alice.auto_accept("Bob")? == Some(10_000_000));
    ensure!(alice.outbox_len(None)? == 1, "the message to Carol waits");

    // The sessions still work: Bob's queued read receipt arrives, and new messages go both
    // ways on the ratchet state both homes kept.
    let mut alice_events = alice.subscribe();
    let bob = open(&tmp.path().join("bob"), test_config()).await?;
    let mut bob_events = bob.subscribe();
    let bob_id: ContactId = want
        .contacts
        .iter()
        .find(|c| c.0 == "Bob")
        .context("Bob")?
        .1
        .parse()?;
    let offer = want
        .transfers
        .iter()
        .find(|t| t.3 == "offered")
        .context("the open offer")?
        .0
        .clone();
    let photo: ferry_core::MessageId = want.history["Bob"]
        .iter()
        .find(|m| m.2 == "photo.jpg")
        .context("the photo's message")?
        .0
        .parse()?;
    wait_for(&mut alice_events, |e| match e {
        Event::DeliveryChanged { id, state, .. } if *id == photo => {
            (*state == MessageState::Read).then_some(())
        }
        _ => None,
    })
    .await
    .context("the read receipt Bob queued before the upgrade")?;
    alice.send_text("Bob", "after the upgrade").await?;
    let got = wait_for(&mut bob_events, |e| match e {
        Event::MessageReceived { message, .. } => Some(message.body.clone()),
        _ => None,
    })
    .await?;
    ensure!(got == "after the upgrade");
    let reply = bob.send_text("Alice", "still here").await?;
    ensure!(bob.wait_outbox_drained(None, WAIT).await?);
    ensure!(alice
        .message(&reply.id)?
        .is_some_and(|m| m.direction == Direction::Incoming));
    ensure!(alice.stored_contact(&bob_id)?.is_some());
    // A session the earlier release made can be reset, and chat goes on after it.
    alice.reset_session("Bob").await?;
    bob.send_text("Alice", "after the reset").await?;
    let got = wait_for(&mut alice_events, |e| match e {
        Event::MessageReceived { message, .. } if message.body == "after the reset" => Some(()),
        _ => None,
    })
    .await;
    ensure!(got.is_ok(), "Bob's message after the reset");

    // The offer made before the upgrade can still be answered. (Its source file lived in the
    // fixture maker's temporary folder, so Alice cannot serve the bytes any more.)
    let t = bob.accept_transfer(&offer).await?;
    ensure!(t.state == TransferState::Accepted, "{t:?}");

    // Carol was offline when Alice wrote to her; she gets it now.
    let carol = open(&tmp.path().join("carol"), test_config()).await?;
    ensure!(
        alice.wait_outbox_drained(None, WAIT).await?,
        "Alice's outbox drains"
    );
    let page = carol.history("Alice", None, 10, false).await?;
    ensure!(
        page.iter()
            .any(|m| m.body == "Carol is offline: this waits in the outbox."),
        "Carol's history: {page:?}"
    );
    for n in [&alice, &bob, &carol] {
        n.shutdown().await;
    }
    drop((alice, bob, carol));

    // Every home is sealed now: no identity in clear, no message body in clear anywhere.
    for home in ["alice", "bob", "carol"] {
        let home = tmp.path().join(home);
        ensure!(!home.join(ferry_core::home::IDENTITY_FILE).exists());
        ensure!(home.join(ferry_core::home::SEALED_IDENTITY_FILE).exists());
        ensure!(ferry_core::vault::protection(&home)?.is_some());
        for (path, bytes) in files_under(&home)? {
            for body in &clear {
                ensure!(
                    !bytes.windows(body.len()).any(|w| w == body.as_bytes()),
                    "{body:?} is in clear in {}",
                    path.display()
                );
            }
        }
    }
    Ok(())
}
