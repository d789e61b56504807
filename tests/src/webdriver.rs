//! A small blocking W3C WebDriver client for driving the real desktop app through
//! `tauri-driver` (which starts `WebKitWebDriver`, which starts the app).
//!
//! Typical use:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use ferry_tests::webdriver::{Driver, Xvfb, WAIT};
//! let x = Xvfb::start()?;
//! let driver = Driver::start(&[("DISPLAY", &x.display()), ("FERRY_HOME", "/tmp/home")])?;
//! let s = driver.session(&ferry_tests::app_bin()?, &[])?;
//! s.wait_text("body", "Ferry", WAIT)?;
//! s.close()?;
//! # Ok(()) }
//! ```
//!
//! Drop order matters only for tidiness: declare the [`Xvfb`] first, then the [`Driver`], then
//! the [`Session`] (a session borrows its driver, so the compiler enforces the second half).
//!
//! Every request goes over one keep-alive HTTP/1.1 connection (a new connection per request
//! made `tauri-driver` die in about a quarter of runs). The client is a minimal HTTP/1.1
//! implementation over a `std` `TcpStream`: it only ever talks to `127.0.0.1`, and it keeps the
//! test crate from enabling new features on the `reqwest` that iroh already builds (which would
//! rebuild iroh and everything above it for the tests).

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

pub use crate::WAIT;

/// How often the waits below poll.
const POLL: Duration = Duration::from_millis(50);
/// Longest time one HTTP request may take (a script may run up to its own 30 s timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `tauri-driver` may take to answer `/status` with `ready`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopped process may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The W3C key under which an element reference travels.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Special keys for [`Session::send_keys`] (W3C WebDriver key codes).
pub mod keys {
    /// The Backspace key.
    pub const BACKSPACE: &str = "\u{E003}";
    /// The Enter key.
    pub const ENTER: &str = "\u{E007}";
    /// The Shift key (held until the end of the `send_keys` call or pressed again).
    pub const SHIFT: &str = "\u{E008}";
}

// ---------------------------------------------------------------------------------------------
// Errors

/// An error answered by the WebDriver server (`{"value": {"error", "message"}}`).
#[derive(Debug, Clone)]
pub struct WebDriverError {
    /// HTTP status code.
    pub status: u16,
    /// The W3C error code, e.g. `no such element`.
    pub error: String,
    /// The server's message (often empty with WebKitWebDriver).
    pub message: String,
}

impl fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebDriver error {} ({})", self.error, self.status)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for WebDriverError {}

/// The W3C error code of `e`, if it is a [`WebDriverError`].
pub fn error_code(e: &anyhow::Error) -> Option<&str> {
    e.chain()
        .find_map(|c| c.downcast_ref::<WebDriverError>())
        .map(|w| w.error.as_str())
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// One keep-alive HTTP/1.1 connection to the driver, opened lazily and reopened only when the
/// server closed it.
struct Http {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    /// Connections opened so far.
    opened: usize,
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

impl Http {
    fn new(port: u16) -> Http {
        Http {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            conn: None,
            opened: 0,
        }
    }

    /// Sends one request. A request on a reused connection that fails before any byte of the
    /// answer arrives (the server closed an idle connection) is sent once more on a new one.
    fn request(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<Response> {
        let body = body.map(|b| b.to_string());
        let reused = self.conn.is_some();
        match self.try_request(method, path, body.as_deref()) {
            Ok(r) => Ok(r),
            Err(Attempt::BeforeAnswer(e)) if reused => {
                eprintln!("webdriver: connection lost ({e:#}), reconnecting for {method} {path}");
                self.try_request(method, path, body.as_deref())
                    .map_err(Attempt::into_inner)
            }
            Err(e) => Err(e.into_inner()),
        }
        .with_context(|| format!("{method} {path}"))
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Response, Attempt> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))
                    .context("connecting to the WebDriver server")
                    .map_err(Attempt::BeforeAnswer)?;
                s.set_nodelay(true)
                    .map_err(|e| Attempt::BeforeAnswer(e.into()))?;
                s.set_read_timeout(Some(REQUEST_TIMEOUT))
                    .map_err(|e| Attempt::BeforeAnswer(e.into()))?;
                self.opened += 1;
                self.conn.insert(BufReader::new(s))
            }
        };
        let body = body.unwrap_or("");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\nAccept: application/json\r\n",
            self.addr
        );
        if method != "GET" && method != "DELETE" {
            head.push_str("Content-Type: application/json; charset=utf-8\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let sent = conn
            .get_mut()
            .write_all(head.as_bytes())
            .and_then(|()| conn.get_mut().write_all(body.as_bytes()))
            .and_then(|()| conn.get_mut().flush());
        if let Err(e) = sent {
            self.conn = None;
            return Err(Attempt::BeforeAnswer(e.into()));
        }
        let mut status_line = String::new();
        match conn.read_line(&mut status_line) {
            Ok(0) => {
                self.conn = None;
                return Err(Attempt::BeforeAnswer(anyhow!(
                    "connection closed by the server"
                )));
            }
            Ok(_) => {}
            Err(e) => {
                self.conn = None;
                return Err(Attempt::BeforeAnswer(e.into()));
            }
        }
        match read_rest(conn, &status_line) {
            Ok((resp, keep)) => {
                if !keep {
                    self.conn = None;
                }
                Ok(resp)
            }
            Err(e) => {
                self.conn = None;
                Err(Attempt::During(e))
            }
        }
    }
}

/// How a request failed: before any of the answer arrived (safe to resend), or during it.
enum Attempt {
    BeforeAnswer(anyhow::Error),
    During(anyhow::Error),
}

impl Attempt {
    fn into_inner(self) -> anyhow::Error {
        match self {
            Attempt::BeforeAnswer(e) | Attempt::During(e) => e,
        }
    }
}

/// Reads headers and body after the status line; also says whether the connection stays open.
fn read_rest(conn: &mut BufReader<TcpStream>, status_line: &str) -> Result<(Response, bool)> {
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad HTTP status line {status_line:?}"))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut keep = version == "HTTP/1.1";
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            bail!("connection closed inside the headers");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse().context("bad Content-Length")?),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    keep = false;
                } else if v.contains("keep-alive") {
                    keep = true;
                }
            }
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            conn.read_line(&mut size)?;
            let size = size.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size, 16)
                .with_context(|| format!("bad chunk size {size:?}"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut t = String::new();
                    if conn.read_line(&mut t)? == 0 || t.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            conn.read_exact(&mut body[start..])?;
            let mut crlf = [0u8; 2];
            conn.read_exact(&mut crlf)?;
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        conn.read_exact(&mut body)?;
    } else if (100..200).contains(&status) || status == 204 || status == 304 {
        // No body.
    } else {
        conn.read_to_end(&mut body)?;
        keep = false;
    }
    Ok((Response { status, body }, keep))
}

// ---------------------------------------------------------------------------------------------
// Processes

/// `name` on `PATH`, if it is there.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The `tauri-driver` to use: `$TAURI_DRIVER`, else on `PATH`, else `~/.cargo/bin`.
pub fn tauri_driver_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TAURI_DRIVER") {
        return Some(PathBuf::from(p));
    }
    find_on_path("tauri-driver").or_else(|| {
        let p = PathBuf::from(std::env::var_os("HOME")?).join(".cargo/bin/tauri-driver");
        p.is_file().then_some(p)
    })
}

/// Sends `signal` (e.g. `TERM`) to a process, or to a process group when `pid` is negative.
fn signal(signal: &str, pid: i64) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Live (non-zombie) processes as `(pid, ppid, pgid, comm)`, read from `/proc`.
fn processes() -> Vec<(u32, u32, u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat.get(open + 1..close)?.to_string();
        let mut rest = stat.get(close + 1..)?.split_whitespace();
        let state = rest.next()?;
        let ppid = rest.next()?.parse().ok()?;
        let pgid = rest.next()?.parse().ok()?;
        (state != "Z" && state != "X").then_some((pid, ppid, pgid, comm))
    })
    .collect()
}

/// Waits up to `timeout` for `child` to exit; true if it did.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !matches!(child.try_wait(), Ok(None)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Xvfb

/// A virtual X display (`Xvfb`, 1280×800×24), stopped when dropped.
pub struct Xvfb {
    child: Child,
    number: u32,
}

impl Xvfb {
    /// Starts `Xvfb` on the first free display number (the server picks it, `-displayfd`) and
    /// waits until it accepts connections.
    pub fn start() -> Result<Xvfb> {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting Xvfb (Debian package `xvfb`)")?;
        let mut out = child.stdout.take().context("Xvfb stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Xvfb writes the number and a newline once it is ready, and nothing else.
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            while let Ok(1) = out.read(&mut byte) {
                if byte[0] == b'\n' {
                    break;
                }
                buf.push(byte[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&buf).trim().to_string());
        });
        let mut x = match rx.recv_timeout(WAIT) {
            Ok(n) => match n.parse() {
                Ok(number) => Xvfb { child, number },
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("Xvfb did not start (it reported display {n:?})");
                }
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("Xvfb reported no display within {WAIT:?}");
            }
        };
        if let Ok(Some(st)) = x.child.try_wait() {
            bail!("Xvfb exited at once: {st}");
        }
        Ok(x)
    }

    /// The value for `DISPLAY`, e.g. `:0`.
    pub fn display(&self) -> String {
        format!(":{}", self.number)
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // TERM lets it remove its lock file and socket.
            signal("TERM", i64::from(self.child.id()));
            if !wait_exit(&mut self.child, STOP_TIMEOUT) {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Driver

/// A running `tauri-driver` (under `dbus-run-session` when available), stopped when dropped.
pub struct Driver {
    child: Child,
    port: u16,
    http: Mutex<Http>,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Driver {
    /// Starts `tauri-driver` on free ports, with `envs` added to its environment (and so to
    /// `WebKitWebDriver`'s and the app's: pass `DISPLAY`, `FERRY_HOME` etc. here), and waits up to
    /// 20 s until `/status` says it is ready.
    ///
    /// It runs under `dbus-run-session` when that is installed, so the app gets its own session
    /// bus (ended with it).
    pub fn start(envs: &[(&str, &str)]) -> Result<Driver> {
        let bin = tauri_driver_path()
            .context("tauri-driver not found (cargo install tauri-driver --locked)")?;
        // A port picked here could be taken before tauri-driver binds it: try again then.
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(&bin, envs) {
                Ok(d) => return Ok(d),
                Err(e) => {
                    eprintln!("webdriver: tauri-driver did not start: {e:#}");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("tauri-driver did not start")))
    }

    fn start_once(bin: &Path, envs: &[(&str, &str)]) -> Result<Driver> {
        use std::os::unix::process::CommandExt;
        let port = free_port()?;
        let native = loop {
            let p = free_port()?;
            if p != port {
                break p;
            }
        };
        let mut cmd = match find_on_path("dbus-run-session") {
            Some(dbus) => {
                let mut c = Command::new(dbus);
                c.arg("--").arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args([
            "--port",
            &port.to_string(),
            "--native-port",
            &native.to_string(),
        ])
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        // Its own process group, so that whatever it leaves behind can be stopped with it.
        .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut d = Driver {
            child,
            port,
            http: Mutex::new(Http::new(port)),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(st)) = d.child.try_wait() {
                bail!("tauri-driver exited: {st}");
            }
            match d.request("GET", "/status", None) {
                Ok(v) if v["ready"] == true => return Ok(d),
                Ok(_) | Err(_) if Instant::now() < deadline => std::thread::sleep(POLL),
                Ok(v) => bail!("tauri-driver not ready within {START_TIMEOUT:?}: {v}"),
                Err(e) => {
                    return Err(
                        e.context(format!("tauri-driver not ready within {START_TIMEOUT:?}"))
                    )
                }
            }
        }
    }

    /// The port `tauri-driver` listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many TCP connections the client has opened so far (1 unless the server closed one).
    pub fn connections(&self) -> usize {
        self.http.lock().map(|h| h.opened).unwrap_or_default()
    }

    /// Sends one WebDriver command and returns its `value`; error answers become
    /// [`WebDriverError`]s.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let resp = self
            .http
            .lock()
            .map_err(|_| anyhow!("WebDriver connection poisoned by a panic"))?
            .request(method, path, body)?;
        let v: Value = serde_json::from_slice(&resp.body).with_context(|| {
            format!(
                "{method} {path}: answer {} is not JSON: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            )
        })?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if resp.status >= 400 {
            let err = WebDriverError {
                status: resp.status,
                error: value["error"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_string(),
                message: value["message"].as_str().unwrap_or_default().to_string(),
            };
            return Err(anyhow::Error::new(err).context(format!("{method} {path}")));
        }
        Ok(value)
    }

    /// Opens a session, which launches `app` with `args`.
    pub fn session(&self, app: &Path, args: &[&str]) -> Result<Session<'_>> {
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "tauri:options": {
                        "application": app,
                        "args": args,
                    }
                }
            }
        });
        let v = self
            .request("POST", "/session", Some(&caps))
            .with_context(|| format!("opening a session on {}", app.display()))?;
        let id = v["sessionId"]
            .as_str()
            .with_context(|| format!("no sessionId in {v}"))?
            .to_string();
        Ok(Session {
            driver: self,
            id,
            open: true,
        })
    }

    fn stop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let leader = self.child.id();
        // TERM tauri-driver itself (it ends WebKitWebDriver, and dbus-run-session follows).
        let driver = processes()
            .into_iter()
            .find(|(pid, ppid, _, comm)| {
                (*pid == leader || *ppid == leader) && comm.starts_with("tauri-driver")
            })
            .map(|(pid, ..)| pid);
        signal("TERM", i64::from(driver.unwrap_or(leader)));
        if !wait_exit(&mut self.child, STOP_TIMEOUT) {
            eprintln!("webdriver: tauri-driver did not stop on TERM, killing its group");
            signal("KILL", -i64::from(leader));
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // Anything left in its process group (the group's id stays reserved while it has members).
        let left = || processes().iter().any(|p| p.2 == leader);
        if left() {
            signal("TERM", -i64::from(leader));
            let deadline = Instant::now() + STOP_TIMEOUT;
            while left() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if left() {
                signal("KILL", -i64::from(leader));
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Session

/// A reference to an element in the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementRef(pub String);

impl ElementRef {
    fn from_value(v: &Value) -> Result<ElementRef> {
        v[ELEMENT_KEY]
            .as_str()
            .map(|s| ElementRef(s.to_string()))
            .with_context(|| format!("not an element reference: {v}"))
    }

    /// The element as a script argument for [`Session::execute`] (`arguments[i]` is the node).
    pub fn to_json(&self) -> Value {
        json!({ ELEMENT_KEY: self.0 })
    }
}

/// A WebDriver session: one running app window. Deleted (which ends the app) by
/// [`Session::close`] or when dropped.
pub struct Session<'d> {
    driver: &'d Driver,
    id: String,
    open: bool,
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `timeout`; `what` names the
/// awaited state in the error. Errors from `check` end the wait.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = check()? {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

impl Session<'_> {
    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends a command to `/session/{id}{path}` and returns its `value`.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        self.driver
            .request(method, &format!("/session/{}{path}", self.id), body)
    }

    fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.request("POST", path, Some(&body))
    }

    fn get(&self, path: &str) -> Result<Value> {
        self.request("GET", path, None)
    }

    /// The first element matching the CSS selector, now (error `no such element` if none).
    pub fn find(&self, css: &str) -> Result<ElementRef> {
        let v = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .with_context(|| format!("finding {css:?}"))?;
        ElementRef::from_value(&v)
    }

    /// All elements matching the CSS selector, now (possibly none).
    pub fn find_all(&self, css: &str) -> Result<Vec<ElementRef>> {
        let v = self
            .post(
                "/elements",
                json!({ "using": "css selector", "value": css }),
            )
            .with_context(|| format!("finding all {css:?}"))?;
        v.as_array()
            .with_context(|| format!("not a list of elements: {v}"))?
            .iter()
            .map(ElementRef::from_value)
            .collect()
    }

    /// Waits up to `timeout` for an element matching the CSS selector to exist.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Result<ElementRef> {
        wait_until(timeout, &format!("an element {css:?}"), || {
            Ok(self.find_all(css)?.into_iter().next())
        })
    }

    /// Waits up to `timeout` for an element matching the CSS selector whose rendered text
    /// contains `needle`, and returns it.
    pub fn wait_text(&self, css: &str, needle: &str, timeout: Duration) -> Result<ElementRef> {
        let mut seen: Vec<String> = Vec::new();
        let found = wait_until(timeout, &format!("{css:?} containing {needle:?}"), || {
            seen.clear();
            for el in self.find_all(css)? {
                match self.text(&el) {
                    Ok(t) if t.contains(needle) => return Ok(Some(el)),
                    Ok(t) => seen.push(t),
                    // The page changed between the search and the read: look again.
                    Err(e) if error_code(&e) == Some("stale element reference") => {}
                    Err(e) => {
                        seen.clear();
                        return Err(e);
                    }
                }
            }
            Ok(None)
        });
        // On a timeout, say what was there instead.
        found.map_err(|e| match seen.is_empty() {
            true => e,
            false => anyhow!("{e:#}; texts seen last: {seen:?}"),
        })
    }

    /// Clicks the element.
    pub fn click(&self, el: &ElementRef) -> Result<()> {
        self.post(&format!("/element/{}/click", el.0), json!({}))?;
        Ok(())
    }

    /// Types `text` into the element; see [`keys`] for special keys.
    pub fn send_keys(&self, el: &ElementRef, text: &str) -> Result<()> {
        let chars: Vec<String> = text.chars().map(String::from).collect();
        self.post(
            &format!("/element/{}/value", el.0),
            json!({ "text": text, "value": chars }),
        )?;
        Ok(())
    }

    /// Empties an input or text area.
    pub fn clear(&self, el: &ElementRef) -> Result<()> {
        self.post(&format!("/element/{}/clear", el.0), json!({}))?;
        Ok(())
    }

    /// The element's rendered text.
    pub fn text(&self, el: &ElementRef) -> Result<String> {
        let v = self.get(&format!("/element/{}/text", el.0))?;
        v.as_str()
            .map(str::to_string)
            .with_context(|| format!("element text is not a string: {v}"))
    }

    /// The element's attribute `name` (a plain attribute name), or `None` when it has none.
    pub fn attr(&self, el: &ElementRef, name: &str) -> Result<Option<String>> {
        let v = self.get(&format!("/element/{}/attribute/{name}", el.0))?;
        Ok(v.as_str().map(str::to_string))
    }

    /// Runs `script` as the body of a function in the page (`arguments[i]` are `args`) and
    /// returns what it returns.
    pub fn execute(&self, script: &str, args: &[Value]) -> Result<Value> {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
    }

    /// Runs `script` as an async function body: it must call `arguments[arguments.length - 1]`
    /// with its result (the session's script timeout, 30 s by default, bounds it).
    pub fn execute_async(&self, script: &str, args: &[Value]) -> Result<Value> {
        self.post("/execute/async", json!({ "script": script, "args": args }))
    }

    /// Waits for two animation frames (so the window shows the current DOM), then writes a PNG
    /// screenshot of the window to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        self.execute_async(
            "const done = arguments[arguments.length - 1];\
             requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
            &[],
        )
        .context("waiting for two animation frames")?;
        let v = self.get("/screenshot")?;
        let b64 = v
            .as_str()
            .with_context(|| format!("screenshot is not a string: {v}"))?;
        let png = data_encoding::BASE64
            .decode(b64.as_bytes())
            .context("screenshot is not base64")?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Deletes the session (which ends the app), reporting errors.
    pub fn close(mut self) -> Result<()> {
        self.open = false;
        self.driver
            .request("DELETE", &format!("/session/{}", self.id), None)?;
        Ok(())
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if self.open {
            self.open = false;
            if let Err(e) = self
                .driver
                .request("DELETE", &format!("/session/{}", self.id), None)
            {
                eprintln!("webdriver: deleting session {}: {e:#}", self.id);
            }
        }
    }
}
