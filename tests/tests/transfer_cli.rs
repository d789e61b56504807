//! File transfer between `ferry` processes: resume after the receiver is killed with SIGKILL
//! mid-transfer, and a large file with bounded memory on both sides.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ferry_tests::*;
use serde_json::Value;

/// Writes `len` bytes of cheap pseudo-random data, streaming (never all in memory).
fn generate(path: &Path, len: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        let mut m = 0;
        while m < n {
            let k = fb.read(&mut bb[m..n])?;
            if k == 0 {
                return Ok(false);
            }
            m += k;
        }
        if n == 0 {
            return Ok(fb.read(&mut bb)? == 0);
        }
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Pairs Bob with Alice through Alice's daemon.
fn pair_through(alice: &Path, bob: &Path) -> Result<()> {
    let invite = ferry(alice, &["invite"])?;
    assert!(invite.ok, "{}", invite.stderr);
    let paired = ferry(bob, &["pair", invite.stdout.trim()])?;
    assert!(paired.ok, "{}", paired.stderr);
    Ok(())
}

fn transfer_json(home: &Path, id: &str) -> Result<Value> {
    let out = ferry(home, &["transfers", "--json"])?;
    assert!(out.ok, "{}", out.stderr);
    let list: Value = serde_json::from_str(out.stdout.trim())?;
    list.as_array()
        .and_then(|a| a.iter().find(|t| t["id"] == id).cloned())
        .context("transfer not listed")
}

#[test]
fn receiver_killed_mid_transfer_resumes_without_fetching_again() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let alice = init_home(dir.path(), "Alice", &[])?;
    let bob = init_home(dir.path(), "Bob", &[])?;
    let downloads = dir.path().join("downloads");
    let file = dir.path().join("movie.mkv");
    let size: u64 = 24 << 20;
    generate(&file, size)?;

    // The sender is slowed (a debug-build fault-injection knob) so the kill lands midway.
    let _a = Daemon::start_env(&alice, &[], &[("FERRY_DEBUG_THROTTLE_BPS", "6000000")])?;
    let dl = downloads.to_string_lossy().into_owned();
    let mut b = Daemon::start(&bob, &["--accept-files", "--downloads", &dl])?;
    pair_through(&alice, &bob)?;
    let sent = ferry(&alice, &["send-file", "Bob", &file.to_string_lossy()])?;
    assert!(sent.ok, "{}", sent.stderr);
    let id = sent.stdout.trim().to_string();

    let third = size / 3;
    let seen = b.wait_line(|v| {
        v["type"] == "transfer_progress" && v["bytes_done"].as_u64().unwrap_or(0) >= third
    })?;
    let before_kill = seen["bytes_done"].as_u64().unwrap_or(0);
    b.kill()?;

    let mut b = Daemon::start(&bob, &["--accept-files"])?;
    let done = b.wait_line_for(WAIT * 3, |v| v["type"] == "transfer_completed")?;
    let path = PathBuf::from(done["path"].as_str().context("path")?);
    assert!(same_bytes(&path, &file)?, "saved bytes differ");

    let t = transfer_json(&bob, &id)?;
    let resumed_from = t["resumed_from"].as_u64().unwrap_or(0);
    assert!(
        resumed_from >= before_kill / 2 && resumed_from > 0,
        "restarted from {resumed_from} although {before_kill} bytes had arrived before the kill"
    );
    eprintln!(
        "resume: {before_kill} bytes seen before SIGKILL, fetch resumed at {resumed_from}, \
         fetched again {} of {size}",
        size - resumed_from
    );
    Ok(())
}

#[test]
fn sender_killed_mid_transfer_resumes_without_fetching_again() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let alice = init_home(dir.path(), "Alice", &[])?;
    let bob = init_home(dir.path(), "Bob", &[])?;
    let file = dir.path().join("album.zip");
    let size: u64 = 24 << 20;
    generate(&file, size)?;
    let throttle = [("FERRY_DEBUG_THROTTLE_BPS", "6000000")];
    let a = Daemon::start_env(&alice, &[], &throttle)?;
    let dl = dir.path().join("downloads").to_string_lossy().into_owned();
    let mut b = Daemon::start(&bob, &["--accept-files", "--downloads", &dl])?;
    pair_through(&alice, &bob)?;
    let sent = ferry(&alice, &["send-file", "Bob", &file.to_string_lossy()])?;
    assert!(sent.ok, "{}", sent.stderr);
    let id = sent.stdout.trim().to_string();
    let seen = b.wait_line(|v| {
        v["type"] == "transfer_progress" && v["bytes_done"].as_u64().unwrap_or(0) >= size / 3
    })?;
    let before_kill = seen["bytes_done"].as_u64().unwrap_or(0);
    a.kill()?;

    // The sender comes back (still throttled); the receiver resumes on a fresh connection as
    // soon as it sees it online, without waiting for the dead one to time out.
    let _a = Daemon::start_env(&alice, &[], &throttle)?;
    let done = b.wait_line_for(WAIT * 3, |v| v["type"] == "transfer_completed")?;
    let path = PathBuf::from(done["path"].as_str().context("path")?);
    assert!(same_bytes(&path, &file)?, "saved bytes differ");
    let resumed_from = transfer_json(&bob, &id)?["resumed_from"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        resumed_from >= before_kill,
        "resumed at {resumed_from}, below the {before_kill} bytes verified before the kill"
    );
    Ok(())
}

#[test]
fn large_file_completes_with_bounded_memory_on_both_sides() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let alice = init_home(dir.path(), "Alice", &[])?;
    let bob = init_home(dir.path(), "Bob", &[])?;
    let file = dir.path().join("big.bin");
    let size: u64 = 512 << 20;
    generate(&file, size)?;
    let dl = dir.path().join("downloads").to_string_lossy().into_owned();
    let a = Daemon::start(&alice, &[])?;
    let mut b = Daemon::start(&bob, &["--accept-files", "--downloads", &dl])?;
    pair_through(&alice, &bob)?;
    let sent = ferry(&alice, &["send-file", "Bob", &file.to_string_lossy()])?;
    assert!(sent.ok, "{}", sent.stderr);
    let done = b.wait_line_for(WAIT * 6, |v| v["type"] == "transfer_completed")?;
    let path = PathBuf::from(done["path"].as_str().context("path")?);
    assert!(same_bytes(&path, &file)?, "saved bytes differ");
    // The receiver's blob store gave its data file to the saved copy: no second 512 MiB stays.
    let kept = dir_size(&bob.join("blobs"))?;
    assert!(kept < 32 << 20, "the blob store still holds {kept} bytes");
    let (sender, receiver) = (a.peak_rss()?, b.peak_rss()?);
    eprintln!("peak RSS for a {size}-byte file: sender {sender}, receiver {receiver}");
    let limit = 256 << 20;
    assert!(
        sender < limit && receiver < limit,
        "memory grew with the file: {sender} / {receiver}"
    );
    Ok(())
}

#[test]
fn accepting_without_room_for_the_file_is_refused_before_any_byte_moves() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let alice = init_home(dir.path(), "Alice", &[])?;
    let bob = init_home(dir.path(), "Bob", &[])?;
    let file = dir.path().join("dvd.iso");
    generate(&file, 8 << 20)?;
    let small = dir.path().join("small-disk");
    std::fs::create_dir_all(&small)?;
    let small_s = small.to_string_lossy().into_owned();
    let _a = Daemon::start(&alice, &[])?;
    let id = {
        let mut b = Daemon::start(&bob, &["--downloads", &small_s])?;
        pair_through(&alice, &bob)?;
        let sent = ferry(&alice, &["send-file", "Bob", &file.to_string_lossy()])?;
        assert!(sent.ok, "{}", sent.stderr);
        b.wait_line(|v| v["type"] == "transfer_offered")?;
        b.stop()?;
        sent.stdout.trim().to_string()
    };
    // Bob's download folder is a 2 MiB file system (a private mount namespace, needs root).
    let script = format!(
        "mount -t tmpfs -o size=2m tmpfs '{small_s}' && exec \"$0\" --home '{}' accept {id}",
        bob.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .arg(ferry_bin()?)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "accepted an 8 MiB file onto 2 MiB: {stderr}"
    );
    assert!(stderr.contains("not enough free space"), "{stderr}");
    assert_eq!(transfer_json(&bob, &id)?["state"], "offered");
    Ok(())
}
