//! Helpers for end-to-end scenarios across real Ferry peers: temporary homes, loopback-only
//! nodes with relays disabled, event waits with timeouts, and the `ferry` binary.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferry_core::node::NetSettings;
use ferry_core::{Config, Event, Node, RelayChoice};
use tokio::sync::broadcast;

pub mod webdriver;

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Logs to the test output when `FERRY_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_test_writer()
        .try_init();
}

/// Settings for a home that only ever touches loopback.
pub fn loopback() -> NetSettings {
    NetSettings {
        relay: RelayChoice::Disabled,
        bind: Some("127.0.0.1:0".parse().expect("valid address")),
        local_discovery: false,
    }
}

/// A run config for tests: fast pings (and, as with every `Node::open`, no control socket).
pub fn test_config() -> Config {
    Config {
        ping_interval: Duration::from_millis(500),
        ..Config::default()
    }
}

/// A home inside a temporary folder, initialised with loopback settings.
pub fn new_home(root: &Path, name: &str) -> Result<PathBuf> {
    let home = root.join(name.to_lowercase());
    Node::init_with(&home, name, &loopback())?;
    Ok(home)
}

/// Opens a node on a home, retrying briefly while a just-closed holder releases its lock.
pub async fn open(home: &Path, config: Config) -> Result<Arc<Node>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Node::open(home, config.clone()).await {
            Ok(n) => return Ok(n),
            Err(ferry_core::Error::HomeBusy { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Pairs `joiner` with `inviter` and returns nothing but success.
pub async fn pair(inviter: &Node, joiner: &Node) -> Result<()> {
    let invite = inviter.create_invite(None).await?;
    joiner.pair(&invite).await?;
    Ok(())
}

/// Waits for the first event matching `pred`, up to [`WAIT`].
pub async fn wait_for<T>(
    rx: &mut broadcast::Receiver<Event>,
    mut pred: impl FnMut(&Event) -> Option<T>,
) -> Result<T> {
    tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(ev) => {
                    if let Some(t) = pred(&ev) {
                        return Ok(t);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => bail!("event stream ended: {e}"),
            }
        }
    })
    .await
    .context("timed out waiting for an event")?
}

/// Polls `check` until it returns true, up to [`WAIT`] (for state with no event of its own).
pub async fn eventually(mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check()? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("condition not reached within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `ferry` binary, built once per test run by a separate cargo invocation (so test-only
/// features of the test crate never leak into it). `FERRY_BIN` overrides.
pub fn ferry_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("FERRY_BIN") {
        Some(p) => Ok(PathBuf::from(p)),
        None => build_bin("ferry-cli", "ferry"),
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// The desktop app binary (`ferry-app`), built once per test run. `FERRY_APP_BIN` overrides.
pub fn app_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("FERRY_APP_BIN") {
        Some(p) => Ok(PathBuf::from(p)),
        None => build_bin("ferry-app", "ferry-app"),
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// This package's folder, as cargo says when it runs the test (the compile-time value can name
/// another checkout when several share one target folder).
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn build_bin(package: &str, bin: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "-p",
            package,
            "--bin",
            bin,
            "--message-format=json",
        ])
        .current_dir(manifest_dir())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo build -p {package} failed"));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == bin)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("cargo did not report the {bin} executable"))
}

/// The network settings of a test home for `ferry init`: no relay, loopback only, no LAN
/// discovery.
pub const LOOPBACK_ARGS: [&str; 6] = [
    "--relay",
    "disabled",
    "--bind",
    "127.0.0.1:0",
    "--local-discovery",
    "off",
];

/// `ferry init` of a new home under `root`, with loopback-only network settings unless `net`
/// gives others (the complete set: relay, bind, local discovery).
pub fn init_home(root: &Path, name: &str, net: &[&str]) -> Result<PathBuf> {
    let home = root.join(name.to_lowercase());
    let mut args: Vec<&str> = if net.is_empty() {
        LOOPBACK_ARGS.to_vec()
    } else {
        net.to_vec()
    };
    args.extend_from_slice(&["init", "--name", name]);
    let out = ferry(&home, &args)?;
    if !out.ok {
        bail!("ferry init failed: {}", out.stderr);
    }
    Ok(home)
}

/// Every file under `dir`, read whole (to look for what must not be on disk in clear).
pub fn files_under(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files_under(&path)?);
        } else {
            out.push((path.clone(), std::fs::read(&path)?));
        }
    }
    Ok(out)
}

/// The body of the next message received.
pub async fn next_message(rx: &mut broadcast::Receiver<Event>) -> Result<String> {
    wait_for(rx, |e| match e {
        Event::MessageReceived { message, .. } => Some(message.body.clone()),
        _ => None,
    })
    .await
}

/// Output of one `ferry` run.
#[derive(Debug)]
pub struct Output {
    /// Exit success.
    pub ok: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `ferry --home HOME ARGS…` to completion (bounded by [`WAIT`] plus a margin).
pub fn ferry(home: &Path, args: &[&str]) -> Result<Output> {
    ferry_in(&[], home, args)
}

/// A command running `ferry`, behind `prefix` (e.g. `ip netns exec NS`) when given.
fn ferry_command(prefix: &[&str]) -> Result<Command> {
    let bin = ferry_bin()?;
    Ok(match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    })
}

/// Like [`ferry`], behind a command prefix such as `ip netns exec NS`.
pub fn ferry_in(prefix: &[&str], home: &Path, args: &[&str]) -> Result<Output> {
    ferry_full(prefix, &[], home, args)
}

/// Like [`ferry`], with extra environment variables.
pub fn ferry_env(home: &Path, env: &[(&str, &Path)], args: &[&str]) -> Result<Output> {
    ferry_full(&[], env, home, args)
}

fn ferry_full(
    prefix: &[&str],
    env: &[(&str, &Path)],
    home: &Path,
    args: &[&str],
) -> Result<Output> {
    let mut child = ferry_command(prefix)?
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .arg("--home")
        .arg(home)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read both pipes while it runs: a large output would otherwise fill a pipe and stall it.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = std::time::Instant::now() + WAIT * 2;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let said = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
            bail!("ferry {args:?} did not finish in time; it said: {said}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    let took = (std::time::Instant::now() + WAIT * 2).saturating_duration_since(deadline);
    if took > Duration::from_secs(3) {
        eprintln!("slow: ferry {args:?} took {took:?}");
    }
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A running `ferry daemon --json`, stopped (SIGTERM, then kill) when dropped.
pub struct Daemon {
    child: Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl Daemon {
    /// Starts the daemon and waits for its `ready` line.
    pub fn start(home: &Path, extra: &[&str]) -> Result<Daemon> {
        Self::start_in(&[], home, extra)
    }

    /// Starts the daemon behind a command prefix such as `ip netns exec NS`.
    pub fn start_in(prefix: &[&str], home: &Path, extra: &[&str]) -> Result<Daemon> {
        Self::start_full(prefix, home, extra, &[])
    }

    /// Starts the daemon with extra environment variables.
    pub fn start_env(home: &Path, extra: &[&str], env: &[(&str, &str)]) -> Result<Daemon> {
        Self::start_full(&[], home, extra, env)
    }

    fn start_full(
        prefix: &[&str],
        home: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let mut child = ferry_command(prefix)?
            .envs(env.iter().copied())
            .arg("--home")
            .arg(home)
            .args(["daemon", "--json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout: ChildStdout = child.stdout.take().context("daemon stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let mut d = Daemon { child, lines: rx };
        d.wait_line(|v| v["type"] == "ready")?;
        Ok(d)
    }

    /// Waits for a JSON line matching `pred`.
    pub fn wait_line(
        &mut self,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        self.wait_line_for(WAIT, pred)
    }

    /// Waits up to `timeout` for a JSON line matching `pred`.
    pub fn wait_line_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if pred(&v) => return Ok(v),
                Ok(_) => {}
                Err(_) => bail!("daemon printed no matching line in time"),
            }
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's peak resident memory so far (VmHWM), in bytes (Linux).
    pub fn peak_rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc status")?;
        Ok(kib * 1024)
    }

    /// Stops the daemon gracefully and waits for it.
    pub fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    /// Kills the daemon with SIGKILL (no chance to clean up) and waits for it.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    fn terminate(&mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + WAIT;
        while self.child.try_wait()?.is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("daemon did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.terminate();
        }
    }
}

/// A bare iroh endpoint with `key`, on 127.0.0.1 only, no relay: a peer that asks a node for
/// something directly (access-control tests).
pub async fn loopback_endpoint(key: iroh::SecretKey) -> Result<iroh::Endpoint> {
    Ok(iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
        .secret_key(key)
        .relay_mode(iroh::RelayMode::Disabled)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")?
        .bind()
        .await?)
}
