//! The app's hold on the home: it opens the same `ferry_core::Node` a `ferry daemon` would
//! (taking the home's lock and serving its control socket, so the CLI works against the running
//! app) and forwards every engine event to the UI as one typed event, [`EngineEvent`].

use std::path::PathBuf;
use std::sync::Arc;

use ferry_core::vault::{self, Passphrase};
use ferry_core::{Config, Event, Node, Protection};
use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::{AppHandle, Manager};
use tauri_specta::Event as _;
use tokio::sync::RwLock;

/// Every engine event, as the UI receives it (`events.engineEvent` in the bindings).
#[derive(Debug, Clone, Serialize, Deserialize, Type, tauri_specta::Event)]
pub struct EngineEvent(pub Event);

/// An error as the UI sees it: a stable code to branch on and a message to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct CommandError {
    /// Stable machine-readable code (see `ferry_core::Error::code`).
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

impl From<ferry_core::Error> for CommandError {
    fn from(e: ferry_core::Error) -> Self {
        CommandError {
            code: e.code().to_string(),
            message: e.to_string(),
        }
    }
}

/// Where the app stands with its home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// Still opening the home.
    Starting,
    /// First start: the user picks a display name.
    NeedsName,
    /// The home's data key is kept under a passphrase: the user enters it (`unlock`).
    Locked,
    /// Running; the engine answers calls.
    Ready {
        /// This device's endpoint id (hex).
        id: String,
    },
    /// Another process (`ferry daemon`, another app window) holds the home.
    Busy {
        /// Its process id.
        pid: u32,
        /// What to tell the user.
        message: String,
    },
    /// Opening failed.
    Failed {
        /// Why.
        error: CommandError,
    },
}

/// Managed state: the home and, once open, the node.
pub struct AppState {
    home: Result<PathBuf, CommandError>,
    node: RwLock<Option<Arc<Node>>>,
    status: RwLock<Status>,
}

impl AppState {
    /// State for the platform's default home (or `FERRY_HOME`).
    pub fn new() -> Self {
        AppState {
            home: ferry_core::default_home().map_err(CommandError::from),
            node: RwLock::new(None),
            status: RwLock::new(Status::Starting),
        }
    }

    /// The open node, once the home is open.
    pub async fn node(&self) -> Option<Arc<Node>> {
        self.node.read().await.clone()
    }

    /// Where the app stands.
    pub async fn status(&self) -> Status {
        self.status.read().await.clone()
    }

    /// The home folder, or why there is none.
    pub fn home(&self) -> Result<PathBuf, CommandError> {
        self.home.clone()
    }
}

impl Default for AppState {
    fn default() -> Self {
        Self::new()
    }
}

/// Opens the home if it has an identity and needs no passphrase (else says which it needs);
/// called at start and after the first-start name. `FERRY_PASSPHRASE`, if set, is tried.
pub async fn open(app: AppHandle) {
    let state = app.state::<AppState>();
    let status = match &state.home {
        Err(e) => Status::Failed { error: e.clone() },
        Ok(home) if !Node::is_initialized(home) => Status::NeedsName,
        Ok(home) => {
            let passphrase = Passphrase::from_env("FERRY_PASSPHRASE");
            let locked = matches!(vault::protection(home), Ok(Some(Protection::Passphrase)));
            if locked && passphrase.is_none() {
                Status::Locked
            } else {
                match open_with(&app, home, passphrase).await {
                    Ok(status) => status,
                    Err(error) if locked => {
                        tracing::warn!("FERRY_PASSPHRASE did not open the home: {}", error.message);
                        Status::Locked
                    }
                    Err(error) => Status::Failed { error },
                }
            }
        }
    };
    tracing::info!(?status, "home");
    *state.status.write().await = status;
}

/// Unlocks the home with a passphrase the user typed. A wrong one is an error (`wrong_passphrase`
/// or, after several, `unlock_wait`) and leaves the app locked.
pub async fn unlock(app: &AppHandle, passphrase: Passphrase) -> Result<Status, CommandError> {
    let state = app.state::<AppState>();
    let home = state.home()?;
    let status = open_with(app, &home, Some(passphrase)).await?;
    *state.status.write().await = status.clone();
    Ok(status)
}

/// Opens the node. Errors about the passphrase are returned; every other outcome is a status.
async fn open_with(
    app: &AppHandle,
    home: &std::path::Path,
    passphrase: Option<Passphrase>,
) -> Result<Status, CommandError> {
    let state = app.state::<AppState>();
    let config = match config_from_env() {
        Ok(config) => Config {
            passphrase,
            ..config
        },
        Err(error) => return Ok(Status::Failed { error }),
    };
    Ok(
        match ferry_core::control::open_serving(home, config).await {
            Ok(node) => {
                forward_events(app, &node);
                crate::desktop::refresh_unread(app, &node);
                let id = node.id().to_string();
                *state.node.write().await = Some(node);
                Status::Ready { id }
            }
            Err(e @ ferry_core::Error::HomeBusy { pid, .. }) => Status::Busy {
                pid,
                message: e.to_string(),
            },
            Err(
                e @ (ferry_core::Error::WrongPassphrase { .. }
                | ferry_core::Error::UnlockWait { .. }
                | ferry_core::Error::PassphraseNeeded),
            ) => return Err(e.into()),
            Err(e) => Status::Failed { error: e.into() },
        },
    )
}

/// The node's configuration: the home's stored settings, overridden for this run by
/// `FERRY_RELAY` (`default`, `disabled` or a URL), `FERRY_BIND` (a socket address) and
/// `FERRY_LOCAL_DISCOVERY` (`0`/`1`) — the same overrides the CLI's flags give.
fn config_from_env() -> Result<Config, CommandError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| CommandError {
        code: "invalid_input".into(),
        message: format!("{what}: {e}"),
    };
    let mut config = Config::default();
    if let Ok(relay) = std::env::var("FERRY_RELAY") {
        config.relay = Some(relay.parse().map_err(|e| bad("FERRY_RELAY", &e))?);
    }
    if let Ok(bind) = std::env::var("FERRY_BIND") {
        config.bind = Some(bind.parse().map_err(|e| bad("FERRY_BIND", &e))?);
    }
    if let Ok(lan) = std::env::var("FERRY_LOCAL_DISCOVERY") {
        config.local_discovery = Some(
            ferry_core::parse_switch(&lan)
                .ok_or_else(|| bad("FERRY_LOCAL_DISCOVERY", &"expected 1 or 0"))?,
        );
    }
    Ok(config)
}

fn forward_events(app: &AppHandle, node: &Arc<Node>) {
    let mut events = node.subscribe();
    let app = app.clone();
    let node = Arc::downgrade(node);
    tauri::async_runtime::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ev) => {
                    if let Some(node) = node.upgrade() {
                        crate::desktop::on_event(&app, &node, &ev);
                    }
                    if let Err(e) = EngineEvent(ev).emit(&app) {
                        tracing::warn!("event not delivered to the UI: {e}");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("the UI missed {n} events");
                }
                Err(_) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The UI branches on `code`; both fields cross the bridge.
    #[test]
    fn engine_errors_cross_as_code_and_message() -> Result<(), serde_json::Error> {
        let err = CommandError::from(ferry_core::Error::InviteExpired);
        assert_eq!(
            serde_json::to_value(&err)?,
            serde_json::json!({ "code": "invite_expired", "message": "this invite has expired; ask for a new one" })
        );
        Ok(())
    }

    #[test]
    fn status_is_tagged_for_the_ui() -> Result<(), serde_json::Error> {
        let busy = Status::Busy {
            pid: 42,
            message: "held".into(),
        };
        assert_eq!(
            serde_json::to_value(&busy)?,
            serde_json::json!({ "state": "busy", "pid": 42, "message": "held" })
        );
        Ok(())
    }
}
