//! A new laptop loses nothing: a backup restored into a fresh home on another "machine" (another
//! folder) carries on every conversation both ways with the contact unchanged, after each
//! session is reset; what the contact wrote while the old machine was gone arrives.

use anyhow::{ensure, Context, Result};
use ferry_core::vault::Passphrase;
use ferry_core::{Event, Message};
use ferry_tests::{
    eventually, ferry, ferry_env, init_home, init_tracing, new_home, next_message, open, pair,
    test_config, wait_for, Daemon,
};
use std::path::Path;

/// Waits for the message with this body.
async fn message_with(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    body: &str,
) -> Result<Message> {
    wait_for(rx, |e| match e {
        Event::MessageReceived { message, .. } if message.body == body => Some(message.clone()),
        _ => None,
    })
    .await
    .with_context(|| format!("the message {body:?}"))
}

/// Waits until the conversation with Bob holds a message containing each of `needles`, and
/// returns its bodies.
async fn history_with(node: &ferry_core::Node, needles: &[&str]) -> Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + ferry_tests::WAIT;
    loop {
        let bodies: Vec<String> = node
            .history("Bob", None, 100, false)
            .await?
            .into_iter()
            .map(|m| m.body)
            .collect();
        if needles.iter().all(|n| bodies.iter().any(|b| b.contains(n))) {
            return Ok(bodies);
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{needles:?} not all in {bodies:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_home_carries_on_both_ways_and_gets_what_was_sent_while_it_was_gone(
) -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let alice_home = new_home(dir.path(), "Alice")?;
    let alice = open(&alice_home, test_config()).await?;
    let bob = open(&new_home(dir.path(), "Bob")?, test_config()).await?;
    pair(&alice, &bob).await?;
    alice.set_verified("Bob", true).await?;
    bob.set_verified("Alice", true).await?;
    let mut bob_events = bob.subscribe();
    let mut alice_events = alice.subscribe();
    alice.send_text("Bob", "before the backup").await?;
    ensure!(next_message(&mut bob_events).await? == "before the backup");
    bob.send_text("Alice", "a reply before the backup").await?;
    ensure!(next_message(&mut alice_events).await? == "a reply before the backup");

    let file = dir.path().join("alice.ferrybak");
    let pass = Passphrase::from("the backup's own passphrase");
    let done = alice.export_backup(&file, &pass, |_, _| {}).await?;
    ensure!(done.entries > 5, "{done:?}");

    // The old machine goes on a little after the backup: both ratchets move past it.
    alice.send_text("Bob", "after the backup").await?;
    message_with(&mut bob_events, "after the backup").await?;
    bob.send_text("Alice", "a reply after the backup").await?;
    message_with(&mut alice_events, "a reply after the backup").await?;
    alice.shutdown().await;
    drop(alice);

    // While Alice's laptop is gone, Bob writes.
    bob.send_text("Alice", "while you were away").await?;

    // The new laptop: the backup into a fresh home elsewhere.
    let new_home = dir.path().join("new-laptop").join("alice");
    let (id, _) = ferry_core::backup::import(&file, &new_home, &pass, None)?;
    let alice2 = open(&new_home, test_config()).await?;
    ensure!(alice2.id() == id);
    let mut events2 = alice2.subscribe();
    // What Bob wrote meanwhile arrives, and the reset says so, in either order (Bob's message
    // may open on the restored session, or wait for the reset): read from the history, which
    // also holds what came before this test subscribed.
    let bodies = history_with(&alice2, &["while you were away", "secured again"]).await?;
    ensure!(
        bodies.iter().any(|b| b == "before the backup"),
        "{bodies:?}"
    );
    ensure!(
        bodies.iter().any(|b| b == "a reply before the backup"),
        "{bodies:?}"
    );

    // Both ways, with the same contact on each side: same id, still verified, no key change.
    alice2.send_text("Bob", "from the new laptop").await?;
    message_with(&mut bob_events, "from the new laptop").await?;
    bob.send_text("Alice", "welcome back").await?;
    message_with(&mut events2, "welcome back").await?;
    let alice_at_bob = bob.contact("Alice")?;
    ensure!(
        alice_at_bob.id == id && alice_at_bob.verified,
        "{alice_at_bob:?}"
    );
    ensure!(!alice_at_bob.key_changed, "{alice_at_bob:?}");
    ensure!(alice2.contact("Bob")?.verified);
    // Nothing is left waiting on either side once the acknowledgements are back (the receiver's
    // event can come before the sender hears the acknowledgement, so this waits for it).
    eventually(|| Ok(alice2.outbox_len(None)? == 0 && bob.outbox_len(None)? == 0)).await?;
    alice2.shutdown().await;
    bob.shutdown().await;
    Ok(())
}

#[test]
fn the_cli_exports_through_the_daemon_and_imports_only_whole_backups_into_empty_homes() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let ann = init_home(dir.path(), "Ann", &[])?;
    let daemon = Daemon::start(&ann, &[])?;
    let file = dir.path().join("ann.ferrybak");
    let pass = Path::new("Ann's backup passphrase");
    let file_arg = file.to_str().context("utf-8")?;
    let out = ferry_env(
        &ann,
        &[("FERRY_BACKUP_PASSPHRASE", pass)],
        &["backup", "export", file_arg],
    )?;
    ensure!(out.ok, "{}", out.stderr);
    drop(daemon);
    let whole = std::fs::read(&file)?;

    // Cut short, or into a home that is not empty: refused, nothing written.
    let cut = dir.path().join("cut.ferrybak");
    std::fs::write(&cut, &whole[..whole.len() - 100])?;
    let target = dir.path().join("restored");
    let out = ferry_env(
        &target,
        &[("FERRY_BACKUP_PASSPHRASE", pass)],
        &["backup", "import", cut.to_str().context("utf-8")?],
    )?;
    ensure!(
        !out.ok && out.stderr.contains("damaged or incomplete"),
        "{}",
        out.stderr
    );
    ensure!(!target.exists());
    let out = ferry_env(
        &ann,
        &[("FERRY_BACKUP_PASSPHRASE", pass)],
        &["backup", "import", file_arg],
    )?;
    ensure!(
        !out.ok && out.stderr.contains("not empty"),
        "{}",
        out.stderr
    );
    let wrong = ferry_env(
        &target,
        &[("FERRY_BACKUP_PASSPHRASE", Path::new("not this one"))],
        &["backup", "import", file_arg],
    )?;
    ensure!(
        !wrong.ok && wrong.stderr.contains("wrong passphrase"),
        "{}",
        wrong.stderr
    );

    // Whole, into a new home: the same identity.
    let out = ferry_env(
        &target,
        &[("FERRY_BACKUP_PASSPHRASE", pass)],
        &["backup", "import", file_arg],
    )?;
    ensure!(out.ok, "{}", out.stderr);
    let before = ferry(&ann, &["whoami", "--json"])?;
    let after = ferry(&target, &["whoami", "--json"])?;
    let (b, a): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&before.stdout)?,
        serde_json::from_str(&after.stdout)?,
    );
    ensure!(a["id"] == b["id"] && a["name"] == "Ann", "{a} {b}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_backups_keep_the_newest_and_each_one_restores() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let home = new_home(dir.path(), "Ann")?;
    // One second of the schedule lasts 1 ms here: "every hour" is every 3.6 s.
    let ann = open(
        &home,
        ferry_core::Config {
            timer_ms: 1,
            ..test_config()
        },
    )
    .await?;
    let folder = dir.path().join("backups");
    let pass = Passphrase::from("scheduled backup passphrase");
    let short = ann
        .set_backup_schedule(Some((folder.clone(), 60, 2, pass.clone())))
        .await;
    ensure!(short.is_err(), "at most one an hour");
    let view = ann
        .set_backup_schedule(Some((folder.clone(), 3600, 2, pass.clone())))
        .await?
        .context("the schedule")?;
    ensure!(view.keep == 2 && view.every_secs == 3600);
    // Whole backups only: one being written is under a temporary name until it is renamed.
    let files = || -> Result<Vec<std::path::PathBuf>> {
        let mut v: Vec<_> = std::fs::read_dir(&folder)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        v.sort();
        Ok(v)
    };
    let backups = || -> Result<Vec<std::path::PathBuf>> {
        Ok(files()?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "ferrybak"))
            .collect())
    };
    // Three written (the first at once, then one every 3.6 s): the newest two are kept.
    let mut seen = std::collections::BTreeSet::new();
    ferry_tests::eventually(|| {
        seen.extend(backups()?);
        Ok(seen.len() >= 3)
    })
    .await?;
    let view = ann.backup_schedule()?.context("the schedule")?;
    ensure!(
        view.last_error.is_none() && view.last_file.is_some(),
        "{view:?}"
    );
    ann.set_backup_schedule(None).await?;
    ensure!(ann.backup_schedule()?.is_none());
    // Once the last one under way is renamed into place, the newest two are all there is.
    ferry_tests::eventually(|| Ok(files()? == backups()? && backups()?.len() == 2)).await?;
    let kept = backups()?;
    ann.shutdown().await;
    for (i, file) in kept.iter().enumerate() {
        let target = dir.path().join(format!("restored-{i}"));
        let (id, _) = ferry_core::backup::import(file, &target, &pass, None)?;
        ensure!(id == ann.id());
    }
    Ok(())
}
