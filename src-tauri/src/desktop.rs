//! The desktop around the window: tray icon with the unread count, notifications while the
//! window is in the background, and bringing the window forward (tray, second launch).

use std::sync::atomic::{AtomicU64, Ordering};

use ferry_core::{Event, Node};
use tauri::menu::{Menu, MenuItem};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Manager};
use tauri_plugin_notification::NotificationExt;

const TRAY_ID: &str = "ferry";
const WINDOW: &str = "main";

/// The unread count last shown on the tray.
static UNREAD: AtomicU64 = AtomicU64::new(0);
/// Notifications handed to the system so far.
static NOTIFIED: AtomicU64 = AtomicU64::new(0);

/// Shows, unminimises and focuses the main window.
pub fn show_main(app: &AppHandle) {
    if let Some(w) = app.get_webview_window(WINDOW) {
        let _ = w.unminimize();
        let _ = w.show();
        let _ = w.set_focus();
    }
}

/// Creates the tray icon with "Show Ferry" and "Quit". A desktop without a tray area simply
/// shows nothing; the app works the same.
pub fn create_tray(app: &AppHandle) -> tauri::Result<TrayIcon> {
    let show = MenuItem::with_id(app, "show", "Show Ferry", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit Ferry", true, None::<&str>)?;
    let menu = Menu::with_items(app, &[&show, &quit])?;
    let mut tray = TrayIconBuilder::with_id(TRAY_ID)
        .tooltip("Ferry")
        .menu(&menu)
        .show_menu_on_left_click(false)
        .on_menu_event(|app, event| match event.id.as_ref() {
            "show" => show_main(app),
            "quit" => app.exit(0),
            _ => {}
        })
        .on_tray_icon_event(|tray, event| {
            if let TrayIconEvent::Click {
                button: MouseButton::Left,
                button_state: MouseButtonState::Up,
                ..
            } = event
            {
                show_main(tray.app_handle());
            }
        });
    if let Some(icon) = app.default_window_icon() {
        tray = tray.icon(icon.clone());
    }
    tray.build(app)
}

/// The tray's text for an unread count.
pub fn tray_text(unread: u64) -> String {
    match unread {
        0 => "Ferry".to_owned(),
        1 => "Ferry — 1 unread message".to_owned(),
        n => format!("Ferry — {n} unread messages"),
    }
}

/// Recounts unread messages over all contacts and shows the count on the tray.
pub fn refresh_unread(app: &AppHandle, node: &Node) {
    let unread = match node.unread() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("counting unread messages: {e}");
            return;
        }
    };
    UNREAD.store(unread, Ordering::Relaxed);
    if let Some(tray) = app.tray_by_id(TRAY_ID) {
        let _ = tray.set_tooltip(Some(tray_text(unread)));
        let _ = tray.set_title((unread > 0).then(|| unread.to_string()));
    }
}

/// What the desktop integration shows now, for the UI's diagnostics and the end-to-end tests.
#[derive(Debug, Clone, serde::Serialize, specta::Type)]
pub struct DesktopState {
    /// Unread messages counted on the tray.
    pub unread: u64,
    /// The tray's tooltip.
    pub tray_text: String,
    /// Whether the tray icon exists.
    pub tray: bool,
    /// Notifications handed to the system since start.
    pub notifications: u64,
}

/// What the tray and notifications show now.
#[tauri::command]
#[specta::specta]
pub fn desktop_state(app: AppHandle) -> DesktopState {
    let unread = UNREAD.load(Ordering::Relaxed);
    DesktopState {
        unread,
        tray_text: tray_text(unread),
        tray: app.tray_by_id(TRAY_ID).is_some(),
        notifications: NOTIFIED.load(Ordering::Relaxed),
    }
}

/// What a notification says about an event, if it deserves one.
pub fn notification_for(event: &Event) -> Option<(String, String)> {
    match event {
        Event::MessageReceived { message, from } if message.transfer.is_none() => {
            let mut body: String = message.body.chars().take(140).collect();
            if body.len() < message.body.len() {
                body.push('…');
            }
            // A line Ferry wrote (a changed safety number) is not the contact speaking.
            let title = if message.direction == ferry_core::Direction::System {
                "Ferry".to_owned()
            } else {
                from.clone()
            };
            Some((title, body))
        }
        Event::TransferOffered { transfer } => Some((
            "Incoming file".to_owned(),
            format!("{} ({})", transfer.name, human_size(transfer.size)),
        )),
        _ => None,
    }
}

fn human_size(bytes: u64) -> String {
    ferry_core::human_size(bytes, ferry_core::SizeUnits::Decimal)
}

/// Engine events that touch the desktop: unread count on the tray, and a notification when
/// the window is not focused.
pub fn on_event(app: &AppHandle, node: &Node, event: &Event) {
    if matches!(
        event,
        Event::MessageReceived { .. } | Event::MessagesExpired { .. }
    ) {
        refresh_unread(app, node);
    }
    let focused = app
        .get_webview_window(WINDOW)
        .and_then(|w| w.is_focused().ok())
        .unwrap_or(false);
    if focused {
        return;
    }
    if let Some((mut title, body)) = notification_for(event) {
        // A group's message says which group.
        if let Event::MessageReceived { message, .. } = event {
            if let Ok(g) = node.group(&message.conversation.to_string()) {
                title = format!("{title} in {}", g.name);
            }
        }
        match app.notification().builder().title(title).body(body).show() {
            Ok(()) => {
                NOTIFIED.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("notification not shown: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tray_text_counts() {
        assert_eq!(tray_text(0), "Ferry");
        assert_eq!(tray_text(1), "Ferry — 1 unread message");
        assert_eq!(tray_text(12), "Ferry — 12 unread messages");
    }

    fn message(body: &str, transfer: Option<ferry_core::TransferId>) -> ferry_core::Message {
        let contact = iroh::SecretKey::from_bytes(&[7; 32]).public();
        ferry_core::Message {
            id: ferry_core::MessageId([1; 16]),
            conversation: ferry_core::ConversationId([2; 16]),
            contact,
            seq: 1,
            direction: ferry_core::Direction::Incoming,
            body: body.to_owned(),
            sent_at: 0,
            stored_at: 0,
            state: ferry_core::MessageState::Received,
            transfer,
            author: contact,
        }
    }

    #[test]
    fn notifications_say_who_and_what_briefly() {
        let long = "x".repeat(500);
        let (title, body) = notification_for(&Event::MessageReceived {
            message: message(&long, None),
            from: "Bob".into(),
        })
        .expect("a message deserves a notification");
        assert_eq!(title, "Bob");
        assert_eq!(body.chars().count(), 141);
        assert!(body.ends_with('…'));
        // The file offer's own event carries the name and size; its chat message stays quiet.
        let offer = Event::MessageReceived {
            message: message("report.pdf", Some(ferry_core::TransferId([3; 16]))),
            from: "Bob".into(),
        };
        assert_eq!(notification_for(&offer), None);
        let delivered = Event::DeliveryChanged {
            id: ferry_core::MessageId([1; 16]),
            contact: iroh::SecretKey::from_bytes(&[7; 32]).public(),
            state: ferry_core::MessageState::Delivered,
        };
        assert_eq!(notification_for(&delivered), None);
    }

    #[test]
    fn sizes_read_like_a_file_manager() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_500_000), "1.5 MB");
        assert_eq!(human_size(3_000_000_000), "3.0 GB");
    }
}
