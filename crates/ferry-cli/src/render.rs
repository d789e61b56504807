//! Human-readable output.

use ferry_core::{
    ContactView, Direction, Event, GroupView, MemberKind, Message, MessageState, PathKind,
    Presence, Transfer, TrustState,
};

pub(crate) fn presence(p: &Presence) -> String {
    match p {
        Presence::Online {
            path: PathKind::Direct,
            rtt_ms,
        } => format!("online, direct{}", rtt(*rtt_ms)),
        Presence::Online {
            path: PathKind::Relayed,
            rtt_ms,
        } => format!("online, relayed{}", rtt(*rtt_ms)),
        Presence::Offline => "offline".into(),
    }
}

fn rtt(ms: Option<u64>) -> String {
    ms.map(|m| format!(", {m} ms")).unwrap_or_default()
}

pub(crate) fn state_word(s: MessageState) -> &'static str {
    match s {
        MessageState::Queued => "queued",
        MessageState::Delivered => "delivered",
        MessageState::Read => "read",
        MessageState::Received => "new",
        MessageState::Seen => "seen",
        MessageState::Failed => "failed",
    }
}

pub(crate) fn trust_word(s: TrustState) -> &'static str {
    match s {
        TrustState::Verified => "verified",
        TrustState::Unverified => "not verified",
        TrustState::Blocked => "blocked",
    }
}

pub(crate) fn contacts(list: &[ContactView]) {
    if list.is_empty() {
        println!(
            "No contacts yet. `ferry invite` makes an invite; `ferry pair <invite>` uses one."
        );
        return;
    }
    for c in list {
        let mut extra = Vec::new();
        if c.unread > 0 {
            extra.push(format!("{} unread", c.unread));
        }
        if c.queued > 0 {
            extra.push(format!("{} queued", c.queued));
        }
        match c.state {
            TrustState::Verified | TrustState::Blocked => extra.push(trust_word(c.state).into()),
            TrustState::Unverified => {}
        }
        if c.key_changed {
            extra.push("safety number changed: accept it to send".into());
        }
        println!(
            "{:<20} {}  {}{}",
            c.name,
            c.id.fmt_short(),
            presence(&c.presence),
            if extra.is_empty() {
                String::new()
            } else {
                format!("  ({})", extra.join(", "))
            }
        );
    }
}

pub(crate) fn history(contact: &str, page: &[Message], name: impl Fn(&Message) -> String) {
    if page.is_empty() {
        println!("No messages with {contact} yet.");
        return;
    }
    for m in page {
        let who = match m.direction {
            ferry_core::Direction::Outgoing => "me".to_string(),
            ferry_core::Direction::Incoming => name(m),
            ferry_core::Direction::System => {
                println!("-- {} --", m.body);
                continue;
            }
        };
        println!("[{}] {who}: {}", state_word(m.state), m.body);
    }
}

pub(crate) fn groups(list: &[GroupView]) {
    if list.is_empty() {
        println!("No groups yet. `ferry group create NAME --members A,B` makes one.");
        return;
    }
    for g in list {
        let mut extra = vec![format!("{} of {} online", g.online, g.members.len())];
        if g.unread > 0 {
            extra.push(format!("{} unread", g.unread));
        }
        if g.waiting > 0 {
            extra.push(format!(
                "{} waiting for earlier messages or keys",
                g.waiting
            ));
        }
        if !g.member {
            extra.push("you are no longer in it".into());
        } else if g.admin {
            extra.push("you are an admin".into());
        }
        println!(
            "{:<20} {}  ({})",
            g.name,
            &g.id.to_string()[..10],
            extra.join(", ")
        );
        for m in &g.members {
            let kind = match m.kind {
                MemberKind::You => "you",
                MemberKind::Verified => "verified",
                MemberKind::Contact => "contact, not verified",
                MemberKind::NotYourContact => "not verified by you",
                MemberKind::Blocked => "blocked: hidden for you",
            };
            println!(
                "    {:<18} {}  {}{}{}",
                m.name,
                m.id.fmt_short(),
                kind,
                if m.admin { ", admin" } else { "" },
                if m.online && m.kind != MemberKind::You {
                    ", online"
                } else {
                    ""
                }
            );
        }
    }
}

pub(crate) fn event(ev: &Event) -> String {
    match ev {
        Event::MessageReceived { message, .. } | Event::MessageSent { message, .. }
            if message.direction == ferry_core::Direction::System =>
        {
            format!("-- {} --", message.body)
        }
        Event::MessageReceived { message, from } => format!("{from}: {}", message.body),
        Event::MessageSent { message, .. } => format!("me: {}", message.body),
        Event::DeliveryChanged { id, state, .. } => {
            format!("message {} {}", &id.to_string()[..8], state_word(*state))
        }
        Event::PresenceChanged {
            name, presence: p, ..
        } => format!("{name} is {}", presence(p)),
        Event::PairingCompleted { contact } => format!(
            "paired with {} ({}); safety number {}",
            contact.name, contact.id, contact.safety_number
        ),
        Event::TransferOffered { transfer: t } => format!(
            "offer {}: {} ({}{}){}",
            t.id,
            t.name,
            bytes(t.size),
            if t.folder {
                format!(", {} files", t.files)
            } else {
                String::new()
            },
            if t.dangerous {
                "  WARNING: this can run code on your computer"
            } else {
                ""
            }
        ),
        Event::TransferChanged { transfer: t } => {
            format!(
                "transfer {} {}: {:?}",
                &t.id.to_string()[..8],
                t.name,
                t.state
            )
        }
        Event::TransferProgress {
            id,
            bytes_done,
            total,
            rate,
        } => format!(
            "transfer {} {}",
            &id.to_string()[..8],
            progress(*bytes_done, *total, *rate)
        ),
        Event::TransferCompleted { id, path } => {
            format!(
                "transfer {} saved to {}",
                &id.to_string()[..8],
                path.display()
            )
        }
        Event::TransferFailed { id, reason } => {
            format!("transfer {} failed: {reason}", &id.to_string()[..8])
        }
        Event::Notice { text, .. } => format!("notice: {text}"),
        Event::ContactChanged { contact } => {
            format!("{} is {}", contact.name, trust_word(contact.state))
        }
        Event::ContactRemoved { name, .. } => format!("{name} was removed"),
        Event::MessagesExpired { ids, .. } => format!(
            "{} message{} disappeared",
            ids.len(),
            if ids.len() == 1 { "" } else { "s" }
        ),
        Event::BackupWritten {
            file: Some(file),
            error: None,
            ..
        } => format!("scheduled backup written: {file}"),
        Event::GroupChanged { group } => format!(
            "group {}: {} members{}",
            group.name,
            group.members.len(),
            if group.member {
                ""
            } else {
                " (you are no longer in it)"
            }
        ),
        Event::BackupWritten { error, .. } => format!(
            "scheduled backup failed: {}",
            error.as_deref().unwrap_or("unknown error")
        ),
        other => format!("{other:?}"),
    }
}

/// A byte count for people: 1.5 GiB.
pub(crate) fn bytes(n: u64) -> String {
    ferry_core::human_size(n, ferry_core::SizeUnits::Binary)
}

/// "12.0 MiB of 100.0 MiB, 40.2 MiB/s, 2 s left"
pub(crate) fn progress(done: u64, total: u64, rate: u64) -> String {
    let left = total
        .saturating_sub(done)
        .checked_div(rate)
        .map(|s| format!(", {s} s left"))
        .unwrap_or_default();
    format!(
        "{} of {}, {}/s{left}",
        bytes(done),
        bytes(total),
        bytes(rate)
    )
}

pub(crate) fn transfers(list: &[Transfer]) {
    if list.is_empty() {
        println!("No transfers yet. `ferry send-file <CONTACT> <PATH>` offers a file or folder.");
        return;
    }
    for t in list {
        let arrow = match t.direction {
            Direction::Outgoing => "→",
            Direction::Incoming | Direction::System => "←",
        };
        println!(
            "{}  {arrow} {:<30} {:>10}  {:?}{}{}",
            &t.id.to_string()[..8],
            t.name,
            bytes(t.size),
            t.state,
            if t.dangerous { "  (can run code)" } else { "" },
            t.path
                .as_ref()
                .filter(|_| t.direction == Direction::Incoming)
                .map(|p| format!("  {}", p.display()))
                .unwrap_or_default()
        );
    }
}

/// A whole number of days, hours or seconds: `1d`, `12h`, `90s`.
pub(crate) fn duration(secs: u64) -> String {
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{s}s"),
    }
}
