//! Two computers on one LAN with no internet: two network namespaces joined by a veth pair,
//! nothing else. After both come back on new ports, their stored addresses are stale and no
//! relay exists, so only local-network discovery (mDNS) can bring them together.
//!
//! Needs root and `ip` (CI has both); elsewhere the test says why it cannot run and fails,
//! unless `FERRY_SKIP_NETNS=1` is set.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ferry_tests::*;

struct Lan {
    names: [String; 2],
    addrs: [&'static str; 2],
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Lan {
    fn new() -> Result<Lan> {
        let id = std::process::id();
        let lan = Lan {
            names: [format!("ferry-{id}-a"), format!("ferry-{id}-b")],
            addrs: ["10.231.7.1/24", "10.231.7.2/24"],
        };
        let veth = [format!("fv{id}a"), format!("fv{id}b")];
        for ns in &lan.names {
            ip(&["netns", "add", ns])?;
        }
        ip(&[
            "link",
            "add",
            &veth[0],
            "netns",
            &lan.names[0],
            "type",
            "veth",
            "peer",
            "name",
            &veth[1],
            "netns",
            &lan.names[1],
        ])?;
        for ((ns, addr), dev) in lan.names.iter().zip(lan.addrs).zip(&veth) {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])?;
        }
        Ok(lan)
    }

    fn exec(&self, i: usize) -> [&str; 4] {
        ["ip", "netns", "exec", self.names[i].as_str()]
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn init(root: &std::path::Path, name: &str) -> Result<std::path::PathBuf> {
    init_home(
        root,
        name,
        &[
            "--relay",
            "disabled",
            "--bind",
            "0.0.0.0:41001",
            "--local-discovery",
            "on",
        ],
    )
}

#[test]
fn on_a_lan_without_internet_contacts_find_each_other_by_local_discovery() -> Result<()> {
    let lan = match Lan::new() {
        Ok(lan) => lan,
        Err(e) if std::env::var_os("FERRY_SKIP_NETNS").is_some() => {
            eprintln!("skipped (FERRY_SKIP_NETNS): {e}");
            return Ok(());
        }
        Err(e) => return Err(e.context("network namespaces need root and iproute2")),
    };
    let dir = tempfile::tempdir()?;
    let alice = init(dir.path(), "Alice")?;
    let bob = init(dir.path(), "Bob")?;

    // Pair while both run on their first ports.
    {
        let a = Daemon::start_in(&lan.exec(0), &alice, &[])?;
        let mut b = Daemon::start_in(&lan.exec(1), &bob, &[])?;
        let invite = ferry(&alice, &["invite"])?;
        assert!(invite.ok, "{}", invite.stderr);
        assert!(invite.stdout.trim().len() > 20);
        let parsed = ferry_core::invite::Invite::parse(invite.stdout.trim())?;
        assert!(
            parsed
                .addr
                .direct
                .iter()
                .all(|a| a.ip().to_string() == "10.231.7.1"),
            "only the LAN address is advertised: {:?}",
            parsed.addr.direct
        );
        let paired = ferry(&bob, &["pair", invite.stdout.trim()])?;
        assert!(paired.ok, "{}", paired.stderr);
        b.wait_line(|v| v["type"] == "presence_changed")?;
        a.stop()?;
        b.stop()?;
    }

    // Both come back on new ports: what each stored about the other is now wrong. Without
    // local discovery they cannot find each other…
    let online = |v: &serde_json::Value| {
        v["type"] == "presence_changed" && v["presence"]["state"] == "online"
    };
    {
        let blind = ["--bind", "0.0.0.0:41002", "--local-discovery", "off"];
        let a = Daemon::start_in(&lan.exec(0), &alice, &blind)?;
        let mut b = Daemon::start_in(&lan.exec(1), &bob, &blind)?;
        assert!(
            b.wait_line_for(Duration::from_secs(8), online).is_err(),
            "found each other without discovery: the test would prove nothing"
        );
        a.stop()?;
        b.stop()?;
    }
    // …with it, they do.
    let moved = ["--bind", "0.0.0.0:41003"];
    let mut a = Daemon::start_in(&lan.exec(0), &alice, &moved)?;
    let mut b = Daemon::start_in(&lan.exec(1), &bob, &moved)?;
    b.wait_line_for(Duration::from_secs(60), online)?;
    let sent = ferry(&bob, &["send", "Alice", "found you on the LAN"])?;
    assert!(sent.ok, "{}", sent.stderr);
    let ev = a.wait_line(|v| v["type"] == "message_received")?;
    assert_eq!(ev["message"]["body"], "found you on the LAN");
    let contacts = ferry(&bob, &["contacts", "--json"])?;
    assert!(
        contacts.stdout.contains("\"direct\""),
        "{}",
        contacts.stdout
    );
    a.stop()?;
    b.stop()?;
    Ok(())
}
