//! A stolen laptop reveals nothing: what a home keeps is sealed on disk, with or without a
//! passphrase; a wrong passphrase changes nothing; changing it keeps everything; a home of an
//! earlier release killed while it is being sealed finishes at its next start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ferry_core::store::{MessageV1, Store};
use ferry_core::vault::{self, Passphrase};
use ferry_core::{Config, ConversationId, Direction, MessageId, MessageState, Node, Protection};
use ferry_tests::{
    ferry, ferry_bin, ferry_env, files_under, init_tracing, loopback, new_home, next_message, open,
    pair, test_config, WAIT,
};

/// Fails if any file under `dir` holds any of `needles`.
fn nowhere_in(dir: &Path, needles: &[(String, Vec<u8>)]) -> Result<()> {
    let files = files_under(dir)?;
    ensure!(
        files.len() > 3,
        "nothing to look at under {}",
        dir.display()
    );
    for (path, bytes) in &files {
        for (what, needle) in needles {
            ensure!(
                !bytes.windows(needle.len()).any(|w| w == &needle[..]),
                "{what} is in clear in {}",
                path.display()
            );
        }
    }
    Ok(())
}

fn unique(tag: &str) -> String {
    let mut r = [0u8; 8];
    for (i, b) in r.iter_mut().enumerate() {
        *b = (std::process::id() as u64 ^ ferry_core::now_ms().rotate_left(i as u32 * 8)) as u8;
    }
    format!("{tag}-{}", data_encoding::HEXLOWER.encode(&r))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_and_no_session_key_is_on_disk_in_clear_with_or_without_a_passphrase(
) -> Result<()> {
    init_tracing();
    for with_passphrase in [false, true] {
        let dir = tempfile::tempdir()?;
        let pass = Passphrase::from("a passphrase for Alice");
        let alice_home = dir.path().join("alice");
        Node::init_protected(
            &alice_home,
            "Alice",
            &loopback(),
            with_passphrase.then_some(&pass),
        )?;
        let bob_home = new_home(dir.path(), "Bob")?;
        let alice_pass = with_passphrase.then(|| pass.clone());
        let config = Config {
            passphrase: alice_pass.clone(),
            ..test_config()
        };
        if with_passphrase {
            ensure!(
                matches!(
                    Node::open(&alice_home, test_config()).await,
                    Err(ferry_core::Error::PassphraseNeeded)
                ),
                "a home with a passphrase does not open without it"
            );
        }
        let alice = open(&alice_home, config.clone()).await?;
        let bob = open(&bob_home, test_config()).await?;
        pair(&alice, &bob).await?;
        let (to_bob, to_alice, waiting) = (unique("canary"), unique("canary"), unique("canary"));
        let mut bob_events = bob.subscribe();
        let mut alice_events = alice.subscribe();
        alice.send_text("Bob", &to_bob).await?;
        ensure!(next_message(&mut bob_events).await? == to_bob);
        bob.send_text("Alice", &to_alice).await?;
        ensure!(next_message(&mut alice_events).await? == to_alice);
        // One more waits in Alice's outbox while Bob is away.
        bob.shutdown().await;
        drop(bob);
        alice.send_text("Bob", &waiting).await?;
        ensure!(alice.outbox_len(None)? == 1);
        alice.shutdown().await;
        drop(alice);

        // What there is to find: the texts, both homes' identity secrets and every secret of
        // their sessions.
        let mut needles: Vec<(String, Vec<u8>)> = [&to_bob, &to_alice, &waiting]
            .iter()
            .map(|t| (format!("the message {t:?}"), t.as_bytes().to_vec()))
            .collect();
        for (who, home, p) in [
            ("Alice", &alice_home, alice_pass.as_ref()),
            ("Bob", &bob_home, None),
        ] {
            let id = ferry_core::identity::load_identity(home, p)?;
            needles.push((
                format!("{who}'s identity key"),
                id.secret_key().to_bytes().to_vec(),
            ));
            needles.push((
                format!("{who}'s X25519 key"),
                id.x25519_secret().to_bytes().to_vec(),
            ));
            let store = Store::open_home(home, p)?;
            let them = store.contacts()?.first().context("a contact")?.id;
            let session = store.session(&them)?.context("a session")?;
            let secrets = session.secrets();
            ensure!(
                secrets.len() >= 3,
                "{who}'s session secrets: {}",
                secrets.len()
            );
            for (i, s) in secrets.iter().enumerate() {
                needles.push((format!("{who}'s session secret {i}"), s.to_vec()));
            }
            // The store does hold the texts (else finding none on disk would prove nothing).
            let conv = ConversationId::direct(&id.id(), &them);
            let bodies: Vec<String> = store
                .history(&conv, None, 10)?
                .into_iter()
                .map(|m| m.body)
                .collect();
            ensure!(
                bodies.contains(&to_bob) && bodies.contains(&to_alice),
                "{bodies:?}"
            );
        }
        nowhere_in(dir.path(), &needles)?;

        if with_passphrase {
            // Changing the passphrase rewrites only the key file and keeps everything.
            let store_files = files_under(&alice_home.join("store"))?;
            let newer = Passphrase::from("another passphrase for Alice");
            vault::change_passphrase(&alice_home, Some(&pass), Some(&newer))?;
            ensure!(files_under(&alice_home.join("store"))? == store_files);
            let alice = open(
                &alice_home,
                Config {
                    passphrase: Some(newer),
                    ..test_config()
                },
            )
            .await?;
            let page = alice.history("Bob", None, 10, false).await?;
            ensure!(page.iter().any(|m| m.body == waiting), "{page:?}");
            ensure!(alice.outbox_len(None)? == 1);
            ensure!(alice.profile().await?.protection == Some(Protection::Passphrase));
            alice.shutdown().await;
        }
    }
    Ok(())
}

/// A snapshot of a home's files, without the ones that change on every start (the lock) or on
/// a wrong passphrase (its count).
fn snapshot(home: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    Ok(files_under(home)?
        .into_iter()
        .filter(|(p, _)| {
            !p.ends_with(ferry_core::home::LOCK_FILE) && !p.ends_with(vault::FAILURES_FILE)
        })
        .collect())
}

#[test]
fn the_cli_sets_changes_and_removes_the_passphrase_and_a_wrong_one_changes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("ann");
    let p = |s: &'static str| Path::new(s);
    let mut init = ferry_tests::LOOPBACK_ARGS.to_vec();
    init.extend(["init", "--name", "Ann"]);
    let out = ferry_env(&home, &[("FERRY_PASSPHRASE", p("first passphrase"))], &init)?;
    ensure!(out.ok, "{}", out.stderr);
    ensure!(
        out.stderr.contains("protected by a passphrase"),
        "{}",
        out.stderr
    );
    let whoami = |pass: Option<&'static str>| {
        let env: Vec<(&str, &Path)> = pass
            .map(|s| ("FERRY_PASSPHRASE", p(s)))
            .into_iter()
            .collect();
        ferry_env(&home, &env, &["whoami", "--json"])
    };
    let first = whoami(Some("first passphrase"))?;
    ensure!(first.ok, "{}", first.stderr);
    let me: serde_json::Value = serde_json::from_str(&first.stdout)?;
    ensure!(me["protection"] == "passphrase", "{me}");

    // No passphrase, or a wrong one: a clear error, and nothing changes.
    let before = snapshot(&home)?;
    let none = whoami(None)?;
    ensure!(
        !none.ok && none.stderr.contains("protected by a passphrase"),
        "{}",
        none.stderr
    );
    let wrong = whoami(Some("not the passphrase"))?;
    ensure!(
        !wrong.ok && wrong.stderr.contains("wrong passphrase"),
        "{}",
        wrong.stderr
    );
    let wrong_change = ferry_env(
        &home,
        &[
            ("FERRY_PASSPHRASE", p("not the passphrase")),
            ("FERRY_NEW_PASSPHRASE", p("second passphrase")),
        ],
        &["passphrase", "change"],
    )?;
    ensure!(!wrong_change.ok, "{}", wrong_change.stdout);
    ensure!(
        snapshot(&home)? == before,
        "a wrong passphrase changed a file"
    );

    // Change it: the old one no longer opens, the new one opens the same home.
    let changed = ferry_env(
        &home,
        &[
            ("FERRY_PASSPHRASE", p("first passphrase")),
            ("FERRY_NEW_PASSPHRASE", p("second passphrase")),
        ],
        &["passphrase", "change"],
    )?;
    ensure!(changed.ok, "{}", changed.stderr);
    ensure!(!whoami(Some("first passphrase"))?.ok);
    let second = whoami(Some("second passphrase"))?;
    let again: serde_json::Value = serde_json::from_str(&second.stdout)?;
    ensure!(again["id"] == me["id"] && again["name"] == "Ann", "{again}");

    // `set` refuses while one is set; `remove` keeps the key in a file (no keychain here).
    let set = ferry_env(
        &home,
        &[("FERRY_NEW_PASSPHRASE", p("third passphrase"))],
        &["passphrase", "set"],
    )?;
    ensure!(
        !set.ok && set.stderr.contains("passphrase change"),
        "{}",
        set.stderr
    );
    let removed = ferry_env(
        &home,
        &[("FERRY_PASSPHRASE", p("second passphrase"))],
        &["passphrase", "remove"],
    )?;
    ensure!(removed.ok, "{}", removed.stderr);
    let plain = ferry(&home, &["whoami"])?;
    ensure!(plain.ok, "{}", plain.stderr);
    ensure!(
        plain.stdout.contains("NOT protected by a passphrase"),
        "{}",
        plain.stdout
    );
    let short = ferry_env(
        &home,
        &[("FERRY_NEW_PASSPHRASE", p("short"))],
        &["passphrase", "set"],
    )?;
    ensure!(
        !short.ok && short.stderr.contains("at least 8"),
        "{}",
        short.stderr
    );
    let set = ferry_env(
        &home,
        &[("FERRY_NEW_PASSPHRASE", p("third passphrase"))],
        &["passphrase", "set"],
    )?;
    ensure!(set.ok, "{}", set.stderr);

    // Five wrong ones in a row, in separate processes: then even the right one must wait.
    for _ in 0..vault::MAX_FREE_TRIES {
        ensure!(!whoami(Some("a wrong guess"))?.ok);
    }
    let waits = whoami(Some("third passphrase"))?;
    ensure!(
        !waits.ok && waits.stderr.contains("try again in"),
        "{}",
        waits.stderr
    );
    Ok(())
}

/// Adds `n` schema-1 messages, in clear, to the conversation between `home`'s identity and
/// `with` in a home of the schema-1 release. Returns their bodies.
fn grow_schema1_home(home: &Path, with: &ferry_core::ContactId, n: u64) -> Result<Vec<String>> {
    let me = ferry_core::identity::load_plain(home)?.context("a schema-1 identity")?;
    let db = sled::open(home.join(ferry_core::home::STORE_DIR))?;
    let messages = db.open_tree("messages")?;
    let ids = db.open_tree("message_ids")?;
    let conv = ConversationId::direct(&me.id(), with);
    let mut bodies = Vec::new();
    let mut batch = (sled::Batch::default(), sled::Batch::default());
    for i in 0..n {
        let seq = 1_000_000 + i;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&seq.to_be_bytes());
        id[8] = 0xee;
        let body = format!("grown-{seq}-while-the-home-was-plain");
        let m = MessageV1 {
            id: MessageId(id),
            conversation: conv,
            contact: *with,
            seq,
            direction: Direction::Incoming,
            body: body.clone(),
            sent_at: seq,
            stored_at: seq,
            state: MessageState::Read,
            transfer: None,
        };
        let mut key = conv.0.to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        batch.0.insert(key.clone(), postcard::to_allocvec(&m)?);
        batch.1.insert(&id[..], key);
        bodies.push(body);
    }
    messages.apply_batch(batch.0)?;
    ids.apply_batch(batch.1)?;
    db.flush()?;
    Ok(bodies)
}

/// Polls until `path` exists or `child` exits; whether it appeared first.
fn appears(path: &Path, child: &mut std::process::Child) -> Result<bool> {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if path.exists() {
            return Ok(true);
        }
        if child.try_wait()?.is_some() {
            return Ok(path.exists());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    anyhow::bail!(
        "neither {} nor the end of ferry within {WAIT:?}",
        path.display()
    )
}

#[test]
fn a_schema_1_home_killed_while_being_sealed_is_sealed_whole_at_the_next_start() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("alice");
    let fixture = ferry_tests::manifest_dir().join("fixtures/schema1/alice");
    copy_dir(&fixture, &home)?;
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(
        ferry_tests::manifest_dir().join("fixtures/schema1/manifest.json"),
    )?)?;
    let bob: ferry_core::ContactId = manifest["bob"]["id"]
        .as_str()
        .context("Bob's id")?
        .parse()?;
    let grown = grow_schema1_home(&home, &bob, 10_000)?;
    let store_dir = home.join(ferry_core::home::STORE_DIR);
    let sealing = home.join("store.sealing");
    let ready = home.join("store.sealed-ready");

    // Killed (SIGKILL) while the sealed copy is being written.
    let start = || {
        std::process::Command::new(ferry_bin()?)
            .arg("--home")
            .arg(&home)
            .args(["contacts", "--json"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting ferry")
    };
    let mut child = start()?;
    ensure!(
        appears(&sealing, &mut child)?,
        "ferry ended before sealing began"
    );
    child.kill()?;
    child.wait()?;
    ensure!(
        sealing.exists() && store_dir.exists() && !ready.exists(),
        "not a half-written copy"
    );
    ensure!(
        ferry_core::vault::protection(&home)?.is_some(),
        "the data key was made before the store was sealed"
    );

    // Killed again, this time once the copy is whole, if the swap is slow enough to catch.
    let mut child = start()?;
    if appears(&ready, &mut child)? {
        child.kill()?;
    }
    child.wait()?;

    // The next start finishes it: everything is there, sealed, and nothing is left over.
    let out = ferry(&home, &["history", "Bob", "--limit", "100000", "--json"])?;
    ensure!(out.ok, "{}", out.stderr);
    let page: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)?;
    let bodies: std::collections::HashSet<&str> =
        page.iter().filter_map(|m| m["body"].as_str()).collect();
    for body in &grown {
        ensure!(bodies.contains(body.as_str()), "{body} was lost");
    }
    let earlier = manifest["alice"]["history"]["Bob"]
        .as_array()
        .context("Alice's history with Bob")?;
    ensure!(
        page.len() == grown.len() + earlier.len(),
        "{} messages",
        page.len()
    );
    for side in [&sealing, &ready, &home.join("store.plain-old")] {
        ensure!(!side.exists(), "{} is left over", side.display());
    }
    ensure!(!home.join(ferry_core::home::IDENTITY_FILE).exists());
    let needles: Vec<(String, Vec<u8>)> = grown
        .iter()
        .step_by(997)
        .map(|b| (b.clone(), b.as_bytes().to_vec()))
        .collect();
    nowhere_in(&home, &needles)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = to.join(ferry_core::home::IDENTITY_FILE);
        if key.exists() {
            std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

#[test]
fn the_data_key_goes_to_the_os_keychain_when_one_answers() -> Result<()> {
    use ferry_tests::webdriver::find_on_path;
    if find_on_path("gnome-keyring-daemon").is_none() || find_on_path("dbus-run-session").is_none()
    {
        println!("skipped: no gnome-keyring-daemon or dbus-run-session to stand for a keychain");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let home = dir.path().join("kay");
    // A private session bus and an unlocked keyring of its own (its files in the temp folder),
    // as a desktop login gives; the test run turns the keychain off, so it is turned on here.
    let script = r#"
set -e
echo -n "login password" | gnome-keyring-daemon --unlock --components=secrets >/dev/null
unset FERRY_KEYCHAIN
net="--relay disabled --bind 127.0.0.1:0 --local-discovery off"
"$FERRY" --home "$H" $net init --name Kay 2>/dev/null
echo "after init: $(tr -d ' \n' < "$H/datakey.json")"
"$FERRY" --home "$H" whoami | tail -1
FERRY_NEW_PASSPHRASE="Kay's passphrase" "$FERRY" --home "$H" passphrase set 2>/dev/null
echo "after set: $(tr -d ' \n' < "$H/datakey.json")"
FERRY_PASSPHRASE="Kay's passphrase" "$FERRY" --home "$H" passphrase remove 2>/dev/null
echo "after remove: $(tr -d ' \n' < "$H/datakey.json")"
"$FERRY" --home "$H" whoami | tail -1
"#;
    let mut child = std::process::Command::new("dbus-run-session")
        .args(["--", "bash", "-c", script])
        .env("FERRY", ferry_bin()?)
        .env("H", &home)
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path().join("xdg"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + WAIT * 3;
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("the keychain script did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_string()
    };
    ensure!(
        line("after init").contains(r#""kept_in":"keychain""#),
        "{text}"
    );
    ensure!(
        !line("after init").contains(r#""key":"#),
        "no key in the file: {text}"
    );
    ensure!(
        line("after set").contains(r#""kept_in":"passphrase""#),
        "{text}"
    );
    ensure!(
        line("after remove").contains(r#""kept_in":"keychain""#),
        "{text}"
    );
    ensure!(
        line("after remove") != line("after init"),
        "a new keychain entry: {text}"
    );
    let kept = text
        .lines()
        .filter(|l| l.contains("data key: kept in the OS keychain"))
        .count();
    ensure!(
        kept == 2,
        "whoami opened the home from the keychain twice: {text}"
    );
    Ok(())
}
