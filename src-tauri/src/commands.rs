//! One Tauri command per `ferry_core::Node` capability. Each is a thin call into the engine;
//! errors cross as `{ code, message }` ([`CommandError`]). The TypeScript side of every
//! signature is generated into `ui/src/bindings.ts` (see [`crate::specta_builder`]).

use std::path::PathBuf;
use std::sync::Arc;

use ferry_core::backup::{BackupSummary, ScheduleView};
use ferry_core::vault::Passphrase;
use ferry_core::{
    ContactView, GroupView, Message, MessageId, MessageReceipt, NetSettings, Node, Profile,
    Protection, RelayChoice, StorageUsage, Transfer,
};
use serde::{Deserialize, Serialize};
use specta::Type;
use tauri::{AppHandle, State};
use tauri_plugin_opener::OpenerExt;

use crate::engine::{AppState, CommandError, Status};

type Result<T> = std::result::Result<T, CommandError>;

async fn node(state: &State<'_, AppState>) -> Result<Arc<Node>> {
    state.node().await.ok_or_else(|| CommandError {
        code: "not_ready".into(),
        message: "Ferry has not opened its data folder yet".into(),
    })
}

/// Where the app stands with its home.
#[tauri::command]
#[specta::specta]
pub async fn status(state: State<'_, AppState>) -> Result<Status> {
    Ok(state.status().await)
}

/// First start: creates the identity with the chosen display name (its data key under
/// `passphrase` if one is given, else in the OS keychain or a file), then opens the home.
#[tauri::command]
#[specta::specta]
pub async fn create_profile(
    app: AppHandle,
    state: State<'_, AppState>,
    name: String,
    passphrase: Option<String>,
) -> Result<Status> {
    let home = state.home()?;
    let passphrase = passphrase.filter(|p| !p.is_empty()).map(Passphrase::from);
    let net = NetSettings::default();
    Node::init_protected(&home, &name, &net, passphrase.as_ref())?;
    match passphrase {
        Some(p) => crate::engine::unlock(&app, p).await,
        None => {
            crate::engine::open(app).await;
            Ok(state.status().await)
        }
    }
}

/// How far a backup being written is.
#[derive(Debug, Clone, Serialize, Deserialize, Type, tauri_specta::Event)]
pub struct BackupProgress {
    /// Entries written.
    pub done: u64,
    /// Entries in all (about: the store may change meanwhile).
    pub total: u64,
}

/// Writes a backup of this home to `path`, sealed under `passphrase` (the backup's own),
/// emitting [`BackupProgress`] as it goes.
#[tauri::command]
#[specta::specta]
pub async fn export_backup(
    app: AppHandle,
    state: State<'_, AppState>,
    path: PathBuf,
    passphrase: String,
) -> Result<BackupSummary> {
    let node = node(&state).await?;
    let progress = move |done, total| {
        use tauri_specta::Event as _;
        let _ = BackupProgress { done, total }.emit(&app);
    };
    Ok(node
        .export_backup(&path, &Passphrase::from(passphrase), progress)
        .await?)
}

/// First start: restores a backup into this (empty) home, its data key kept under
/// `store_passphrase` if one is given, then opens it. Every session is reset when its contact
/// is next online.
#[tauri::command]
#[specta::specta]
pub async fn import_backup(
    app: AppHandle,
    state: State<'_, AppState>,
    path: PathBuf,
    passphrase: String,
    store_passphrase: Option<String>,
) -> Result<Status> {
    let home = state.home()?;
    let store_passphrase = store_passphrase
        .filter(|p| !p.is_empty())
        .map(Passphrase::from);
    let stored = store_passphrase.clone();
    tokio::task::spawn_blocking(move || {
        ferry_core::backup::import(&path, &home, &Passphrase::from(passphrase), stored.as_ref())
    })
    .await
    .map_err(|e| CommandError {
        code: "internal".into(),
        message: e.to_string(),
    })??;
    match store_passphrase {
        Some(p) => crate::engine::unlock(&app, p).await,
        None => {
            crate::engine::open(app).await;
            Ok(state.status().await)
        }
    }
}

/// The automatic backups, if set.
#[tauri::command]
#[specta::specta]
pub async fn backup_schedule(state: State<'_, AppState>) -> Result<Option<ScheduleView>> {
    Ok(node(&state).await?.backup_schedule()?)
}

/// Sets automatic backups into `dir` every `every_secs`, keeping `keep`, under `passphrase`;
/// without `dir`, turns them off.
#[tauri::command]
#[specta::specta]
pub async fn set_backup_schedule(
    state: State<'_, AppState>,
    dir: Option<PathBuf>,
    every_secs: u64,
    keep: u32,
    passphrase: Option<String>,
) -> Result<Option<ScheduleView>> {
    let node = node(&state).await?;
    let schedule = dir.map(|dir| {
        let passphrase = Passphrase::from(passphrase.unwrap_or_default());
        (dir, every_secs, keep, passphrase)
    });
    Ok(node.set_backup_schedule(schedule).await?)
}

/// Opens a home whose data key is kept under a passphrase. A wrong passphrase is an error
/// (`wrong_passphrase`, or `unlock_wait` after several in a row) and nothing changes.
#[tauri::command]
#[specta::specta]
pub async fn unlock(app: AppHandle, passphrase: String) -> Result<Status> {
    crate::engine::unlock(&app, Passphrase::from(passphrase)).await
}

/// Sets, changes or removes the passphrase over the data key: `current` is needed when one is
/// set; without `next` the key goes to the OS keychain, or else a file. Only the key file
/// changes. Returns how the key is kept now.
#[tauri::command]
#[specta::specta]
pub async fn change_passphrase(
    state: State<'_, AppState>,
    current: Option<String>,
    next: Option<String>,
) -> Result<Protection> {
    let home = state.home()?;
    let current = current.filter(|p| !p.is_empty()).map(Passphrase::from);
    let next = next.filter(|p| !p.is_empty()).map(Passphrase::from);
    // Argon2id takes a moment: off the async threads.
    let done = tokio::task::spawn_blocking(move || {
        ferry_core::vault::change_passphrase(&home, current.as_ref(), next.as_ref())
    })
    .await
    .map_err(|e| CommandError {
        code: "internal".into(),
        message: e.to_string(),
    })??;
    Ok(done)
}

/// Name, id and current addresses of this device.
#[tauri::command]
#[specta::specta]
pub async fn profile(state: State<'_, AppState>) -> Result<Profile> {
    Ok(node(&state).await?.profile().await?)
}

/// Changes the display name.
#[tauri::command]
#[specta::specta]
pub async fn set_name(state: State<'_, AppState>, name: String) -> Result<()> {
    Ok(node(&state).await?.set_name(&name).await?)
}

/// A fresh single-use invite, as text and as a QR code.
#[derive(Debug, Clone, Serialize, Type)]
pub struct Invite {
    /// The `ferry:…` line to paste.
    pub text: String,
    /// The same invite as an SVG QR code.
    pub svg: String,
}

/// Issues a single-use invite (valid 24 hours).
#[tauri::command]
#[specta::specta]
pub async fn create_invite(state: State<'_, AppState>) -> Result<Invite> {
    let text = node(&state).await?.create_invite(None).await?;
    let svg = ferry_core::qr::svg(&text).map_err(ferry_core::Error::from)?;
    Ok(Invite { text, svg })
}

/// Runs picture decoding off the async threads.
async fn decode<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, ferry_core::Error> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CommandError {
            code: "internal".into(),
            message: format!("reading the picture failed: {e}"),
        })?
        .map_err(CommandError::from)
}

/// Reads an invite from a picture of its QR code (a screenshot or photo).
#[tauri::command]
#[specta::specta]
pub async fn read_invite_image(path: PathBuf) -> Result<String> {
    decode(move || ferry_core::qr::read_invite_image(&path)).await
}

/// Reads an invite from a picture in memory, base64-encoded: a screenshot pasted from the
/// clipboard or a camera frame.
#[tauri::command]
#[specta::specta]
pub async fn read_invite_data(base64: String) -> Result<String> {
    decode(move || Ok(ferry_core::qr::read_invite_bytes(&picture_data(&base64)?)?)).await
}

/// A picture sent by the UI as base64.
fn picture_data(base64: &str) -> std::result::Result<Vec<u8>, ferry_core::Error> {
    data_encoding::BASE64
        .decode(base64.trim().as_bytes())
        .map_err(|e| ferry_core::Error::InvalidInput(format!("not a picture: {e}")))
}

/// Pairs with the issuer of an invite.
#[tauri::command]
#[specta::specta]
pub async fn pair(state: State<'_, AppState>, invite: String) -> Result<ContactView> {
    Ok(node(&state).await?.pair(invite.trim()).await?)
}

/// All contacts with presence, unread and queued counts.
#[tauri::command]
#[specta::specta]
pub async fn contacts(state: State<'_, AppState>) -> Result<Vec<ContactView>> {
    Ok(node(&state).await?.contacts()?)
}

/// Marks a contact verified (after comparing safety numbers) or not.
#[tauri::command]
#[specta::specta]
pub async fn set_verified(
    state: State<'_, AppState>,
    contact: String,
    verified: bool,
) -> Result<ContactView> {
    Ok(node(&state).await?.set_verified(&contact, verified).await?)
}

/// A contact's safety number as a QR code the contact can scan (or open as a picture).
#[derive(Debug, Clone, Serialize, Type)]
pub struct SafetyQr {
    /// The QR code's text (`ferry-safety:1:…`).
    pub text: String,
    /// The same as an SVG QR code.
    pub svg: String,
}

/// This side's safety number with a contact, as a QR code.
#[tauri::command]
#[specta::specta]
pub async fn safety_qr(state: State<'_, AppState>, contact: String) -> Result<SafetyQr> {
    let text = node(&state).await?.safety_text(&contact)?;
    let svg = ferry_core::qr::svg(&text).map_err(ferry_core::Error::from)?;
    Ok(SafetyQr { text, svg })
}

/// Checks a safety number read from a picture of the contact's QR code (a file): marks the
/// contact verified when it matches, and is an error, changing nothing, when it does not.
#[tauri::command]
#[specta::specta]
pub async fn verify_scanned_image(
    state: State<'_, AppState>,
    path: PathBuf,
) -> Result<ContactView> {
    let text = decode(move || ferry_core::qr::read_safety_image(&path)).await?;
    Ok(node(&state).await?.verify_scanned(&text).await?)
}

/// Like [`verify_scanned_image`], from a picture in memory, base64-encoded (a pasted
/// screenshot or a camera frame).
#[tauri::command]
#[specta::specta]
pub async fn verify_scanned_data(
    state: State<'_, AppState>,
    base64: String,
) -> Result<ContactView> {
    let text =
        decode(move || Ok(ferry_core::qr::read_safety_bytes(&picture_data(&base64)?)?)).await?;
    Ok(node(&state).await?.verify_scanned(&text).await?)
}

/// Accepts a contact's changed safety number (their new identity key): sending resumes.
#[tauri::command]
#[specta::specta]
pub async fn accept_key(state: State<'_, AppState>, contact: String) -> Result<ContactView> {
    Ok(node(&state).await?.accept_key(&contact).await?)
}

/// Resets the session with a contact (a fresh handshake over the keys both hold; they must be
/// online). What waits for them goes out after it.
#[tauri::command]
#[specta::specta]
pub async fn reset_session(state: State<'_, AppState>, contact: String) -> Result<ContactView> {
    Ok(node(&state).await?.reset_session(&contact).await?)
}

/// Sets disappearing messages with a contact: 0 (off), or 300, 3600, 86400 or 604800 seconds.
#[tauri::command]
#[specta::specta]
pub async fn set_timer(
    state: State<'_, AppState>,
    contact: String,
    secs: u64,
) -> Result<ContactView> {
    Ok(node(&state).await?.set_timer(&contact, secs).await?)
}

/// Blocks a contact.
#[tauri::command]
#[specta::specta]
pub async fn block_contact(state: State<'_, AppState>, contact: String) -> Result<ContactView> {
    Ok(node(&state).await?.block(&contact).await?)
}

/// Unblocks a contact.
#[tauri::command]
#[specta::specta]
pub async fn unblock_contact(state: State<'_, AppState>, contact: String) -> Result<ContactView> {
    Ok(node(&state).await?.unblock(&contact).await?)
}

/// Removes a contact, with its history unless `keep_history`.
#[tauri::command]
#[specta::specta]
pub async fn remove_contact(
    state: State<'_, AppState>,
    contact: String,
    keep_history: bool,
) -> Result<()> {
    node(&state)
        .await?
        .remove_contact(&contact, keep_history)
        .await?;
    Ok(())
}

/// Every group this home is or was in, newest first.
#[tauri::command]
#[specta::specta]
pub async fn groups(state: State<'_, AppState>) -> Result<Vec<GroupView>> {
    Ok(node(&state).await?.groups()?)
}

/// Creates a group with these contacts (ids); this home is its first admin.
#[tauri::command]
#[specta::specta]
pub async fn create_group(
    state: State<'_, AppState>,
    name: String,
    members: Vec<String>,
) -> Result<GroupView> {
    Ok(node(&state).await?.create_group(&name, &members).await?)
}

/// Adds a contact to a group (admins).
#[tauri::command]
#[specta::specta]
pub async fn group_add(
    state: State<'_, AppState>,
    group: String,
    contact: String,
) -> Result<GroupView> {
    Ok(node(&state).await?.group_add(&group, &contact).await?)
}

/// Removes a member from a group (admins).
#[tauri::command]
#[specta::specta]
pub async fn group_remove(
    state: State<'_, AppState>,
    group: String,
    member: String,
) -> Result<GroupView> {
    Ok(node(&state).await?.group_remove(&group, &member).await?)
}

/// Renames a group.
#[tauri::command]
#[specta::specta]
pub async fn group_rename(
    state: State<'_, AppState>,
    group: String,
    name: String,
) -> Result<GroupView> {
    Ok(node(&state).await?.group_rename(&group, &name).await?)
}

/// How far your messages in a group have got (delivered to and read by how many members).
#[tauri::command]
#[specta::specta]
pub async fn group_receipts(
    state: State<'_, AppState>,
    group: String,
    ids: Vec<String>,
) -> Result<Vec<MessageReceipt>> {
    let ids = ids
        .iter()
        .map(|i| i.parse())
        .collect::<std::result::Result<Vec<MessageId>, _>>()
        .map_err(ferry_core::Error::from)?;
    Ok(node(&state).await?.group_receipts(&group, &ids)?)
}

/// Leaves a group.
#[tauri::command]
#[specta::specta]
pub async fn group_leave(state: State<'_, AppState>, group: String) -> Result<GroupView> {
    Ok(node(&state).await?.group_leave(&group).await?)
}

/// Sends a text message; it is stored before this returns and delivered in the background.
#[tauri::command]
#[specta::specta]
pub async fn send_text(
    state: State<'_, AppState>,
    contact: String,
    text: String,
) -> Result<Message> {
    Ok(node(&state).await?.send_text(&contact, &text).await?)
}

/// A page of the conversation, oldest first, ending before `before_seq` (or at the newest).
/// With `mark_read`, incoming messages on the page become read and the sender is told.
#[tauri::command]
#[specta::specta]
pub async fn history(
    app: AppHandle,
    state: State<'_, AppState>,
    contact: String,
    before_seq: Option<u64>,
    limit: u32,
    mark_read: bool,
) -> Result<Vec<Message>> {
    let node = node(&state).await?;
    let page = node
        .history(&contact, before_seq, limit as usize, mark_read)
        .await?;
    if mark_read {
        crate::desktop::refresh_unread(&app, &node);
    }
    Ok(page)
}

/// What happened to one path of a drop or a file-dialog pick.
#[derive(Debug, Clone, Serialize, Type)]
pub struct SendFailure {
    /// The path as given.
    pub path: PathBuf,
    /// Why it was not offered.
    pub error: CommandError,
}

/// The outcome of offering several paths: the offers made and the paths refused.
#[derive(Debug, Clone, Default, Serialize, Type)]
pub struct SendReport {
    /// One offer per file or folder that went out.
    pub sent: Vec<Transfer>,
    /// The paths that could not be offered, with the reason.
    pub failed: Vec<SendFailure>,
}

/// Offers files and folders to a contact: what a drop on the conversation and the "Send
/// files" dialog both call. Each path is offered on its own; one bad path does not stop the rest.
#[tauri::command]
#[specta::specta]
pub async fn send_paths(
    state: State<'_, AppState>,
    contact: String,
    paths: Vec<PathBuf>,
) -> Result<SendReport> {
    let node = node(&state).await?;
    let mut report = SendReport::default();
    for path in paths {
        match node.send_file(&contact, &path).await {
            Ok(t) => report.sent.push(t),
            Err(e) => report.failed.push(SendFailure {
                path,
                error: e.into(),
            }),
        }
    }
    Ok(report)
}

/// Every transfer (the UI orders them).
#[tauri::command]
#[specta::specta]
pub async fn transfers(state: State<'_, AppState>) -> Result<Vec<Transfer>> {
    Ok(node(&state).await?.transfers()?)
}

/// Accepts an offered file: checks free space, then downloads in the background.
#[tauri::command]
#[specta::specta]
pub async fn accept_transfer(state: State<'_, AppState>, id: String) -> Result<Transfer> {
    Ok(node(&state).await?.accept_transfer(&id).await?)
}

/// Declines an offered file.
#[tauri::command]
#[specta::specta]
pub async fn decline_transfer(state: State<'_, AppState>, id: String) -> Result<Transfer> {
    Ok(node(&state).await?.decline_transfer(&id).await?)
}

/// Cancels a transfer in either direction.
#[tauri::command]
#[specta::specta]
pub async fn cancel_transfer(state: State<'_, AppState>, id: String) -> Result<Transfer> {
    Ok(node(&state).await?.cancel_transfer(&id).await?)
}

/// The path of a finished transfer: the received copy, or the original that was sent.
async fn transfer_path(state: &State<'_, AppState>, id: &str) -> Result<PathBuf> {
    let t = node(state).await?.transfer(id)?;
    t.path.ok_or_else(|| CommandError {
        code: "not_saved".into(),
        message: format!("{} has not been saved yet", t.name),
    })
}

/// Opens a finished transfer with the system's default application. Only paths the engine
/// recorded for a transfer can be opened this way.
#[tauri::command]
#[specta::specta]
pub async fn open_transfer(app: AppHandle, state: State<'_, AppState>, id: String) -> Result<()> {
    let path = transfer_path(&state, &id).await?;
    app.opener()
        .open_path(path.to_string_lossy(), None::<&str>)
        .map_err(|e| CommandError {
            code: "open_failed".into(),
            message: format!("could not open {}: {e}", path.display()),
        })
}

/// Shows a finished transfer in the file manager.
#[tauri::command]
#[specta::specta]
pub async fn reveal_transfer(app: AppHandle, state: State<'_, AppState>, id: String) -> Result<()> {
    let path = transfer_path(&state, &id).await?;
    app.opener()
        .reveal_item_in_dir(&path)
        .map_err(|e| CommandError {
            code: "open_failed".into(),
            message: format!("could not show {}: {e}", path.display()),
        })
}

/// Files from this contact up to this many bytes are accepted without asking (None: ask).
#[tauri::command]
#[specta::specta]
pub async fn auto_accept(state: State<'_, AppState>, contact: String) -> Result<Option<u64>> {
    Ok(node(&state).await?.auto_accept(&contact)?)
}

/// Sets or clears the auto-accept size for a contact.
#[tauri::command]
#[specta::specta]
pub async fn set_auto_accept(
    state: State<'_, AppState>,
    contact: String,
    max_bytes: Option<u64>,
) -> Result<()> {
    Ok(node(&state)
        .await?
        .set_auto_accept(&contact, max_bytes)
        .await?)
}

/// Where received files are saved.
#[tauri::command]
#[specta::specta]
pub async fn downloads_dir(state: State<'_, AppState>) -> Result<PathBuf> {
    Ok(node(&state).await?.downloads_dir()?)
}

/// Changes where received files are saved.
#[tauri::command]
#[specta::specta]
pub async fn set_downloads_dir(state: State<'_, AppState>, dir: PathBuf) -> Result<()> {
    Ok(node(&state).await?.set_downloads_dir(&dir).await?)
}

/// Network settings: what runs now and what the next start will use.
#[derive(Debug, Clone, Serialize, Deserialize, Type)]
pub struct NetView {
    /// What the running node uses.
    pub running: NetSettings,
    /// What is stored for the next start.
    pub stored: NetSettings,
}

/// The network settings.
#[tauri::command]
#[specta::specta]
pub async fn net_settings(state: State<'_, AppState>) -> Result<NetView> {
    let node = node(&state).await?;
    Ok(NetView {
        running: node.net_settings().clone(),
        stored: node.stored_net_settings()?,
    })
}

/// Stores relay and LAN-discovery choices; returns true when a restart is needed to apply them.
#[tauri::command]
#[specta::specta]
pub async fn set_net_settings(
    state: State<'_, AppState>,
    relay: String,
    local_discovery: bool,
) -> Result<bool> {
    let relay: RelayChoice = relay.trim().parse()?;
    Ok(node(&state)
        .await?
        .set_net_settings(relay, local_discovery)
        .await?)
}

/// Disk space the data folder uses.
#[tauri::command]
#[specta::specta]
pub async fn storage(state: State<'_, AppState>) -> Result<StorageUsage> {
    Ok(node(&state).await?.storage())
}

/// Releases blob data no live transfer needs; returns how many sets were released.
#[tauri::command]
#[specta::specta]
pub async fn clean_storage(state: State<'_, AppState>) -> Result<u32> {
    Ok(node(&state).await?.clean_storage().await?)
}
