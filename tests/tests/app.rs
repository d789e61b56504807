//! The desktop app holds the home like `ferry daemon`: it takes the lock, serves the control
//! socket (so the CLI works against the running app), and a second holder is refused.
//! Runs the real `ferry-app` binary under Xvfb.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Result};
use ferry_tests::*;

struct App(std::process::Child);

impl Drop for App {
    fn drop(&mut self) {
        // xvfb-run, Xvfb and the app share this process group.
        let pgid = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &pgid]).status();
        let _ = self.0.wait();
    }
}

#[test]
fn the_running_app_holds_the_home_and_answers_the_cli() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let home = init_home(dir.path(), "Desk", &[])?;
    let app = App(Command::new("xvfb-run")
        .args(["-a"])
        .arg(app_bin()?)
        .env("FERRY_HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()?);
    let deadline = std::time::Instant::now() + WAIT * 3;
    while !home.join("control.sock").exists() {
        if std::time::Instant::now() > deadline {
            bail!("the app never served the control socket");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let me = ferry(&home, &["whoami", "--json"])?;
    assert!(me.ok, "{}", me.stderr);
    assert!(me.stdout.contains("\"name\":\"Desk\""), "{}", me.stdout);
    let second = ferry(&home, &["daemon"])?;
    assert!(!second.ok, "a daemon started next to the app");
    assert!(
        second.stderr.contains("in use by another Ferry process"),
        "{}",
        second.stderr
    );
    drop(app);
    Ok(())
}
