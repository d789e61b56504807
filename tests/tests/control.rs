//! The local control channel: only this user reaches a holder's socket, a socket that must go
//! to the shared temp folder goes into a private folder there, and a holder that cannot serve
//! its socket lets go of the home.
#![cfg(unix)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use ferry_tests::*;

#[test]
fn a_socket_path_too_long_for_the_home_goes_into_a_private_folder_and_a_squatted_one_is_refused(
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let me = std::fs::metadata(dir.path())?.uid();
    // A home whose socket path would not fit a Unix socket address; no runtime folder, so the
    // socket goes to the temp folder (a test one here).
    let home = dir.path().join("a".repeat(110)).join("alice");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp)?;
    let no_runtime_dir = dir.path().join("no-such-folder");
    let env = [
        ("TMPDIR", tmp.as_path()),
        ("XDG_RUNTIME_DIR", &no_runtime_dir),
    ];
    let out = ferry_env(
        &home,
        &env,
        &[&LOOPBACK_ARGS[..], &["init", "--name", "Alice"]].concat(),
    )?;
    ensure!(out.ok, "{}", out.stderr);

    let env_str: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| (*k, v.to_str().unwrap_or_default()))
        .collect();
    let daemon = Daemon::start_env(&home, &[], &env_str)?;
    let private = tmp.join(format!("ferry-{me}"));
    let meta = std::fs::symlink_metadata(&private).context("the private folder")?;
    ensure!(meta.is_dir() && meta.uid() == me, "{meta:?}");
    ensure!(meta.mode() & 0o777 == 0o700, "mode {:o}", meta.mode());
    let sockets: Vec<_> = std::fs::read_dir(&private)?.collect::<Result<_, _>>()?;
    ensure!(sockets.len() == 1, "{sockets:?}");
    let out = ferry_env(&home, &env, &["whoami", "--json"])?;
    ensure!(
        out.ok && out.stdout.contains("\"name\":\"Alice\""),
        "{out:?}"
    );
    daemon.stop()?;

    // Another user could have made the folder first, open to all: the holder refuses to serve
    // there, says why, and leaves nothing behind that blocks the next start.
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o777))?;
    let out = ferry_env(&home, &env, &["daemon", "--json"])?;
    ensure!(!out.ok, "{out:?}");
    ensure!(
        out.stderr.contains("nobody else may enter"),
        "{}",
        out.stderr
    );
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
    let daemon = Daemon::start_env(&home, &[], &env_str)?;
    daemon.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_cannot_serve_its_socket_stops_and_lets_go_of_the_home() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let home = new_home(dir.path(), "Alice")?;
    // Something that is not a stale socket sits where the socket goes.
    std::fs::create_dir_all(home.join("control.sock").join("keep"))?;
    let refused = ferry_core::control::open_serving(&home, test_config()).await;
    let e = refused.err().context("served a socket it could not bind")?;
    ensure!(e.code() == "io", "{e}");
    // The node it opened is gone, lock and all: the home opens again at once.
    let node = open(&home, test_config()).await?;
    node.shutdown().await;
    Ok(())
}

#[test]
fn another_user_is_refused_by_the_holder_and_the_client_will_not_talk_to_another_users_holder(
) -> Result<()> {
    let is_root = Command::new("id").arg("-u").output()?.stdout == b"0\n";
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    // The system's Python, which another user may run (a per-user install may not be).
    let python = "/usr/bin/python3";
    if !is_root || !setpriv || !Path::new(python).exists() {
        eprintln!("skipped: needs root, setpriv and {python} to act as another user");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let home = init_home(dir.path(), "Alice", &[])?;
    let daemon = Daemon::start(&home, &[])?;
    // Let the other user reach the socket at all (as a careless umask or file system would):
    // what still stands between them is the holder's check of who connects.
    for p in [dir.path(), home.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))?;
    }
    let socket = home.join("control.sock");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))?;
    std::fs::set_permissions(
        home.join("ferry.lock"),
        std::fs::Permissions::from_mode(0o644),
    )?;
    // Prints the answer, or CLOSED when the holder hangs up without one.
    let ask = "import socket,sys\n\
               s=socket.socket(socket.AF_UNIX); s.settimeout(20); s.connect(sys.argv[1])\n\
               try:\n\
               \x20 s.sendall(b'{\"v\":1,\"id\":1,\"call\":{\"method\":\"profile\"}}\\n')\n\
               \x20 print(s.recv(65536).decode() or 'CLOSED')\n\
               except (ConnectionResetError, BrokenPipeError): print('CLOSED')";
    let as_root = Command::new(python)
        .args(["-c", ask])
        .arg(&socket)
        .output()?;
    let answer = String::from_utf8_lossy(&as_root.stdout);
    ensure!(answer.contains("Alice"), "this user is answered: {answer}");
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let as_nobody = Command::new("setpriv")
        .args(nobody)
        .args([python, "-c", ask])
        .arg(&socket)
        .output()?;
    let answer = String::from_utf8_lossy(&as_nobody.stdout);
    ensure!(
        answer.trim() == "CLOSED",
        "another user got: {answer} {as_nobody:?}"
    );

    // The other way round: the CLI run by another user does not talk to this holder.
    let out = Command::new("setpriv")
        .args(nobody)
        .arg(ferry_bin()?)
        .arg("--home")
        .arg(&home)
        .args(["whoami", "--json"])
        .env("HOME", dir.path())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "{out:?}");
    ensure!(
        !String::from_utf8_lossy(&out.stdout).contains("Alice"),
        "{out:?}"
    );
    ensure!(stderr.contains("another user"), "{stderr}");
    daemon.stop()?;
    Ok(())
}
