//! Files and folders between real nodes on loopback: round trips, decline and cancel, hostile
//! names, and access control against strangers and other contacts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use ferry_core::{Event, Node, Transfer, TransferId, TransferState};
use ferry_tests::*;

struct Pair {
    _dir: tempfile::TempDir,
    root: PathBuf,
    alice: Arc<Node>,
    bob: Arc<Node>,
    downloads: PathBuf,
}

async fn paired() -> Result<Pair> {
    paired_with(test_config()).await
}

/// Alice (test settings) and Bob (`bob`), paired, Bob saving into `<root>/downloads`.
async fn paired_with(bob: ferry_core::Config) -> Result<Pair> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let root = dir.path().to_path_buf();
    let alice = open(&new_home(&root, "Alice")?, test_config()).await?;
    let bob = open(&new_home(&root, "Bob")?, bob).await?;
    pair(&alice, &bob).await?;
    let downloads = root.join("downloads");
    bob.set_downloads_dir(&downloads).await?;
    Ok(Pair {
        _dir: dir,
        root,
        alice,
        bob,
        downloads,
    })
}

/// Rewrites a file and stamps it a few seconds in the future, as an author still editing it
/// after the offer does.
fn edit_later(path: &Path, bytes: &[u8]) -> Result<()> {
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::write(path, bytes)?;
    std::fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(later)?;
    Ok(())
}

/// Bob accepts an offer whose source changed since: it fails on Alice's side and is cancelled
/// on Bob's, both saying why.
async fn accepted_but_changed(p: &Pair, id: TransferId) -> Result<()> {
    p.bob.accept_transfer(&id.to_string()).await?;
    state_becomes(&p.alice, id, TransferState::Failed).await?;
    state_becomes(&p.bob, id, TransferState::Cancelled).await?;
    for node in [&p.alice, &p.bob] {
        let t = node.transfer_by_id(&id)?.context("the transfer")?;
        let why = t.error.unwrap_or_default();
        assert!(why.contains("changed after it was offered"), "{why}");
    }
    Ok(())
}

/// Deterministic pseudo-random bytes (no two chunks alike, so nothing deduplicates).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

async fn offered(
    node: &Node,
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
) -> Result<Transfer> {
    let _ = node;
    wait_for(rx, |e| match e {
        Event::TransferOffered { transfer } => Some(transfer.clone()),
        _ => None,
    })
    .await
}

async fn completed(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    id: TransferId,
) -> Result<PathBuf> {
    wait_for(rx, |e| match e {
        Event::TransferCompleted { id: done, path } if *done == id => Some(path.clone()),
        _ => None,
    })
    .await
}

async fn state_becomes(node: &Node, id: TransferId, state: TransferState) -> Result<()> {
    let mut rx = node.subscribe();
    if node.transfer_by_id(&id)?.map(|t| t.state) == Some(state) {
        return Ok(());
    }
    wait_for(&mut rx, |e| match e {
        Event::TransferChanged { transfer } if transfer.id == id && transfer.state == state => {
            Some(())
        }
        _ => None,
    })
    .await
}

fn no_exec_bit(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 == 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        true
    }
}

#[tokio::test]
async fn file_and_nested_folder_round_trip_byte_for_byte() -> Result<()> {
    let p = paired().await?;
    let src = p.root.join("src");
    std::fs::create_dir_all(src.join("photos/2026/summer"))?;
    let file = src.join("video.mp4");
    std::fs::write(&file, data(3 << 20, 1))?;
    std::fs::write(src.join("photos/a.jpg"), data(200_000, 2))?;
    std::fs::write(src.join("photos/2026/b.jpg"), data(70_000, 3))?;
    std::fs::write(src.join("photos/2026/summer/c.txt"), b"beach")?;
    std::fs::write(src.join("photos/empty.txt"), b"")?;

    let mut rx = p.bob.subscribe();
    let sent = p.alice.send_file("Bob", &file).await?;
    let offer = offered(&p.bob, &mut rx).await?;
    assert_eq!(
        (offer.id, offer.size, offer.folder),
        (sent.id, 3 << 20, false)
    );
    assert_eq!(offer.media_type, "video/mp4");
    assert!(!offer.dangerous);
    p.bob.accept_transfer(&offer.id.to_string()).await?;
    let path = completed(&mut rx, offer.id).await?;
    assert_eq!(path, p.downloads.join("video.mp4"));
    assert_eq!(std::fs::read(&path)?, std::fs::read(&file)?);
    assert!(no_exec_bit(&path));
    state_becomes(&p.alice, sent.id, TransferState::Done).await?;

    let folder = p.alice.send_file("Bob", &src.join("photos")).await?;
    let offer = offered(&p.bob, &mut rx).await?;
    assert!(offer.folder);
    assert_eq!(offer.files, 4);
    p.bob.accept_transfer(&offer.id.to_string()[..8]).await?;
    let saved = completed(&mut rx, offer.id).await?;
    assert_eq!(saved, p.downloads.join("photos"));
    for rel in ["a.jpg", "2026/b.jpg", "2026/summer/c.txt", "empty.txt"] {
        assert_eq!(
            std::fs::read(saved.join(rel)).with_context(|| rel.to_string())?,
            std::fs::read(src.join("photos").join(rel))?,
            "{rel}"
        );
    }
    state_becomes(&p.alice, folder.id, TransferState::Done).await?;
    let done = p.bob.transfer(&offer.id.to_string())?;
    assert_eq!(
        (done.state, done.bytes_done),
        (TransferState::Done, done.size)
    );

    // The same folder again lands next to the first, never over it.
    p.bob.set_auto_accept("Alice", Some(10 << 20)).await?;
    let again = p.alice.send_file("Bob", &src.join("photos")).await?;
    let second = completed(&mut rx, again.id).await?;
    assert_eq!(second, p.downloads.join("photos (1)"));
    p.alice.shutdown().await;
    p.bob.shutdown().await;
    Ok(())
}

/// A file edited after it was offered no longer matches its hash. The sender notices when the
/// receiver asks for it and says so on both sides; the receiver never sees a bare
/// verification error and never saves the changed bytes.
#[tokio::test]
async fn a_file_changed_after_the_offer_is_refused_with_a_reason() -> Result<()> {
    let p = paired().await?;
    let file = p.root.join("draft.txt");
    std::fs::write(&file, data(64 * 1024, 7))?;
    let mut rx = p.bob.subscribe();
    let sent = p.alice.send_file("Bob", &file).await?;
    offered(&p.bob, &mut rx).await?;
    // The author keeps editing: a later modification time and another size.
    edit_later(&file, &data(70 * 1024, 8))?;
    accepted_but_changed(&p, sent.id).await?;
    assert!(!p.downloads.join("draft.txt").exists());
    p.alice.shutdown().await;
    p.bob.shutdown().await;
    Ok(())
}

/// The same for a folder: one of its files edited after the offer.
#[tokio::test]
async fn a_folder_with_a_file_changed_after_the_offer_is_refused_with_a_reason() -> Result<()> {
    let p = paired().await?;
    let folder = p.root.join("album");
    std::fs::create_dir_all(folder.join("day 2"))?;
    std::fs::write(folder.join("a.jpg"), data(40 * 1024, 21))?;
    let edited = folder.join("day 2").join("b.jpg");
    std::fs::write(&edited, data(50 * 1024, 22))?;
    let mut rx = p.bob.subscribe();
    let sent = p.alice.send_file("Bob", &folder).await?;
    offered(&p.bob, &mut rx).await?;
    // Same size, a later modification time: only the timestamp tells.
    edit_later(&edited, &data(50 * 1024, 23))?;
    accepted_but_changed(&p, sent.id).await?;
    p.alice.shutdown().await;
    p.bob.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn decline_and_cancel_reach_the_other_side() -> Result<()> {
    let p = paired().await?;
    let file = p.root.join("notes.txt");
    std::fs::write(&file, b"not for you")?;
    let mut rx = p.bob.subscribe();

    let first = p.alice.send_file("Bob", &file).await?;
    offered(&p.bob, &mut rx).await?;
    p.bob.decline_transfer(&first.id.to_string()).await?;
    state_becomes(&p.alice, first.id, TransferState::Declined).await?;
    assert!(p.bob.accept_transfer(&first.id.to_string()).await.is_err());

    let second = p.alice.send_file("Bob", &file).await?;
    offered(&p.bob, &mut rx).await?;
    p.alice.cancel_transfer(&second.id.to_string()).await?;
    state_becomes(&p.bob, second.id, TransferState::Cancelled).await?;
    assert!(p.bob.accept_transfer(&second.id.to_string()).await.is_err());
    assert!(!p.downloads.join("notes.txt").exists());
    p.alice.shutdown().await;
    p.bob.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn hostile_names_are_cleaned_flagged_and_never_overwrite() -> Result<()> {
    let p = paired().await?;
    std::fs::create_dir_all(&p.downloads)?;
    std::fs::write(p.downloads.join("exists.txt"), b"mine")?;
    let file = p.root.join("payload");
    std::fs::write(&file, b"payload")?;
    p.bob.set_auto_accept("Alice", Some(1 << 20)).await?;
    let long = format!("{}.txt", "x".repeat(296));
    let table: Vec<(&str, String, bool)> = vec![
        ("..\\..\\x", "x".into(), false),
        ("a/../../b", "b".into(), false),
        ("CON.txt", "_CON.txt".into(), false),
        ("report\u{202E}fdp.exe", "reportfdp.exe".into(), true),
        (&long, format!("{}.txt", "x".repeat(251)), false),
        ("exists.txt", "exists (1).txt".into(), false),
    ];
    let mut rx = p.bob.subscribe();
    for (remote, expected, dangerous) in &table {
        let sent = p.alice.send_file_named("Bob", &file, remote).await?;
        let path = completed(&mut rx, sent.id).await?;
        assert_eq!(path.parent(), Some(p.downloads.as_path()), "{remote:?}");
        assert_eq!(
            path.file_name().map(|n| n.to_string_lossy().into_owned()),
            Some(expected.clone()),
            "{remote:?}"
        );
        assert!(path.file_name().is_some_and(|n| n.len() <= 255));
        let t = p.bob.transfer(&sent.id.to_string())?;
        assert_eq!(t.dangerous, *dangerous, "{remote:?}");
        assert_eq!(std::fs::read(&path)?, b"payload");
    }
    assert_eq!(std::fs::read(p.downloads.join("exists.txt"))?, b"mine");
    let outside: Vec<_> = std::fs::read_dir(&p.root)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["alice", "bob", "downloads", "payload"].contains(&n.as_str()))
        .collect();
    assert!(
        outside.is_empty(),
        "wrote outside the download folder: {outside:?}"
    );
    p.alice.shutdown().await;
    p.bob.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn strangers_and_other_contacts_cannot_fetch_an_offered_hash() -> Result<()> {
    let p = paired().await?;
    let carol_home = new_home(&p.root, "Carol")?;
    {
        let carol = open(&carol_home, test_config()).await?;
        pair(&p.alice, &carol).await?;
        carol.shutdown().await;
    }
    let file = p.root.join("secret.bin");
    std::fs::write(&file, data(100_000, 9))?;
    let offer = p.alice.send_file("Bob", &file).await?;
    let hash: iroh_blobs::Hash = offer.hash.parse()?;
    let alice_addr = p.alice.endpoint().addr();

    let carol_key = ferry_core::identity::load_identity(&carol_home, None)?
        .secret_key()
        .clone();
    for (who, key) in [
        ("Carol, another contact", carol_key),
        ("a stranger", iroh::SecretKey::generate()),
    ] {
        let ep = loopback_endpoint(key).await?;
        let store = iroh_blobs::store::mem::MemStore::new();
        let attempt = async {
            let conn = ep.connect(alice_addr.clone(), iroh_blobs::ALPN).await?;
            store
                .remote()
                .fetch(conn.clone(), iroh_blobs::HashAndFormat::raw(hash))
                .await?;
            anyhow::Ok(())
        };
        let r = tokio::time::timeout(WAIT, attempt).await?;
        assert!(r.is_err(), "{who} fetched the blob");
        assert!(!store.blobs().has(hash).await?, "{who} got bytes");
        // Other request kinds are checked too.
        if let Ok(conn) = ep.connect(alice_addr.clone(), iroh_blobs::ALPN).await {
            let many = iroh_blobs::protocol::GetManyRequest::builder()
                .hash(hash, iroh_blobs::protocol::ChunkRanges::all())
                .build();
            let r =
                tokio::time::timeout(WAIT, store.remote().execute_get_many(conn, many).complete())
                    .await?;
            assert!(r.is_err(), "{who} used get-many");
        }
        ep.close().await;
    }

    // Bob, the contact it was offered to, can.
    let mut rx = p.bob.subscribe();
    p.bob.accept_transfer(&offer.id.to_string()).await?;
    let path = completed(&mut rx, offer.id).await?;
    assert_eq!(std::fs::read(path)?, std::fs::read(&file)?);
    p.alice.shutdown().await;
    p.bob.shutdown().await;
    Ok(())
}

/// Alice and Bob with the blob store's garbage collection every second on Bob's side (the
/// default is half a minute), and Bob accepting Alice's files.
async fn paired_fast_gc() -> Result<Pair> {
    let fast = ferry_core::Config {
        gc_interval: std::time::Duration::from_secs(1),
        ..test_config()
    };
    let p = paired_with(fast).await?;
    p.bob.set_auto_accept("Alice", Some(1 << 30)).await?;
    Ok(p)
}

/// The same content again, as a user meets it: the copy received first deleted, then the next
/// one changed in place, then one left alone. Each time Bob ends up with the file exactly as
/// sent, and never touches what he changed himself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_file_again_arrives_whole_after_the_first_copy_was_deleted_or_changed(
) -> Result<()> {
    let p = paired_fast_gc().await?;
    let file = p.root.join("photo.jpg");
    let bytes = data(300 * 1024, 11);
    std::fs::write(&file, &bytes)?;
    let mut rx = p.bob.subscribe();
    let send = |p: &Pair| {
        let (alice, file) = (p.alice.clone(), file.clone());
        async move { alice.send_file("Bob", &file).await }
    };

    let first = send(&p).await?;
    let got = completed(&mut rx, first.id).await?;
    assert_eq!(std::fs::read(&got)?, bytes);
    std::fs::remove_file(&got)?;

    // Deleted: sent again, right away (the store still lists the content).
    let second = send(&p).await?;
    let got = completed(&mut rx, second.id).await?;
    assert_eq!(std::fs::read(&got)?, bytes, "the second copy is whole");

    // Changed in place, same length: sent again.
    let mut edited = bytes.clone();
    edited[1000] ^= 0xff;
    std::fs::write(&got, &edited)?;
    let third = send(&p).await?;
    let again = completed(&mut rx, third.id).await?;
    assert_ne!(again, got);
    assert_eq!(
        std::fs::read(&again)?,
        bytes,
        "the third copy is what was sent"
    );
    assert_eq!(
        std::fs::read(&got)?,
        edited,
        "Bob's own change is left alone"
    );

    // Left alone: a fourth copy comes from what Bob has, unchanged, and leaves it so.
    let fourth = send(&p).await?;
    let last = completed(&mut rx, fourth.id).await?;
    assert_eq!(std::fs::read(&last)?, bytes);
    assert_eq!(std::fs::read(&again)?, bytes);
    for id in [first.id, second.id, third.id, fourth.id] {
        state_becomes(&p.alice, id, TransferState::Done).await?;
    }
    p.alice.shutdown().await;
    p.bob.shutdown().await;
    Ok(())
}

/// One file to two contacts at once, and the same content to one contact from two: all
/// arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_file_to_two_contacts_and_from_two_contacts_at_once() -> Result<()> {
    let p = paired_fast_gc().await?;
    let carol = open(&new_home(&p.root, "Carol")?, test_config()).await?;
    pair(&p.alice, &carol).await?;
    pair(&carol, &p.bob).await?;
    let carol_downloads = p.root.join("carol-downloads");
    carol.set_downloads_dir(&carol_downloads).await?;
    carol.set_auto_accept("Alice", Some(1 << 30)).await?;
    p.bob.set_auto_accept("Carol", Some(1 << 30)).await?;
    let file = p.root.join("both.bin");
    let bytes = data(500 * 1024, 12);
    std::fs::write(&file, &bytes)?;

    let (mut at_bob, mut at_carol) = (p.bob.subscribe(), carol.subscribe());
    let (to_bob, to_carol) = tokio::try_join!(
        p.alice.send_file("Bob", &file),
        p.alice.send_file("Carol", &file)
    )?;
    let (b, c) = tokio::try_join!(
        completed(&mut at_bob, to_bob.id),
        completed(&mut at_carol, to_carol.id)
    )?;
    assert_eq!(std::fs::read(b)?, bytes);
    assert_eq!(std::fs::read(c)?, bytes);

    // Carol's copy goes on to Bob while Alice sends hers again: the same content from two.
    let copy = p.root.join("carol-copy.bin");
    std::fs::write(&copy, &bytes)?;
    let (from_alice, from_carol) = tokio::try_join!(
        p.alice.send_file("Bob", &file),
        carol.send_file("Bob", &copy)
    )?;
    let one = completed(&mut at_bob, from_alice.id).await?;
    let two = match p.bob.transfer_by_id(&from_carol.id)?.and_then(|t| t.path) {
        Some(path) => path,
        None => completed(&mut at_bob, from_carol.id).await?,
    };
    assert_ne!(one, two);
    assert_eq!(std::fs::read(one)?, bytes);
    assert_eq!(std::fs::read(two)?, bytes);
    carol.shutdown().await;
    p.alice.shutdown().await;
    p.bob.shutdown().await;
    Ok(())
}

/// The text of the first notice `keep` (given the contact's name and the text) picks.
async fn notice(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    keep: impl Fn(&str, &str) -> bool,
) -> Result<String> {
    wait_for(rx, |e| match e {
        Event::Notice { name, text, .. } if keep(name, text) => Some(text.clone()),
        _ => None,
    })
    .await
}

/// The bytes under a folder (a node's blob store, say), every file counted.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Alice's offer lies as `claim` says; Bob takes any file up to 64 KiB at once. The transfer
/// fails on both sides with a reason that says the content is not what was offered, nothing
/// is saved, and Bob's blob store grows by at most `most` bytes.
async fn a_lie_is_stopped(
    file_len: usize,
    claim: ferry_core::transfer::Claim,
    most: u64,
) -> Result<()> {
    let p = paired().await?;
    let file = p.root.join("big.bin");
    std::fs::write(&file, data(file_len, 31))?;
    p.bob.set_auto_accept("Alice", Some(64 * 1024)).await?;
    let blobs = p.root.join("bob").join(ferry_core::transfer::BLOBS_DIR);
    let before = bytes_under(&blobs);
    let sent = p.alice.send_file_claiming("Bob", &file, claim).await?;
    state_becomes(&p.bob, sent.id, TransferState::Failed).await?;
    let why = p
        .bob
        .transfer_by_id(&sent.id)?
        .and_then(|t| t.error)
        .unwrap_or_default();
    assert!(
        why.contains("not what the sender offered") || why.contains("more than it offered"),
        "{why}"
    );
    state_becomes(&p.alice, sent.id, TransferState::Failed).await?;
    let grew = bytes_under(&blobs).saturating_sub(before);
    assert!(
        grew <= most,
        "Bob's blob store grew by {grew} bytes, at most {most} expected"
    );
    assert!(
        std::fs::read_dir(&p.downloads).map_or(true, |mut d| d.next().is_none()),
        "nothing is saved"
    );
    p.alice.shutdown().await;
    p.bob.shutdown().await;
    Ok(())
}

/// A sender that says 1 KiB and has 16 MiB is refused from the verified size, before any of
/// the content is fetched (only its last chunk group was read, and not stored).
#[tokio::test]
async fn a_sender_claiming_a_small_size_is_refused_before_anything_is_fetched() -> Result<()> {
    let claim = ferry_core::transfer::Claim {
        size: 1024,
        files: 1,
        copies: 1,
    };
    a_lie_is_stopped(16 << 20, claim, 1 << 20).await
}

/// A folder of 300 entries, all one file, offered as a folder of one file: refused from the
/// verified list of hashes, before any file is fetched.
#[tokio::test]
async fn a_collection_with_more_entries_than_offered_is_refused() -> Result<()> {
    let claim = ferry_core::transfer::Claim {
        size: 1024,
        files: 1,
        copies: 300,
    };
    a_lie_is_stopped(4 << 20, claim, 1 << 20).await
}

/// The same 16 MiB file 200 times, with the right count but a total of 1 KiB: the fetch stops
/// as soon as more than the offer arrived, far below even one copy, and nothing is saved
/// (saving would have written 200 copies).
#[tokio::test]
async fn a_collection_of_one_big_file_many_times_is_stopped_at_the_offered_size() -> Result<()> {
    let claim = ferry_core::transfer::Claim {
        size: 1024,
        files: 200,
        copies: 200,
    };
    a_lie_is_stopped(16 << 20, claim, 4 << 20).await
}

/// A contact may have at most `MAX_PENDING_OFFERS` offers waiting for an answer. One more is
/// refused: the sender is told why, the receiver is told once, and once the receiver answers
/// one, the next offer arrives.
#[tokio::test]
async fn offers_over_the_pending_quota_are_refused_with_a_notice_on_both_sides() -> Result<()> {
    use ferry_core::transfer::MAX_PENDING_OFFERS;
    let p = paired().await?;
    let file = p.root.join("note.txt");
    std::fs::write(&file, b"one of many")?;
    let mut at_bob = p.bob.subscribe();
    let mut at_alice = p.alice.subscribe();
    let mut sent = Vec::new();
    for _ in 0..MAX_PENDING_OFFERS {
        sent.push(p.alice.send_file("Bob", &file).await?.id);
    }
    assert!(
        p.alice.wait_outbox_drained(None, WAIT).await?,
        "all offers delivered"
    );
    eventually(|| {
        let waiting = p
            .bob
            .transfers()?
            .iter()
            .filter(|t| t.state == TransferState::Offered)
            .count();
        Ok(waiting == MAX_PENDING_OFFERS)
    })
    .await?;
    let over = p.alice.send_file("Bob", &file).await?;
    let told_alice = notice(&mut at_alice, |_, _| true).await?;
    assert!(
        told_alice.contains("offers are still waiting"),
        "{told_alice}"
    );
    let told_bob = notice(&mut at_bob, |name, _| name == "Alice").await?;
    assert!(told_bob.contains("waiting for your answer"), "{told_bob}");
    assert!(
        p.bob.transfer_by_id(&over.id)?.is_none(),
        "the refused offer is not stored"
    );
    let msg = p.alice.history("Bob", None, 1, false).await?;
    assert_eq!(
        msg.last().map(|m| m.state),
        Some(ferry_core::MessageState::Failed)
    );

    p.bob.decline_transfer(&sent[0].to_string()).await?;
    let next = p.alice.send_file("Bob", &file).await?;
    eventually(|| Ok(p.bob.transfer_by_id(&next.id)?.is_some())).await?;
    p.alice.shutdown().await;
    p.bob.shutdown().await;
    Ok(())
}

/// What a contact makes a node store in a day is counted: files accepted automatically
/// count, and over the quota an offer waits for the user instead, and messages are refused.
#[tokio::test]
async fn the_daily_quota_holds_back_automatic_accepts_and_then_refuses() -> Result<()> {
    let quota = 256 * 1024;
    let bob = ferry_core::Config {
        allowances: ferry_core::inbox::Allowances {
            daily_bytes: quota,
            ..Default::default()
        },
        ..test_config()
    };
    let p = paired_with(bob).await?;
    p.bob.set_auto_accept("Alice", Some(1 << 20)).await?;
    let mut at_bob = p.bob.subscribe();
    // 200 KiB: taken at once, and counted.
    let first = p.root.join("first.bin");
    std::fs::write(&first, data(200 * 1024, 41))?;
    let one = p.alice.send_file("Bob", &first).await?;
    completed(&mut at_bob, one.id).await?;
    // Another 200 KiB would pass the quota: it waits for Bob, who is told why.
    let second = p.root.join("second.bin");
    std::fs::write(&second, data(200 * 1024, 42))?;
    let two = p.alice.send_file("Bob", &second).await?;
    let told = notice(&mut at_bob, |_, _| true).await?;
    assert!(told.contains("It waits for you to accept it"), "{told}");
    eventually(|| {
        Ok(p.bob.transfer_by_id(&two.id)?.map(|t| t.state) == Some(TransferState::Offered))
    })
    .await?;
    // Accepted by Bob himself, it is not counted against Alice.
    p.bob.accept_transfer(&two.id.to_string()).await?;
    completed(&mut at_bob, two.id).await?;
    // Messages fill the rest of the day's quota; then they are refused.
    let body = "x".repeat(30 * 1024);
    let mut refused = false;
    for _ in 0..20 {
        p.alice.send_text("Bob", &body).await?;
        assert!(p.alice.wait_outbox_drained(None, WAIT).await?);
        let last = p.alice.history("Bob", None, 1, false).await?;
        if last.last().map(|m| m.state) == Some(ferry_core::MessageState::Failed) {
            refused = true;
            break;
        }
    }
    assert!(refused, "messages over the daily quota are refused");
    let told = notice(&mut at_bob, |_, text| text.contains("today")).await?;
    assert!(told.contains("refused until tomorrow"), "{told}");
    p.alice.shutdown().await;
    p.bob.shutdown().await;
    Ok(())
}
