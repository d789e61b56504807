//! The app's hold on the home: it opens the same `ferry_core::Node` a `ferry daemon` would
//! (taking the home's lock and serving its control socket, so the CLI works against the running
//! app), forwards every engine event to the UI, and exposes the engine's calls.
//!
//! Every capability goes through [`ferry_core::control::dispatch`], the one entry point the CLI
//! uses too, so the shell holds no logic of its own.

use std::path::PathBuf;
use std::sync::Arc;

use ferry_core::control::{self, Call};
use ferry_core::{Config, Node};
use serde::Serialize;
use tauri::{AppHandle, Emitter, Manager};
use tokio::sync::RwLock;

/// The event channel the UI listens on; the payload is a `ferry_core::Event`.
pub const EVENT_CHANNEL: &str = "ferry://event";

/// An error as the UI sees it: a stable code to branch on and a message to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// Still opening the home.
    Starting,
    /// First start: the user picks a display name.
    NeedsName,
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
    Failed(CommandError),
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

    /// The open node, for shutdown.
    pub async fn node(&self) -> Option<Arc<Node>> {
        self.node.read().await.clone()
    }
}

impl Default for AppState {
    fn default() -> Self {
        Self::new()
    }
}

/// Opens the home if it has an identity; called at start and after the first-start name.
pub async fn open(app: AppHandle) {
    let state = app.state::<AppState>();
    let status = match &state.home {
        Err(e) => Status::Failed(e.clone()),
        Ok(home) if !Node::is_initialized(home) => Status::NeedsName,
        Ok(home) => match Node::open(home, Config::default()).await {
            Ok(node) => {
                forward_events(&app, &node);
                let id = node.id().to_string();
                *state.node.write().await = Some(node);
                Status::Ready { id }
            }
            Err(e @ ferry_core::Error::HomeBusy { pid, .. }) => Status::Busy {
                pid,
                message: e.to_string(),
            },
            Err(e) => Status::Failed(e.into()),
        },
    };
    tracing::info!(?status, "home");
    *state.status.write().await = status;
}

fn forward_events(app: &AppHandle, node: &Node) {
    let mut events = node.subscribe();
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ev) => {
                    if let Err(e) = app.emit(EVENT_CHANNEL, &ev) {
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

/// Where the app stands with its home.
#[tauri::command]
pub async fn status(state: tauri::State<'_, AppState>) -> Result<Status, CommandError> {
    Ok(state.status.read().await.clone())
}

/// First start: creates the identity with the chosen display name, then opens the home.
#[tauri::command]
pub async fn create_profile(
    app: AppHandle,
    state: tauri::State<'_, AppState>,
    name: String,
) -> Result<Status, CommandError> {
    let home = state.home.clone()?;
    Node::init(&home, &name)?;
    open(app).await;
    Ok(state.status.read().await.clone())
}

/// Runs one engine call (the same set the CLI and the control socket use).
#[tauri::command]
pub async fn call(
    state: tauri::State<'_, AppState>,
    call: Call,
) -> Result<serde_json::Value, CommandError> {
    let node = state
        .node
        .read()
        .await
        .clone()
        .ok_or_else(|| CommandError {
            code: "not_ready".into(),
            message: "Ferry is not running on this computer's home yet".into(),
        })?;
    Ok(control::dispatch(&node, call).await?)
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
