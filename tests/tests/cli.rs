//! The `ferry` binary as a user runs it: two homes, a daemon holding one of them, one-shot
//! commands going through its control socket, and the offline outbox.

use anyhow::Result;
use ferry_tests::*;
use serde_json::Value;

fn init(root: &std::path::Path, name: &str) -> Result<std::path::PathBuf> {
    init_home(root, name, &[])
}

fn json(out: &Output) -> Value {
    assert!(out.ok, "command failed: {}", out.stderr);
    serde_json::from_str(out.stdout.trim()).unwrap_or(Value::Null)
}

#[test]
fn pair_and_chat_through_a_daemon_and_one_shot_commands() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let alice = init(dir.path(), "Alice")?;
    let bob = init(dir.path(), "Bob")?;

    let mut daemon = Daemon::start(&alice, &[])?;
    // A second holder is refused with the first one's pid.
    let busy = ferry(&alice, &["daemon"])?;
    assert!(!busy.ok);
    assert!(
        busy.stderr.contains(&format!("pid {}", daemon.pid())),
        "{}",
        busy.stderr
    );

    // `invite` goes through the daemon's control socket; the invite is the only stdout line.
    let invite = ferry(&alice, &["invite", "--qr"])?;
    assert!(invite.ok, "{}", invite.stderr);
    let text = invite.stdout.trim();
    assert!(text.starts_with("ferry:") && !text.contains('\n'), "{text}");
    assert!(invite.stderr.contains('█'), "QR on stderr");

    let paired = ferry(&bob, &["pair", text])?;
    assert!(paired.ok, "{}", paired.stderr);
    assert!(
        paired.stdout.contains("Safety number:"),
        "{}",
        paired.stdout
    );
    daemon.wait_line(|v| v["type"] == "pairing_completed")?;

    // Bob has no daemon: a one-shot send delivers while it runs.
    let sent = ferry(&bob, &["send", "alice", "hello over the CLI", "--json"])?;
    assert!(sent.stderr.contains("delivered"), "{}", sent.stderr);
    let sent = json(&sent);
    let ev = daemon.wait_line(|v| v["type"] == "message_received")?;
    assert_eq!(ev["message"]["body"], "hello over the CLI");
    assert_eq!(ev["message"]["id"], sent["id"]);

    // Alice answers through her daemon; history and contacts go through it too.
    let reply = ferry(&alice, &["send", "Bob", "hi Bob"])?;
    assert!(reply.ok, "{}", reply.stderr);
    let history = json(&ferry(&alice, &["history", "Bob", "--json"])?);
    let bodies: Vec<&str> = history
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["body"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(bodies, ["hello over the CLI", "hi Bob"]);
    let contacts = json(&ferry(&alice, &["contacts", "--json"])?);
    assert_eq!(contacts[0]["name"], "Bob");

    // Bob picks up the reply when he next runs (the daemon's outbox retries until then).
    let bob_daemon = Daemon::start(&bob, &[])?;
    let bob_history = eventually_json(&bob, &["history", "Alice", "--json"], |v| {
        v.as_array().is_some_and(|a| a.len() == 2)
    })?;
    assert_eq!(bob_history[1]["body"], "hi Bob");
    assert_eq!(bob_history[1]["direction"], "incoming");
    bob_daemon.stop()?;
    daemon.stop()?;
    Ok(())
}

#[test]
fn offline_send_is_queued_and_says_so_then_delivered_by_the_daemon() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let alice = init(dir.path(), "Alice")?;
    let bob = init(dir.path(), "Bob")?;
    let invite = {
        let d = Daemon::start(&alice, &[])?;
        let out = ferry(&alice, &["invite"])?;
        assert!(out.ok, "{}", out.stderr);
        let paired = ferry(&bob, &["pair", out.stdout.trim()])?;
        assert!(paired.ok, "{}", paired.stderr);
        d.stop()?;
        out.stdout
    };
    // Alice is offline now.
    let out = ferry(&bob, &["send", "Alice", "are you there?", "--wait", "1s"])?;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stderr.contains("queued"), "{}", out.stderr);

    // The invite was single use.
    let carol = init(dir.path(), "Carol")?;
    let _d = Daemon::start(&alice, &[])?;
    let reuse = ferry(&carol, &["pair", invite.trim()])?;
    assert!(!reuse.ok);
    assert!(reuse.stderr.contains("already used"), "{}", reuse.stderr);

    // Bob's daemon delivers the queued message now that Alice is online.
    let bob_daemon = Daemon::start(&bob, &[])?;
    let history = eventually_json(&alice, &["history", "Bob", "--json"], |v| {
        v.as_array().is_some_and(|a| !a.is_empty())
    })?;
    assert_eq!(history[0]["body"], "are you there?");
    bob_daemon.stop()?;
    Ok(())
}

#[test]
fn garbage_invite_and_unknown_contact_give_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bob = init(dir.path(), "Bob")?;
    let out = ferry(&bob, &["pair", "ferry:not-an-invite"])?;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("not a valid Ferry invite"),
        "{}",
        out.stderr
    );
    let out = ferry(&bob, &["send", "nobody", "hi"])?;
    assert!(!out.ok);
    assert!(out.stderr.contains("no contact matches"), "{}", out.stderr);
    let fresh = dir.path().join("fresh");
    let out = ferry(&fresh, &["contacts"])?;
    assert!(!out.ok);
    assert!(out.stderr.contains("ferry init"), "{}", out.stderr);
    Ok(())
}

/// Runs a JSON-printing command until its output satisfies `pred` (bounded).
fn eventually_json(
    home: &std::path::Path,
    args: &[&str],
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let v = json(&ferry(home, args)?);
        if pred(&v) {
            return Ok(v);
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{args:?} never satisfied the condition; last output {v}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn daemon_killed_hard_leaves_nothing_that_blocks_the_next_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let alice = init(dir.path(), "Alice")?;
    let d = Daemon::start(&alice, &[])?;
    d.kill()?;
    assert!(
        alice.join("control.sock").exists(),
        "stale socket left by SIGKILL"
    );
    // The OS released the lock with the process; the next holder cleans the stale socket.
    let d = Daemon::start(&alice, &[])?;
    let out = ferry(&alice, &["whoami", "--json"])?;
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("\"name\":\"Alice\""), "{}", out.stdout);
    d.stop()?;
    assert!(
        !alice.join("control.sock").exists(),
        "socket removed at shutdown"
    );
    Ok(())
}

#[test]
fn verify_block_unblock_and_remove_by_their_names() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let alice = init(dir.path(), "Alice")?;
    let bob = init(dir.path(), "Bob")?;
    let daemon = Daemon::start(&alice, &[])?;
    let invite = ferry(&alice, &["invite"])?;
    assert!(invite.ok, "{}", invite.stderr);
    let paired = ferry(&bob, &["pair", invite.stdout.trim()])?;
    assert!(paired.ok, "{}", paired.stderr);

    // The digits are the only stdout line; the QR code is on stderr; nothing is marked.
    let shown = ferry(&alice, &["verify", "Bob"])?;
    assert!(shown.ok, "{}", shown.stderr);
    let digits = shown.stdout.trim();
    assert_eq!(digits.len(), 71, "{digits}");
    assert!(shown.stderr.contains('█'), "QR on stderr");
    let bobs = ferry(&bob, &["verify", "Alice"])?;
    assert_eq!(bobs.stdout.trim(), digits);
    let state = |who: &std::path::Path| -> Result<Value> {
        Ok(json(&ferry(who, &["contacts", "--json"])?)[0]["state"].clone())
    };
    assert_eq!(state(&alice)?, "unverified");
    let marked = ferry(&alice, &["verify", "Bob", "--mark"])?;
    assert!(
        marked.stdout.contains("Bob is verified"),
        "{}",
        marked.stdout
    );
    assert_eq!(state(&alice)?, "verified");
    assert!(ferry(&alice, &["verify", "Bob", "--unmark"])?.ok);
    assert_eq!(state(&alice)?, "unverified");
    let both = ferry(&alice, &["verify", "Bob", "--mark", "--unmark"])?;
    assert!(!both.ok, "--mark and --unmark together are refused");

    // Bob resets the session from his side (no daemon there: in process); Alice's daemon
    // answers, and her history says so.
    let reset = ferry(&bob, &["reset", "Alice"])?;
    assert!(reset.ok, "{}", reset.stderr);
    assert!(reset.stdout.contains("Secured again"), "{}", reset.stdout);
    let history = ferry(&alice, &["history", "Bob"])?;
    assert!(
        history
            .stdout
            .contains("-- Messages with Bob are secured again"),
        "{}",
        history.stdout
    );

    // Disappearing messages: set, read back, refused when not a timer Ferry offers.
    let timer = ferry(&alice, &["timer", "Bob", "1h"])?;
    assert!(timer.ok, "{}", timer.stderr);
    assert!(timer.stdout.contains("1 hour"), "{}", timer.stdout);
    let shown = ferry(&alice, &["timer", "Bob"])?;
    assert!(
        shown
            .stdout
            .contains("Disappearing messages with Bob: 1 hour"),
        "{}",
        shown.stdout
    );
    let bad = ferry(&alice, &["timer", "Bob", "3h"])?;
    assert!(
        !bad.ok && bad.stderr.contains("use off, 5m, 1h, 1d or 1w"),
        "{}",
        bad.stderr
    );
    assert!(ferry(&alice, &["timer", "Bob", "off"])?
        .stdout
        .contains("are off"));

    let blocked = ferry(&alice, &["block", "Bob"])?;
    assert!(blocked.ok, "{}", blocked.stderr);
    assert_eq!(state(&alice)?, "blocked");
    let refused = ferry(&alice, &["send", "Bob", "hi"])?;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("blocked"), "{}", refused.stderr);
    assert!(ferry(&alice, &["unblock", "Bob"])?.ok);
    assert_eq!(state(&alice)?, "unverified");

    let removed = ferry(&alice, &["remove", "Bob"])?;
    assert!(removed.ok, "{}", removed.stderr);
    assert!(removed.stdout.contains("Removed Bob"), "{}", removed.stdout);
    assert_eq!(
        json(&ferry(&alice, &["contacts", "--json"])?),
        Value::Array(vec![])
    );
    let gone = ferry(&alice, &["remove", "Bob", "--keep-history"])?;
    assert!(!gone.ok);
    assert!(
        gone.stderr.contains("no contact matches"),
        "{}",
        gone.stderr
    );
    daemon.stop()?;
    Ok(())
}

/// Pairs `joiner` with `inviter` (which runs `daemon`) through the CLI.
fn pair_cli(
    inviter: &std::path::Path,
    daemon: &mut Daemon,
    joiner: &std::path::Path,
) -> Result<()> {
    let invite = ferry(inviter, &["invite"])?;
    anyhow::ensure!(invite.ok, "{}", invite.stderr);
    let paired = ferry(joiner, &["pair", invite.stdout.trim()])?;
    anyhow::ensure!(paired.ok, "{}", paired.stderr);
    daemon.wait_line(|v| v["type"] == "pairing_completed")?;
    Ok(())
}

#[test]
fn groups_by_name_from_the_command_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ann = init(dir.path(), "Ann")?;
    let ben = init(dir.path(), "Ben")?;
    let cat = init(dir.path(), "Cat")?;
    let mut ann_d = Daemon::start(&ann, &[])?;
    let ben_d = Daemon::start(&ben, &[])?;
    let cat_downloads = dir.path().join("cat-downloads");
    let cat_d = Daemon::start(&cat, &["--downloads", &cat_downloads.to_string_lossy()])?;
    // Ben and Cat are both Ann's contacts, not each other's.
    pair_cli(&ann, &mut ann_d, &ben)?;
    pair_cli(&ann, &mut ann_d, &cat)?;

    let created = ferry(&ann, &["group", "create", "Team", "--members", "Ben,Cat"])?;
    assert!(created.ok, "{}", created.stderr);
    let id = created.stdout.trim().to_string();
    assert_eq!(id.len(), 32, "{id}");
    let groups = eventually_json(&cat, &["groups", "--json"], |v| {
        v[0]["members"].as_array().is_some_and(|m| m.len() == 3)
    })?;
    assert_eq!(groups[0]["id"], id.as_str());
    assert_eq!(groups[0]["name"], "Team");
    let ben_at_cat = groups[0]["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "Ben").cloned())
        .unwrap_or_default();
    assert_eq!(ben_at_cat["kind"], "not_your_contact");

    // Ben writes by the group's name; Cat, who is not his contact, reads it by an id prefix.
    let sent = ferry(&ben, &["send", "team", "hello team"])?;
    assert!(sent.ok, "{}", sent.stderr);
    let history = eventually_json(&cat, &["history", &id[..6], "--json"], |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|m| m["body"] == "hello team"))
    })?;
    let last = history
        .as_array()
        .and_then(|a| a.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["direction"], "incoming");
    let text = ferry(&cat, &["history", "Team"])?;
    assert!(text.stdout.contains("Ben: hello team"), "{}", text.stdout);
    assert!(
        text.stdout.contains("-- Ann created the group"),
        "{}",
        text.stdout
    );

    // A file to the group, by its name: Cat accepts it by id, and her daemon fetches it.
    let file = dir.path().join("agenda.txt");
    std::fs::write(&file, "1. hello\n2. files\n")?;
    let offered = ferry(&ann, &["send-file", "Team", &file.to_string_lossy()])?;
    assert!(offered.ok, "{}", offered.stderr);
    let listed = eventually_json(&cat, &["transfers", "--json"], |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|t| t["name"] == "agenda.txt"))
    })?;
    let tid = listed
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == "agenda.txt"))
        .and_then(|t| t["id"].as_str())
        .unwrap_or_default()
        .to_string();
    let accepted = ferry(&cat, &["accept", &tid[..8]])?;
    assert!(accepted.ok, "{}", accepted.stderr);
    eventually_json(&cat, &["transfers", "--json"], |v| {
        v.as_array().is_some_and(|a| {
            a.iter()
                .any(|t| t["id"] == tid.as_str() && t["state"] == "done")
        })
    })?;
    assert_eq!(
        std::fs::read(cat_downloads.join("agenda.txt"))?,
        std::fs::read(&file)?
    );

    // Rename, remove, and what only admins may do.
    let refused = ferry(&ben, &["group", "remove", "Team", "Cat"])?;
    assert!(
        !refused.ok && refused.stderr.contains("only an admin"),
        "{}",
        refused.stderr
    );
    assert!(ferry(&ann, &["group", "rename", "Team", "Crew"])?.ok);
    assert!(ferry(&ann, &["group", "remove", "Crew", "Cat"])?.ok);
    eventually_json(&cat, &["groups", "--json"], |v| v[0]["member"] == false)?;
    let listed = ferry(&ann, &["groups"])?;
    assert!(listed.stdout.contains("Crew"), "{}", listed.stdout);

    // A name that is a contact's and a group's: the command asks for the id.
    let created = ferry(&ann, &["group", "create", "Ben", "--members", "Ben"])?;
    assert!(created.ok, "{}", created.stderr);
    let which = ferry(&ann, &["send", "Ben", "which one?"])?;
    assert!(
        !which.ok && which.stderr.contains("give the id"),
        "{}",
        which.stderr
    );
    let leave = ferry(&ben, &["group", "leave", "Crew"])?;
    assert!(leave.ok, "{}", leave.stderr);
    cat_d.stop()?;
    ben_d.stop()?;
    ann_d.stop()?;
    Ok(())
}
