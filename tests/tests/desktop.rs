//! The desktop app as a person uses it: the real `ferry-app` under Xvfb, driven through WebDriver
//! (tauri-driver + WebKitWebDriver), paired with a headless `ferry daemon` peer on loopback.
//!
//! First start, pairing by pasted invite, messages both ways with delivered and read ticks,
//! Shift+Enter, a file sent by the command the drop handler calls, an incoming file accepted
//! and checked on disk, the dangerous-file warning, safety numbers and verification, unread
//! counts on the tray, keyboard shortcuts, 200% zoom, the dark theme, and single instance.
//! Screenshots of every main screen go to `FERRY_SCREENSHOT_DIR` when it is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use ferry_tests::webdriver::{keys, tauri_driver_path, wait_until, Driver, Session, Xvfb};
use ferry_tests::*;
use serde_json::{json, Value};

/// One real app at a time: two WebKit windows and their peers at once overload a 2-core
/// machine and make the waits of the long journey flaky.
static ONE_APP: std::sync::Mutex<()> = std::sync::Mutex::new(());

const CONTROL: &str = "\u{E009}";
const TAB: &str = "\u{E004}";
const ESCAPE: &str = "\u{E00C}";

fn json_of(out: &Output) -> Result<Value> {
    ensure!(out.ok, "command failed: {}", out.stderr);
    Ok(serde_json::from_str(out.stdout.trim())?)
}

/// Polls a `ferry … --json` command until `pred` holds.
fn eventually_json(home: &Path, args: &[&str], pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let mut last = Value::Null;
    wait_until(WAIT, &format!("`ferry {args:?}` to match"), || {
        last = json_of(&ferry(home, args)?)?;
        Ok(pred(&last).then(|| last.clone()))
    })
    .with_context(|| format!("last output: {last}"))
}

/// Calls a Tauri command from the page, exactly as the UI does.
/// Sends one file to a contact or group through the command a drop calls; returns the
/// transfer's id.
fn send_path(s: &Session<'_>, to: &str, path: &Path) -> Result<String> {
    let report = invoke(s, "send_paths", json!({ "contact": to, "paths": [path] }))?;
    ensure!(
        report["failed"].as_array().is_some_and(|f| f.is_empty()),
        "{report}"
    );
    Ok(report["sent"][0]["id"]
        .as_str()
        .context("transfer id")?
        .to_owned())
}

fn invoke(s: &Session<'_>, cmd: &str, args: Value) -> Result<Value> {
    let v = s.execute_async(
        "const [cmd, args, done] = arguments;
         window.__TAURI_INTERNALS__.invoke(cmd, args).then(v => done({ ok: v ?? null }), e => done({ err: e }));",
        &[json!(cmd), args],
    )?;
    match v.get("ok") {
        Some(ok) => Ok(ok.clone()),
        None => bail!("{cmd} failed: {}", v["err"]),
    }
}

/// Waits until an element matching `css` has attribute `attr` equal to one of `values`.
fn wait_attr(s: &Session<'_>, css: &str, attr: &str, values: &[&str]) -> Result<String> {
    wait_until(WAIT, &format!("{css} with {attr} in {values:?}"), || {
        for el in s.find_all(css)? {
            if let Some(v) = s.attr(&el, attr)? {
                if values.contains(&v.as_str()) {
                    return Ok(Some(v));
                }
            }
        }
        Ok(None)
    })
}

/// Waits until some element matching `css` shows `needle` in its rendered text (innerText).
fn see(s: &Session<'_>, css: &str, needle: &str) -> Result<()> {
    let mut last = Value::Null;
    wait_until(WAIT, &format!("{css} showing {needle:?}"), || {
        last = s.execute(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText);",
            &[json!(css)],
        )?;
        let found = last.as_array().is_some_and(|a| {
            a.iter()
                .any(|t| t.as_str().is_some_and(|t| t.contains(needle)))
        });
        Ok(found.then_some(()))
    })
    .with_context(|| format!("texts seen last: {last}"))
}

/// Types `text` into the empty field `css` the way a person does (a click into it first, so the
/// keys cannot land in the field that had the focus), and waits until the field holds it.
fn fill(s: &Session<'_>, css: &str, text: &str) -> Result<()> {
    let el = s.wait_for(css, WAIT)?;
    let mut last = Value::Null;
    // Under Xvfb the window's first click gives it the focus, and WebKit may then hand the
    // focus back to the field that had it: typing waits until this field has the focus of a
    // focused window, and a field that still ends up holding something else is typed again.
    for _ in 0..3 {
        s.click(&el)?;
        wait_until(WAIT, &format!("{css} to have the focus"), || {
            let focused = s.execute(
                "return document.hasFocus() && \
                 document.activeElement === document.querySelector(arguments[0])",
                &[json!(css)],
            )?;
            if focused == json!(true) {
                return Ok(Some(()));
            }
            s.click(&el)?;
            Ok(None)
        })?;
        s.execute(
            "const e = document.querySelector(arguments[0]); e.value = ''; \
             e.dispatchEvent(new Event('input', { bubbles: true }));",
            &[json!(css)],
        )?;
        s.send_keys(&el, text)?;
        let held = wait_until(
            std::time::Duration::from_secs(5),
            &format!("{css} to hold what was typed"),
            || {
                last = s.execute(
                    "return document.querySelector(arguments[0]).value",
                    &[json!(css)],
                )?;
                Ok((last == json!(text)).then_some(()))
            },
        );
        if held.is_ok() {
            return Ok(());
        }
    }
    anyhow::bail!(
        "{css} holds {} characters after three tries",
        last.as_str().map_or(0, |v| v.chars().count())
    )
}

fn js(s: &Session<'_>, script: &str) -> Result<Value> {
    s.execute(script, &[])
}

struct Shots(Option<PathBuf>, tempfile::TempDir);

/// What every desktop test starts with: the turn to run the one app, a temporary folder and
/// the screenshots; `None` (the test is skipped) without tauri-driver.
struct Desk {
    _one: std::sync::MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    shots: Shots,
}

impl Shots {
    /// What a failed test leaves: a screenshot named `name`, and the page's text with how
    /// many characters each field holds (a field's value is not in its text).
    fn failed(&self, s: &Session<'_>, name: &str) {
        let _ = self.take(s, name);
        let text = js(
            s,
            "return document.body.innerText + '\\nfields: ' + \
             JSON.stringify([...document.querySelectorAll('input')].map(i => i.value.length))",
        )
        .unwrap_or_default();
        eprintln!(
            "the page when it failed:\n{}",
            text.as_str().unwrap_or_default()
        );
    }
}

impl Desk {
    fn begin() -> Result<Option<Desk>> {
        let one = ONE_APP.lock().unwrap_or_else(|p| p.into_inner());
        if tauri_driver_path().is_none() {
            println!(
                "skipped: tauri-driver is not installed (cargo install tauri-driver --locked)"
            );
            return Ok(None);
        }
        Ok(Some(Desk {
            _one: one,
            dir: tempfile::tempdir()?,
            shots: Shots(
                std::env::var_os("FERRY_SCREENSHOT_DIR").map(PathBuf::from),
                tempfile::tempdir()?,
            ),
        }))
    }
}

impl Shots {
    fn take(&self, s: &Session<'_>, name: &str) -> Result<()> {
        let path = self.1.path().join(format!("{name}.png"));
        // Passing notices would cover part of the screen.
        s.execute(
            "document.querySelectorAll('[data-testid=notice] button').forEach(b => b.click())",
            &[],
        )?;
        s.screenshot(&path)?;
        let png = std::fs::read(&path)?;
        ensure!(
            png.starts_with(b"\x89PNG") && png.len() > 2000,
            "{name}: not a real screenshot"
        );
        if let Some(dir) = &self.0 {
            std::fs::create_dir_all(dir)?;
            std::fs::copy(&path, dir.join(format!("{name}.png")))?;
        }
        Ok(())
    }
}

/// The pid of the app process serving `home` (launched by WebKitWebDriver, not by us).
fn app_pid(app: &Path, home: &Path) -> Result<u32> {
    let want = format!("FERRY_HOME={}", home.display());
    // /proc/PID/exe is the resolved path; the target folder may sit behind a symlink.
    let app = std::fs::canonicalize(app)?;
    let app = app.as_path();
    wait_until(WAIT, "the app process", || {
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let exe = std::fs::read_link(entry.path().join("exe")).ok();
            if exe.as_deref() != Some(app) {
                continue;
            }
            let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) {
                return Ok(Some(pid));
            }
        }
        Ok(None)
    })
}

fn env_of(pid: u32) -> Result<Vec<(String, String)>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect())
}

fn write_file(path: &Path, len: usize, seed: u8) -> Result<Vec<u8>> {
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    std::fs::write(path, &data)?;
    Ok(data)
}

#[test]
fn a_person_pairs_chats_and_swaps_files_in_the_desktop_app() -> Result<()> {
    let Some(Desk { _one, dir, shots }) = Desk::begin()? else {
        return Ok(());
    };
    let root = dir.path();

    // Bob: a headless peer on loopback.
    let bob = init_home(root, "Bob", &[])?;
    let bob_dl = root.join("bob-downloads");
    std::fs::create_dir_all(&bob_dl)?;
    let bob_daemon = Daemon::start(&bob, &["--downloads", bob_dl.to_str().context("utf-8")?])?;

    // Ann: the desktop app on a home that does not exist yet, loopback only.
    let ann = root.join("ann");
    let ann_dl = root.join("ann-downloads");
    std::fs::create_dir_all(&ann_dl)?;
    let app = app_bin()?;
    let x = Xvfb::start()?;
    let env = app_env(root, &ann, &x.display());
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let driver = Driver::start(&env_refs)?;
    let s = driver.session(&app, &[])?;
    let places = Places {
        root,
        bob: &bob,
        bob_dl: &bob_dl,
        ann: &ann,
        ann_dl: &ann_dl,
        app: &app,
    };
    if let Err(e) = journey(&s, &shots, &places) {
        shots.failed(&s, "failure");
        return Err(e);
    }
    let notifications = invoke(&s, "desktop_state", json!({}))?;
    println!("desktop state at the end: {notifications}");
    s.close()?;
    drop(driver);
    drop(bob_daemon);
    Ok(())
}

struct Places<'a> {
    root: &'a Path,
    bob: &'a Path,
    bob_dl: &'a Path,
    ann: &'a Path,
    ann_dl: &'a Path,
    app: &'a Path,
}

fn journey(s: &Session<'_>, shots: &Shots, p: &Places<'_>) -> Result<()> {
    let Places {
        root,
        bob,
        bob_dl,
        ann,
        ann_dl,
        app,
    } = *p;

    // First start: a name, then the empty app.
    let name = s.wait_for("[data-testid=name-input]", WAIT)?;
    ensure!(
        js(
            s,
            "return document.documentElement.dataset.theme ?? 'system'"
        )? == "system",
        "a fresh app should follow the system theme"
    );
    shots.take(s, "01-first-start-light")?;
    s.send_keys(&name, "Ann")?;
    s.click(&s.find("[data-testid=name-submit]")?)?;
    s.wait_for("[data-testid=no-contacts]", WAIT)?;
    s.wait_for("[data-testid=no-conversation]", WAIT)?;
    shots.take(s, "02-empty-light")?;

    // Pair through the UI with Bob's invite, pasted.
    let invite = ferry(bob, &["invite"])?;
    ensure!(invite.ok, "{}", invite.stderr);
    let invite = invite.stdout.trim().to_owned();
    s.click(&s.find("[data-testid=add-contact]")?)?;
    s.wait_for("[data-testid=my-qr] svg", WAIT)?;
    let my_invite = js(
        s,
        "return document.querySelector('[data-testid=my-invite]').value",
    )?;
    let my_invite = my_invite.as_str().unwrap_or_default();
    ensure!(my_invite.starts_with("ferry:"), "my invite: {my_invite:?}");
    // A screenshot of the window, as pasted from the clipboard, reads back as the same invite.
    let shot = s.request("GET", "/screenshot", None)?;
    let read = invoke(s, "read_invite_data", json!({ "base64": shot }))?;
    ensure!(read == my_invite, "the QR code on screen reads as {read}");
    shots.take(s, "03-add-contact-light")?;
    s.send_keys(&s.find("[data-testid=paste-invite]")?, &invite)?;
    s.click(&s.find("[data-testid=pair]")?)?;
    see(s, "[data-testid=contacts]", "Bob")?;
    s.wait_for("[data-testid=conversation]", WAIT)?;
    let bob_id = s
        .attr(&s.find("[data-testid=contact]")?, "data-contact")?
        .context("contact id")?;
    see(s, "[data-testid=presence]", "Online")?;

    // Ann writes; the tick goes delivered, then read once Bob reads.
    let composer = s.find("[data-testid=composer]")?;
    s.send_keys(&composer, &format!("Hello Bob{}", keys::ENTER))?;
    wait_attr(
        s,
        "[data-direction=outgoing]",
        "data-state",
        &["delivered", "read"],
    )?;
    eventually_json(bob, &["history", "Ann", "--json"], |v| {
        v.to_string().contains("Hello Bob")
    })?;
    wait_attr(s, "[data-direction=outgoing]", "data-state", &["read"])?;

    // Shift+Enter is a new line inside one message (modifiers are released at the end of
    // each send_keys call).
    s.send_keys(
        &composer,
        &format!("line one{}{}", keys::SHIFT, keys::ENTER),
    )?;
    let draft = js(
        s,
        "return document.querySelector('[data-testid=composer]').value",
    )?;
    ensure!(
        draft == "line one\n",
        "Shift+Enter did not make a new line: {draft}"
    );
    s.send_keys(&composer, &format!("line two{}", keys::ENTER))?;
    eventually_json(bob, &["history", "Ann", "--json"], |v| {
        v.to_string().contains("line one\\nline two")
    })?;

    // Bob answers; it appears in the open conversation.
    ensure!(ferry(bob, &["send", "Ann", "Hi Ann, got it"])?.ok);
    see(s, "[data-direction=incoming]", "Hi Ann, got it")?;

    // A file to Bob, through the command the drop handler calls.
    let out_path = root.join("holiday.bin.txt");
    let out_data = write_file(&out_path, 3 * 1024 * 1024 + 17, 7)?;
    let out_id = send_path(s, &bob_id, &out_path)?;
    wait_attr(
        s,
        &format!("[data-transfer='{out_id}']"),
        "data-state",
        &["offered"],
    )?;
    eventually_json(bob, &["transfers", "--json"], |v| {
        v.to_string().contains(&out_id)
    })?;
    let accepted = ferry(bob, &["accept", &out_id])?;
    ensure!(accepted.ok, "{}", accepted.stderr);
    wait_attr(
        s,
        &format!("[data-transfer='{out_id}']"),
        "data-state",
        &["done"],
    )?;
    ensure!(
        std::fs::read(bob_dl.join("holiday.bin.txt"))? == out_data,
        "Bob's copy differs"
    );

    // A file from Bob, accepted with a click, checked on disk.
    invoke(s, "set_downloads_dir", json!({ "dir": ann_dl }))?;
    let in_path = root.join("minutes.pdf");
    let in_data = write_file(&in_path, 2 * 1024 * 1024 + 5, 3)?;
    ensure!(
        ferry(
            bob,
            &["send-file", "Ann", in_path.to_str().context("utf-8")?]
        )?
        .ok
    );
    let accept = s.wait_for("[data-direction=incoming] [data-testid=accept]", WAIT)?;
    s.click(&accept)?;
    wait_until(WAIT, "the incoming file on disk", || {
        Ok(std::fs::read(ann_dl.join("minutes.pdf"))
            .ok()
            .filter(|d| *d == in_data))
    })?;
    see(s, "[data-direction=incoming] [data-state=done]", "Received")?;
    s.wait_for("[data-direction=incoming] [data-testid=reveal]", WAIT)?;

    // A script is flagged before anyone opens it.
    let script = root.join("install.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n")?;
    ensure!(
        ferry(
            bob,
            &["send-file", "Ann", script.to_str().context("utf-8")?]
        )?
        .ok
    );
    see(s, "[data-testid=dangerous]", "run programs")?;
    see(s, "[data-testid=accept]", "Accept anyway")?;
    shots.take(s, "04-conversation-light")?;

    // Safety number matches Bob's; mark verified.
    s.click(&s.find("[data-testid=open-details]")?)?;
    s.wait_for("[data-testid=safety-number] span", WAIT)?;
    let shown = js(
        s,
        "return document.querySelector('[data-testid=safety-number]').innerText",
    )?;
    let shown = shown.as_str().unwrap_or_default().to_owned();
    let contacts = json_of(&ferry(bob, &["contacts", "--json"])?)?;
    let bobs: String = contacts[0]["safety_number"]
        .as_str()
        .context("safety number")?
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let shown: String = shown.chars().filter(char::is_ascii_digit).collect();
    ensure!(
        shown == bobs && shown.len() >= 60,
        "safety numbers differ: {shown} vs {bobs}"
    );
    see(s, "[data-testid=connection]", "direct")?;
    s.click(&s.find("[data-testid=mark-verified]")?)?;
    s.wait_for("[data-testid=verified]", WAIT)?;
    // The safety number's QR code on screen is one Bob could scan: Ann's id and the digits.
    s.wait_for("[data-testid=safety-qr] svg", WAIT)?;
    let shot = s.request("GET", "/screenshot", None)?;
    let png = data_encoding::BASE64.decode(shot.as_str().unwrap_or_default().as_bytes())?;
    let text = ferry_core::qr::read_safety_bytes(&png)?;
    let (shower, digits) = ferry_core::identity::parse_safety_text(&text)?;
    ensure!(shower.to_string() == home_id(ann)?, "QR of {shower}");
    ensure!(
        digits.replace(' ', "") == bobs,
        "the QR code holds {digits}"
    );
    shots.take(s, "05-details-light")?;

    // Blocking Bob shows everywhere; Ann cannot write to him until she unblocks him.
    s.click(&s.find("[data-testid=block]")?)?;
    see(
        s,
        "[data-testid=details-page] [data-testid=trust-mark]",
        "blocked",
    )?;
    eventually_json(ann, &["contacts", "--json"], |v| v[0]["state"] == "blocked")?;
    shots.take(s, "05-details-blocked-light")?;
    s.click(&s.find("[data-testid=unblock]")?)?;
    s.wait_for("[data-testid=block]", WAIT)?;
    see(s, "[data-testid=connection]", "direct")?;
    // Resetting the secure session from Details: Bob's conversation says it is secured again,
    // and what he sends next (below) travels on the new session.
    s.click(&s.find("[data-testid=reset-session]")?)?;
    eventually_json(bob, &["history", "Ann", "--json"], |v| {
        v.as_array().is_some_and(|a| {
            a.iter().any(|m| {
                m["direction"] == "system"
                    && m["body"]
                        .as_str()
                        .is_some_and(|b| b.contains("secured again"))
            })
        })
    })?;

    // Transfers and settings.
    s.click(&s.find("[data-testid=nav-transfers]")?)?;
    see(s, "[data-testid=transfers-page]", "minutes.pdf")?;
    shots.take(s, "06-transfers-light")?;
    s.click(&s.find("[data-testid=nav-settings]")?)?;
    see(s, "[data-testid=my-id]", &home_id(ann)?)?;
    see(s, "[data-testid=downloads-dir]", "ann-downloads")?;
    shots.take(s, "07-settings-light")?;

    // Away from the conversation, a message counts as unread in the sidebar and on the tray.
    ensure!(ferry(bob, &["send", "Ann", "are you there?"])?.ok);
    see(s, "[data-testid=unread]", "1")?;
    let desk = wait_until(WAIT, "the tray's unread count", || {
        let d = invoke(s, "desktop_state", json!({}))?;
        Ok((d["unread"] == 1).then_some(d))
    })?;
    ensure!(desk["tray_text"] == "Ferry — 1 unread message", "{desk}");
    println!("desktop state with one unread: {desk}");
    s.click(&s.find("[data-testid=contact]")?)?;
    wait_until(WAIT, "unread back to zero", || {
        Ok((invoke(s, "desktop_state", json!({}))?["unread"] == 0).then_some(()))
    })?;

    // Keyboard: Ctrl+N opens "Add contact", Escape returns, Tab leaves the composer with a
    // visible focus ring.
    let composer = s.find("[data-testid=composer]")?;
    s.click(&composer)?;
    s.send_keys(&composer, &format!("{CONTROL}n"))?;
    s.wait_for("[data-testid=add-page]", WAIT)?;
    s.send_keys(&s.find("[data-testid=paste-invite]")?, ESCAPE)?;
    let composer = s.wait_for("[data-testid=composer]", WAIT)?;
    s.send_keys(&composer, &format!("draft{TAB}"))?;
    let focus = js(
        s,
        "const e = document.activeElement; return { id: e.dataset.testid ?? e.tagName, outline: getComputedStyle(e).outlineStyle };",
    )?;
    ensure!(
        focus["id"] == "send" && focus["outline"] != "none",
        "focus after Tab: {focus}"
    );

    // 200% zoom (the web view's own zoom, what Ctrl++ sets): nothing spills sideways; the
    // composer and Send stay on screen.
    invoke(
        s,
        "plugin:webview|set_webview_zoom",
        json!({ "value": 2.0 }),
    )?;
    let fit = wait_until(WAIT, "the page to lay out at 200%", || {
        let fit = js(
            s,
            "const r = document.querySelector('[data-testid=send]').getBoundingClientRect();
             return { overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
                      right: r.right, bottom: r.bottom, width: innerWidth, height: innerHeight };",
        )?;
        Ok((fit["width"].as_f64() <= Some(520.0)).then_some(fit))
    })?;
    println!("at 200%: {fit}");
    ensure!(
        fit["overflow"].as_f64() <= Some(0.0)
            && fit["right"].as_f64() <= fit["width"].as_f64().map(|w| w + 1.0)
            && fit["bottom"].as_f64() <= fit["height"].as_f64().map(|h| h + 1.0),
        "layout does not fit at 200%: {fit}"
    );
    shots.take(s, "08-zoom-200-light")?;
    invoke(
        s,
        "plugin:webview|set_webview_zoom",
        json!({ "value": 1.0 }),
    )?;

    // Dark theme, chosen in settings, on every main screen.
    s.click(&s.find("[data-testid=nav-settings]")?)?;
    s.wait_for("[data-testid=theme-dark]", WAIT)?;
    js(
        s,
        "document.querySelector('[data-testid=theme-dark]').click();",
    )?;
    wait_until(WAIT, "the dark theme", || {
        Ok(
            (js(s, "return document.documentElement.dataset.theme ?? null")? == "dark")
                .then_some(()),
        )
    })?;
    shots.take(s, "07-settings-dark")?;
    s.click(&s.find("[data-testid=nav-transfers]")?)?;
    s.wait_for("[data-testid=transfers-page]", WAIT)?;
    shots.take(s, "06-transfers-dark")?;
    s.click(&s.find("[data-testid=contact]")?)?;
    s.wait_for("[data-testid=conversation]", WAIT)?;
    shots.take(s, "04-conversation-dark")?;
    s.click(&s.find("[data-testid=open-details]")?)?;
    s.wait_for("[data-testid=safety-number]", WAIT)?;
    shots.take(s, "05-details-dark")?;
    s.click(&s.find("[data-testid=add-contact]")?)?;
    s.wait_for("[data-testid=my-qr] svg", WAIT)?;
    shots.take(s, "03-add-contact-dark")?;

    // Single instance: a second launch hands over to the running app and exits.
    let pid = app_pid(app, ann)?;
    let mut second = Command::new(app);
    second
        .env_clear()
        .envs(env_of(pid)?)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut second = second.spawn()?;
    let status = wait_until(WAIT, "the second instance to exit", || {
        Ok(second.try_wait()?)
    })
    .inspect_err(|_| {
        let _ = second.kill();
    })?;
    ensure!(status.success(), "second instance: {status}");
    ensure!(
        js(
            s,
            "return document.querySelector('[data-testid=add-page]') !== null"
        )? == true,
        "the first window stopped answering"
    );
    let whoami = ferry(ann, &["whoami", "--json"])?;
    ensure!(
        whoami.ok && whoami.stdout.contains("\"Ann\""),
        "{}",
        whoami.stderr
    );

    Ok(())
}

/// The endpoint id stored in a home (through the running app's control socket).
fn home_id(home: &Path) -> Result<String> {
    let me = json_of(&ferry(home, &["whoami", "--json"])?)?;
    Ok(me["id"].as_str().context("id")?.to_owned())
}

#[test]
fn a_locked_home_opens_with_its_passphrase_and_settings_change_and_remove_it() -> Result<()> {
    let Some(Desk { _one, dir, shots }) = Desk::begin()? else {
        return Ok(());
    };
    let root = dir.path();
    let ann = root.join("ann");
    let mut init = ferry_tests::LOOPBACK_ARGS.to_vec();
    init.extend(["init", "--name", "Ann"]);
    let first = Path::new("Ann's first passphrase");
    let out = ferry_tests::ferry_env(&ann, &[("FERRY_PASSPHRASE", first)], &init)?;
    ensure!(out.ok, "{}", out.stderr);

    let app = app_bin()?;
    let x = Xvfb::start()?;
    let env = app_env(root, &ann, &x.display());
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let driver = Driver::start(&env_refs)?;
    let s = driver.session(&app, &[])?;
    let run = || -> Result<()> {
        // Locked: the passphrase screen, and nothing else.
        let input = s.wait_for("[data-testid=unlock-input]", WAIT)?;
        ensure!(s.find_all("[data-testid=contacts]")?.is_empty());
        shots.take(&s, "20-locked")?;
        s.send_keys(&input, "not my passphrase")?;
        s.click(&s.find("[data-testid=unlock-submit]")?)?;
        see(&s, "[data-testid=unlock-error]", "Wrong passphrase")?;
        shots.take(&s, "21-wrong-passphrase")?;
        s.send_keys(
            &s.find("[data-testid=unlock-input]")?,
            first.to_str().context("utf-8")?,
        )?;
        s.click(&s.find("[data-testid=unlock-submit]")?)?;
        s.wait_for("[data-testid=no-contacts]", WAIT)?;

        // Settings say how the data is protected, and change the passphrase.
        s.click(&s.find("[data-testid=nav-settings]")?)?;
        see(
            &s,
            "[data-testid=protection-state]",
            "protected by your passphrase",
        )?;
        s.click(&s.find("[data-testid=change-passphrase]")?)?;
        s.send_keys(&s.find("[data-testid=current-passphrase]")?, "a wrong one")?;
        s.send_keys(
            &s.find("[data-testid=next-passphrase]")?,
            "Ann's second passphrase",
        )?;
        s.send_keys(
            &s.find("[data-testid=next-passphrase-again]")?,
            "Ann's second passphrase",
        )?;
        s.click(&s.find("[data-testid=passphrase-save]")?)?;
        see(&s, "[data-testid=passphrase-error]", "Wrong passphrase")?;
        s.clear(&s.find("[data-testid=current-passphrase]")?)?;
        s.send_keys(
            &s.find("[data-testid=current-passphrase]")?,
            first.to_str().context("utf-8")?,
        )?;
        shots.take(&s, "22-change-passphrase")?;
        s.click(&s.find("[data-testid=passphrase-save]")?)?;
        s.wait_for("[data-testid=remove-passphrase]", WAIT)?;
        let second = ferry_core::vault::Passphrase::from("Ann's second passphrase");
        ensure!(
            ferry_core::identity::load_identity(&ann, Some(&second)).is_ok(),
            "the new passphrase opens the key"
        );

        // Removed: the key goes to a file (no keychain here), and the page says it plainly.
        s.click(&s.find("[data-testid=remove-passphrase]")?)?;
        s.send_keys(
            &s.find("[data-testid=current-passphrase]")?,
            "Ann's second passphrase",
        )?;
        s.click(&s.find("[data-testid=passphrase-save]")?)?;
        see(
            &s,
            "[data-testid=protection-state]",
            "Not protected by a passphrase",
        )?;
        s.wait_for("[data-testid=set-passphrase]", WAIT)?;
        shots.take(&s, "23-not-protected")?;
        ensure!(
            ferry_core::vault::protection(&ann)? == Some(ferry_core::Protection::File),
            "the key is in a file now"
        );
        Ok(())
    };
    if let Err(e) = run() {
        shots.failed(&s, "failure-locked");
        return Err(e);
    }
    s.close()?;
    drop(driver);
    Ok(())
}

/// The environment of an app on `home` under display `display`: loopback only, the data key in
/// a file, and fresh web view folders under `root` (the web view keeps its storage, the theme
/// for one, under the XDG folders).
fn app_env(root: &Path, home: &Path, display: &str) -> Vec<(&'static str, String)> {
    let xdg = |d: &str| root.join("xdg").join(d).to_string_lossy().into_owned();
    vec![
        ("XDG_DATA_HOME", xdg("data")),
        ("XDG_CONFIG_HOME", xdg("config")),
        ("XDG_CACHE_HOME", xdg("cache")),
        ("DISPLAY", display.to_owned()),
        ("FERRY_HOME", home.to_string_lossy().into_owned()),
        ("FERRY_RELAY", "disabled".to_owned()),
        ("FERRY_BIND", "127.0.0.1:0".to_owned()),
        ("FERRY_LOCAL_DISCOVERY", "0".to_owned()),
        ("FERRY_KEYCHAIN", "off".to_owned()),
    ]
}

#[test]
fn a_backup_written_in_settings_restores_at_the_first_start_of_another_computer() -> Result<()> {
    let Some(Desk { _one, dir, shots }) = Desk::begin()? else {
        return Ok(());
    };
    let root = dir.path();
    let bob = init_home(root, "Bob", &[])?;
    let bob_daemon = Daemon::start(&bob, &[])?;
    let app = app_bin()?;
    let x = Xvfb::start()?;
    let file = root.join("ann.ferrybak");
    let file_text = file.to_str().context("utf-8")?;

    // The old computer: Ann starts, pairs with Bob, writes to him, and backs up in Settings.
    let old_home = root.join("old").join("ann");
    let env = app_env(&root.join("old"), &old_home, &x.display());
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let driver = Driver::start(&env_refs)?;
    let s = driver.session(&app, &[])?;
    let auto_dir = root.join("usb").join("ferry");
    let old_id = (|| -> Result<String> {
        // The first start, with a passphrase: it must be given twice alike. (Into the name
        // field with a click first: the window's first click gives it the focus under Xvfb,
        // and WebKit then puts the focus back where it was, which must not take keys typed
        // into a field clicked since.)
        fill(&s, "[data-testid=name-input]", "Ann")?;
        s.click(&s.find("[data-testid=protect-check]")?)?;
        fill(&s, "[data-testid=new-passphrase]", "Ann's passphrase")?;
        fill(
            &s,
            "[data-testid=new-passphrase-again]",
            "Ann's passphrase!",
        )?;
        s.click(&s.find("[data-testid=name-submit]")?)?;
        see(&s, "[data-testid=first-start]", "differ")?;
        ensure!(
            !ferry_core::home::has_identity(&old_home),
            "nothing is made before the passphrases agree"
        );
        // Fixed the way a person does: a backspace over the extra "!".
        s.send_keys(
            &s.find("[data-testid=new-passphrase-again]")?,
            keys::BACKSPACE,
        )?;
        wait_until(WAIT, "the fixed passphrase in its field", || {
            let v = js(
                &s,
                "return document.querySelector('[data-testid=new-passphrase-again]').value",
            )?;
            Ok((v == json!("Ann's passphrase")).then_some(()))
        })?;
        shots.take(&s, "29-first-start-passphrase")?;
        s.click(&s.find("[data-testid=name-submit]")?)?;
        s.wait_for("[data-testid=no-contacts]", WAIT)?;
        ensure!(
            ferry_core::vault::protection(&old_home)? == Some(ferry_core::Protection::Passphrase),
            "the first start kept the key under the passphrase"
        );
        let invite = ferry(&bob, &["invite"])?;
        ensure!(invite.ok, "{}", invite.stderr);
        invoke(&s, "pair", json!({ "invite": invite.stdout.trim() }))?;
        invoke(
            &s,
            "send_text",
            json!({ "contact": "Bob", "text": "written before the move" }),
        )?;
        see(&s, "[data-testid=contacts]", "Bob")?;
        s.click(&s.find("[data-testid=nav-settings]")?)?;
        s.click(&s.wait_for("[data-testid=backup-now]", WAIT)?)?;
        s.send_keys(&s.find("[data-testid=backup-path]")?, file_text)?;
        s.send_keys(
            &s.find("[data-testid=backup-passphrase]")?,
            "a backup passphrase",
        )?;
        s.send_keys(
            &s.find("[data-testid=backup-passphrase-again]")?,
            "a different one",
        )?;
        s.click(&s.find("[data-testid=backup-save]")?)?;
        see(&s, "[data-testid=backup-error]", "differ")?;
        s.clear(&s.find("[data-testid=backup-passphrase-again]")?)?;
        s.send_keys(
            &s.find("[data-testid=backup-passphrase-again]")?,
            "a backup passphrase",
        )?;
        shots.take(&s, "30-backup")?;
        s.click(&s.find("[data-testid=backup-save]")?)?;
        see(&s, "[data-testid=notice]", "Backup saved")?;
        ensure!(file.exists(), "the backup file");

        // Automatic backups: the first one is written at once.
        s.click(&s.find("[data-testid=auto-on]")?)?;
        s.send_keys(
            &s.wait_for("[data-testid=auto-dir]", WAIT)?,
            auto_dir.to_str().context("utf-8")?,
        )?;
        s.clear(&s.find("[data-testid=auto-keep]")?)?;
        s.send_keys(&s.find("[data-testid=auto-keep]")?, "3")?;
        s.send_keys(
            &s.find("[data-testid=auto-passphrase]")?,
            "an automatic passphrase",
        )?;
        s.send_keys(
            &s.find("[data-testid=auto-passphrase-again]")?,
            "an automatic passphrase",
        )?;
        shots.take(&s, "30a-automatic-backups")?;
        s.click(&s.find("[data-testid=auto-save]")?)?;
        see(&s, "[data-testid=auto-state]", "keeping the newest 3")?;
        see(&s, "[data-testid=backups]", "Last written")?;
        shots.take(&s, "30b-automatic-backups-on")?;
        let id = s.text(&s.find("[data-testid=my-id]")?)?;
        Ok(id)
    })();
    let old_id = match old_id {
        Ok(id) => id,
        Err(e) => {
            shots.failed(&s, "failure-backup");
            return Err(e);
        }
    };
    s.close()?;
    drop(driver);

    // The new computer: an empty home, restored at the first start.
    let new_home = root.join("new").join("ann");
    let env = app_env(&root.join("new"), &new_home, &x.display());
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let driver = Driver::start(&env_refs)?;
    let s = driver.session(&app, &[])?;
    let restored = (|| -> Result<()> {
        s.wait_for("[data-testid=name-input]", WAIT)?;
        s.click(&s.find("[data-testid=restore-backup]")?)?;
        s.send_keys(&s.wait_for("[data-testid=restore-path]", WAIT)?, file_text)?;
        s.send_keys(
            &s.find("[data-testid=restore-passphrase]")?,
            "a backup passphrase",
        )?;
        shots.take(&s, "31-restore")?;
        s.click(&s.find("[data-testid=name-submit]")?)?;
        see(&s, "[data-testid=contacts]", "Bob")?;
        see(&s, "[data-testid=conversation]", "written before the move")?;
        // The session is reset with Bob (online), and the conversation goes on.
        see(&s, "[data-testid=conversation]", "secured again")?;
        shots.take(&s, "32-restored")?;
        s.click(&s.find("[data-testid=nav-settings]")?)?;
        see(&s, "[data-testid=my-id]", &old_id)?;
        Ok(())
    })();
    if let Err(e) = restored {
        shots.failed(&s, "failure-restore");
        return Err(e);
    }
    s.close()?;
    drop(driver);
    drop(bob_daemon);

    // The automatic backup opens with its own passphrase, into a third home.
    let written = ferry_tests::files_under(&auto_dir)?;
    ensure!(
        written.len() == 1,
        "one automatic backup: {:?}",
        written.iter().map(|w| &w.0).collect::<Vec<_>>()
    );
    let third = root.join("third").join("ann");
    let auto_pass = Path::new("an automatic passphrase");
    let out = ferry_tests::ferry_env(
        &third,
        &[("FERRY_BACKUP_PASSPHRASE", auto_pass)],
        &["backup", "import", written[0].0.to_str().context("utf-8")?],
    )?;
    ensure!(out.ok, "{}", out.stderr);
    ensure!(home_id(&third)? == old_id, "the same identity");
    Ok(())
}

/// Pairs `joiner` with `inviter` (which runs a daemon) through the CLI.
fn pair_homes(inviter: &Path, joiner: &Path) -> Result<()> {
    let invite = ferry(inviter, &["invite"])?;
    ensure!(invite.ok, "{}", invite.stderr);
    let paired = ferry(joiner, &["pair", invite.stdout.trim()])?;
    ensure!(paired.ok, "{}", paired.stderr);
    Ok(())
}

#[test]
fn groups_are_made_written_in_and_managed_in_the_desktop_app() -> Result<()> {
    let Some(Desk { _one, dir, shots }) = Desk::begin()? else {
        return Ok(());
    };
    let root = dir.path();
    // Ann (the app) knows Bob and Cat; Cat also knows Dan, whom Ann does not.
    let ann = init_home(root, "Ann", &[])?;
    let bob = init_home(root, "Bob", &[])?;
    let cat = init_home(root, "Cat", &[])?;
    let dan = init_home(root, "Dan", &[])?;
    let cat_dl = root.join("cat-downloads");
    let peers = [
        Daemon::start(&bob, &[])?,
        Daemon::start(&cat, &["--downloads", cat_dl.to_str().context("utf-8")?])?,
        Daemon::start(&dan, &[])?,
    ];
    {
        let _ann_daemon = Daemon::start(&ann, &[])?;
        pair_homes(&ann, &bob)?;
        pair_homes(&ann, &cat)?;
    }
    pair_homes(&cat, &dan)?;
    // Cat makes a group with Ann and Dan while Ann is away: it reaches her when the app starts.
    let climbing = ferry(
        &cat,
        &["group", "create", "Climbing", "--members", "Ann,Dan"],
    )?;
    ensure!(climbing.ok, "{}", climbing.stderr);

    let app = app_bin()?;
    let x = Xvfb::start()?;
    let env = app_env(root, &ann, &x.display());
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let driver = Driver::start(&env_refs)?;
    let s = driver.session(&app, &[])?;
    let run = || -> Result<()> {
        s.wait_for("[data-testid=contacts]", WAIT)?;
        see(&s, "[data-testid=groups]", "Climbing")?;

        // A new group: a name and two contacts.
        s.click(&s.find("[data-testid=new-group]")?)?;
        fill(&s, "[data-testid=group-name]", "Trip")?;
        for pick in s.find_all("[data-testid=pick]")? {
            s.click(&pick)?;
        }
        shots.take(&s, "40-new-group")?;
        s.click(&s.find("[data-testid=create-group]")?)?;
        s.wait_for("[data-testid=group-conversation]", WAIT)?;
        see(&s, "[data-testid=system-line]", "You created the group")?;

        // Bob writes from his terminal; Ann sees who wrote, and answers.
        let out = ferry(&bob, &["send", "Trip", "Who brings the tent?"])?;
        ensure!(out.ok, "{}", out.stderr);
        see(&s, "[data-testid=messages]", "Who brings the tent?")?;
        see(&s, "[data-testid=author]", "Bob")?;
        fill(&s, "[data-testid=composer]", "I do")?;
        s.click(&s.find("[data-testid=send]")?)?;
        wait_until(WAIT, "Cat to have Ann's answer", || {
            let out = ferry(&cat, &["history", "Trip", "--json"])?;
            Ok(out.stdout.contains("I do").then_some(()))
        })?;
        see(&s, "[data-testid=group-status]", "of 3 online")?;
        // Cat's history above marked it read: her receipt says so.
        see(&s, "[data-testid=group-receipt]", "Read by 1 of 2")?;
        shots.take(&s, "41-group-conversation")?;

        // Files in the group. Bob shares one from his terminal; Ann accepts it with a click.
        let ann_dl = root.join("ann-downloads");
        invoke(&s, "set_downloads_dir", json!({ "dir": ann_dl }))?;
        let route = root.join("route.gpx");
        let route_data = write_file(&route, 700 * 1024 + 3, 5)?;
        let out = ferry(
            &bob,
            &["send-file", "Trip", route.to_str().context("utf-8")?],
        )?;
        ensure!(out.ok, "{}", out.stderr);
        see(
            &s,
            "[data-testid=file-state]",
            "Bob shared this with the group",
        )?;
        s.click(&s.wait_for("[data-direction=incoming] [data-testid=accept]", WAIT)?)?;
        wait_until(WAIT, "Bob's file on Ann's disk", || {
            Ok(std::fs::read(ann_dl.join("route.gpx"))
                .ok()
                .filter(|d| *d == route_data))
        })?;
        see(
            &s,
            "[data-direction=incoming] [data-state=done]",
            "Received",
        )?;
        // Ann shares one through the command a drop calls; Cat fetches it from her terminal.
        let groups = ferry(&bob, &["groups", "--json"])?;
        let listed: Value = serde_json::from_str(&groups.stdout)?;
        let trip = listed
            .as_array()
            .and_then(|a| a.iter().find(|g| g["name"] == "Trip"))
            .and_then(|g| g["id"].as_str())
            .context("Trip's id")?
            .to_owned();
        let plan = root.join("plan.txt");
        let plan_data = write_file(&plan, 150 * 1024, 9)?;
        let plan_id = send_path(&s, &trip, &plan)?;
        see(
            &s,
            &format!("[data-transfer='{plan_id}'] [data-testid=file-state]"),
            "Shared with the group",
        )?;
        see(
            &s,
            &format!("[data-transfer='{plan_id}'] [data-testid=cancel]"),
            "Stop sharing",
        )?;
        let cat_t = eventually_json(&cat, &["transfers", "--json"], |v| {
            v.to_string().contains("plan.txt")
        })?;
        let cat_id = cat_t
            .as_array()
            .and_then(|a| a.iter().find(|t| t["name"] == "plan.txt"))
            .and_then(|t| t["id"].as_str())
            .context("Cat's transfer")?
            .to_owned();
        let accepted = ferry(&cat, &["accept", &cat_id])?;
        ensure!(accepted.ok, "{}", accepted.stderr);
        wait_until(WAIT, "Ann's file on Cat's disk", || {
            Ok(std::fs::read(cat_dl.join("plan.txt"))
                .ok()
                .filter(|d| *d == plan_data))
        })?;
        shots.take(&s, "44-group-files")?;

        // Members: rename the group; Bob sees the new name.
        s.click(&s.find("[data-testid=open-group-details]")?)?;
        s.wait_for("[data-testid=group-members]", WAIT)?;
        ensure!(s.find_all("[data-testid=group-member]")?.len() == 3);
        fill(&s, "[data-testid=rename-group]", "Trip 2027")?;
        s.click(&s.find("[data-testid=rename]")?)?;
        see(&s, "[data-testid=groups]", "Trip 2027")?;
        wait_until(WAIT, "Bob to see the new name", || {
            let out = ferry(&bob, &["groups", "--json"])?;
            Ok(out.stdout.contains("Trip 2027").then_some(()))
        })?;
        shots.take(&s, "42-group-members")?;

        // Cat's group: Dan is not Ann's contact, and says so.
        let clicked = js(
            &s,
            "const b = [...document.querySelectorAll('[data-testid=group]')] \
               .find((b) => b.innerText.includes('Climbing')); \
             if (b) b.click(); return !!b;",
        )?;
        ensure!(clicked == json!(true), "the Climbing group in the sidebar");
        see(&s, "[data-testid=group-conversation]", "Climbing")?;
        s.click(&s.wait_for("[data-testid=open-group-details]", WAIT)?)?;
        s.wait_for("[data-kind=not_your_contact]", WAIT)?;
        see(&s, "[data-testid=group-members]", "Not verified by you")?;
        shots.take(&s, "43-member-not-your-contact")?;
        Ok(())
    };
    if let Err(e) = run() {
        shots.failed(&s, "groups-failure");
        return Err(e);
    }
    s.close()?;
    drop(driver);
    drop(peers);
    Ok(())
}
