//! Human-readable output.

use ferry_core::{ContactView, Event, Message, MessageState, PathKind, Presence};

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
        if c.verified {
            extra.push("verified".into());
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

pub(crate) fn history(contact: &str, page: &[Message]) {
    if page.is_empty() {
        println!("No messages with {contact} yet.");
        return;
    }
    for m in page {
        let who = match m.direction {
            ferry_core::Direction::Outgoing => "me".to_string(),
            ferry_core::Direction::Incoming => contact.to_string(),
        };
        println!("[{}] {who}: {}", state_word(m.state), m.body);
    }
}

pub(crate) fn event(ev: &Event) -> String {
    match ev {
        Event::MessageReceived { message, from } => format!("{from}: {}", message.body),
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
        other => format!("{other:?}"),
    }
}
