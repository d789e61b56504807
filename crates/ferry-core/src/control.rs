//! The control socket: how other processes on this home talk to its holder.
//!
//! One JSON object per line each way. Request: `{"v":1,"id":N,"call":{"method":…,…}}`.
//! Answer: `{"v":1,"id":N,"ok":…}` or `{"v":1,"id":N,"error":{"code":…,"message":…}}`.
//! A `subscribe` call turns the connection into a stream of `{"v":1,"event":…}` lines.
//! The socket is `<home>/control.sock` on Unix (or, when that path is too long for a Unix
//! socket, `ferry-<hash>.sock` in the runtime or temp folder), and the named pipe
//! `\\.\pipe\ferry-<hash>` on Windows.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::backup::{BackupSummary, ScheduleView};
#[cfg(not(windows))]
use crate::home::CONTROL_SOCKET;
use crate::model::{ContactId, ContactView, Event, GroupView, Message, Profile, Transfer};
use crate::vault::Passphrase;
use crate::{Error, Node};

#[cfg(windows)]
mod pipe_access;

/// The control protocol version.
pub const CONTROL_VERSION: u32 = 1;
/// The longest request line accepted.
pub const MAX_LINE: usize = 256 * 1024;

/// One call a front end can make; the same set runs in-process or over the socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Call {
    /// Name, id, addresses.
    Profile,
    /// A new invite.
    Invite {
        /// Lifetime in seconds (default 24 h).
        ttl_secs: Option<u64>,
    },
    /// Pair using someone's invite.
    Pair {
        /// The invite text.
        invite: String,
    },
    /// All contacts.
    Contacts {
        /// Dial everyone first (bounded) so presence is current.
        refresh: bool,
    },
    /// Send a text.
    Send {
        /// Name or id prefix.
        contact: String,
        /// The text.
        text: String,
    },
    /// A page of history.
    History {
        /// Name or id prefix.
        contact: String,
        /// Page before this sequence number.
        before: Option<u64>,
        /// Page size.
        limit: usize,
        /// Mark shown incoming messages read (sends a read receipt).
        mark_read: bool,
    },
    /// Mark a contact verified or not.
    Verify {
        /// Name or id prefix.
        contact: String,
        /// Verified?
        verified: bool,
    },
    /// Outbox size.
    Outbox {
        /// For one contact (name or id prefix), or all.
        contact: Option<String>,
    },
    /// Offer a file or folder.
    SendFile {
        /// Name or id prefix.
        contact: String,
        /// Absolute path of the file or folder.
        path: PathBuf,
    },
    /// All transfers.
    Transfers,
    /// Accept an offer.
    Accept {
        /// Transfer id or prefix.
        id: String,
    },
    /// Decline an offer.
    Decline {
        /// Transfer id or prefix.
        id: String,
    },
    /// Cancel a transfer.
    Cancel {
        /// Transfer id or prefix.
        id: String,
    },
    /// Accept a contact's offers automatically up to a size, or never.
    AutoAccept {
        /// Name or id prefix.
        contact: String,
        /// Largest size accepted automatically; `None` turns it off.
        max_bytes: Option<u64>,
    },
    /// Read or set the download folder.
    Downloads {
        /// The new folder, or `None` to read it.
        dir: Option<PathBuf>,
    },
    /// Stream events on this connection.
    Subscribe,
    /// Read, set or turn off automatic backups.
    BackupSchedule {
        /// The folder to write them to (sets the schedule).
        dir: Option<PathBuf>,
        /// Seconds between two (default one day).
        every_secs: Option<u64>,
        /// How many of the newest to keep (default 7).
        keep: Option<u32>,
        /// Their passphrase (needed to set the schedule).
        passphrase: Option<Passphrase>,
        /// Turn them off.
        #[serde(default)]
        off: bool,
    },
    /// Write a backup of the home to a file, sealed under a passphrase of its own.
    BackupExport {
        /// Where (replaced atomically if it exists).
        path: PathBuf,
        /// The backup's passphrase (not the home's).
        passphrase: Passphrase,
    },
    /// Block a contact.
    Block {
        /// Name or id prefix.
        contact: String,
    },
    /// Unblock a contact.
    Unblock {
        /// Name or id prefix.
        contact: String,
    },
    /// Remove a contact.
    Remove {
        /// Name or id prefix.
        contact: String,
        /// Keep the conversation's messages (they show again if you pair again).
        keep_history: bool,
    },
    /// Accept a contact's changed identity key.
    AcceptKey {
        /// Name or id prefix.
        contact: String,
    },
    /// A contact's safety number with its QR code.
    SafetyNumber {
        /// Name or id prefix.
        contact: String,
    },
    /// Check a safety number scanned from the contact's screen (its `ferry-safety:` text):
    /// marks the contact verified when it matches.
    VerifyScanned {
        /// The scanned text.
        text: String,
    },
    /// Reset the session with a contact (a fresh handshake, no invite).
    Reset {
        /// Name or id prefix.
        contact: String,
    },
    /// Read, or set, the conversation's disappearing-message timer.
    Timer {
        /// Name or id prefix.
        contact: String,
        /// Seconds (0 turns it off); `None` only reads it.
        secs: Option<u64>,
    },
    /// Create a group with contacts; you are its first admin.
    GroupCreate {
        /// The group's name.
        name: String,
        /// Contacts, by name or id prefix.
        members: Vec<String>,
    },
    /// Every group you are or were in.
    Groups,
    /// One group.
    Group {
        /// Name or id prefix.
        group: String,
    },
    /// Add a contact to a group (admins).
    GroupAdd {
        /// Name or id prefix.
        group: String,
        /// Name or id prefix.
        contact: String,
    },
    /// Remove a member from a group (admins).
    GroupRemove {
        /// Name or id prefix.
        group: String,
        /// Your name for them, the group's, or an id prefix.
        member: String,
    },
    /// Make a member of a group an admin (admins).
    GroupAdmin {
        /// Name or id prefix.
        group: String,
        /// Your name for them, the group's, or an id prefix.
        member: String,
    },
    /// Leave a group.
    GroupLeave {
        /// Name or id prefix.
        group: String,
    },
    /// Rename a group.
    GroupRename {
        /// Name or id prefix.
        group: String,
        /// The new name.
        name: String,
    },
}

/// A contact's safety number, as digits and as the QR code the contact scans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyNumber {
    /// The contact (its `safety_number` is the digits).
    pub contact: ContactView,
    /// The QR code's text (`ferry-safety:1:…`).
    pub text: String,
    /// The QR code in block characters.
    pub qr: String,
}

/// A contact that was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// Its id.
    pub contact: ContactId,
    /// Its name.
    pub name: String,
}

/// A new invite: its text and the same as a terminal QR code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteText {
    /// The `ferry:…` text.
    pub invite: String,
    /// Its QR code in block characters.
    pub qr: String,
}

/// How many payloads wait in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Their number.
    pub queued: usize,
}

/// A contact's automatic-accept cap, as just set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoAccept {
    /// The contact.
    pub contact: ContactId,
    /// Largest size accepted automatically; `None` is off.
    pub max_bytes: Option<u64>,
}

/// The download folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downloads {
    /// Where received files are saved.
    pub dir: PathBuf,
}

/// What a [`Call`] answers, typed. On the control socket it crosses as the inner value's
/// JSON (untagged: the same shape version 1 of the control protocol always had); the reader
/// knows which call it made, so [`Answer::from_json`] picks the type back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Answer {
    /// [`Call::Profile`].
    Profile(Profile),
    /// [`Call::Invite`].
    Invite(InviteText),
    /// [`Call::Pair`], [`Call::Verify`], [`Call::Block`], [`Call::Unblock`],
    /// [`Call::VerifyScanned`], [`Call::AcceptKey`], [`Call::Reset`], [`Call::Timer`].
    Contact(ContactView),
    /// [`Call::Contacts`].
    Contacts(Vec<ContactView>),
    /// [`Call::Send`].
    Message(Message),
    /// [`Call::History`].
    History(Vec<Message>),
    /// [`Call::Outbox`].
    Queued(Queued),
    /// [`Call::SendFile`], [`Call::Accept`], [`Call::Decline`], [`Call::Cancel`].
    Transfer(Transfer),
    /// [`Call::Transfers`].
    Transfers(Vec<Transfer>),
    /// [`Call::AutoAccept`].
    AutoAccept(AutoAccept),
    /// [`Call::Downloads`].
    Downloads(Downloads),
    /// [`Call::Subscribe`]: events follow on the connection.
    Subscribed,
    /// [`Call::Remove`].
    Removed(Removed),
    /// [`Call::SafetyNumber`].
    SafetyNumber(SafetyNumber),
    /// [`Call::BackupExport`].
    Backup(BackupSummary),
    /// [`Call::BackupSchedule`]: the schedule now, if any.
    Schedule(Option<ScheduleView>),
    /// [`Call::GroupCreate`], [`Call::Group`], [`Call::GroupAdd`], [`Call::GroupRemove`],
    /// [`Call::GroupAdmin`], [`Call::GroupLeave`], [`Call::GroupRename`].
    Group(GroupView),
    /// [`Call::Groups`].
    Groups(Vec<GroupView>),
}

impl Answer {
    /// Reads the JSON answer to `call` back into its type.
    pub fn from_json(call: &Call, value: Value) -> Result<Answer, Error> {
        fn de<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Error> {
            serde_json::from_value(v).map_err(|e| Error::Protocol(format!("control answer: {e}")))
        }
        Ok(match call {
            Call::Profile => Answer::Profile(de(value)?),
            Call::Invite { .. } => Answer::Invite(de(value)?),
            Call::Pair { .. }
            | Call::Verify { .. }
            | Call::Block { .. }
            | Call::Unblock { .. }
            | Call::VerifyScanned { .. }
            | Call::AcceptKey { .. }
            | Call::Reset { .. }
            | Call::Timer { .. } => Answer::Contact(de(value)?),
            Call::Remove { .. } => Answer::Removed(de(value)?),
            Call::SafetyNumber { .. } => Answer::SafetyNumber(de(value)?),
            Call::Contacts { .. } => Answer::Contacts(de(value)?),
            Call::Send { .. } => Answer::Message(de(value)?),
            Call::History { .. } => Answer::History(de(value)?),
            Call::Outbox { .. } => Answer::Queued(de(value)?),
            Call::SendFile { .. }
            | Call::Accept { .. }
            | Call::Decline { .. }
            | Call::Cancel { .. } => Answer::Transfer(de(value)?),
            Call::Transfers => Answer::Transfers(de(value)?),
            Call::AutoAccept { .. } => Answer::AutoAccept(de(value)?),
            Call::Downloads { .. } => Answer::Downloads(de(value)?),
            Call::Subscribe => Answer::Subscribed,
            Call::BackupExport { .. } => Answer::Backup(de(value)?),
            Call::BackupSchedule { .. } => Answer::Schedule(de(value)?),
            Call::GroupCreate { .. }
            | Call::Group { .. }
            | Call::GroupAdd { .. }
            | Call::GroupRemove { .. }
            | Call::GroupAdmin { .. }
            | Call::GroupLeave { .. }
            | Call::GroupRename { .. } => Answer::Group(de(value)?),
            Call::Groups => Answer::Groups(de(value)?),
        })
    }
}

/// Unwraps an [`Answer`] of the kind a call gives: `let list: Vec<Transfer> =
/// answer.try_into()?`.
macro_rules! answer_into {
    ($($variant:ident => $ty:ty),* $(,)?) => {$(
        impl TryFrom<Answer> for $ty {
            type Error = Error;
            fn try_from(a: Answer) -> Result<$ty, Error> {
                match a {
                    Answer::$variant(v) => Ok(v),
                    other => Err(Error::Protocol(format!(
                        "expected {} in the answer, got {other:?}",
                        stringify!($variant)
                    ))),
                }
            }
        }
    )*};
}

answer_into!(
    Profile => Profile,
    Invite => InviteText,
    Contact => ContactView,
    Contacts => Vec<ContactView>,
    Message => Message,
    History => Vec<Message>,
    Queued => Queued,
    Transfer => Transfer,
    Transfers => Vec<Transfer>,
    AutoAccept => AutoAccept,
    Downloads => Downloads,
    Removed => Removed,
    SafetyNumber => SafetyNumber,
    Backup => BackupSummary,
    Schedule => Option<ScheduleView>,
    Group => GroupView,
    Groups => Vec<GroupView>,
);

/// Runs a call against a node. Every front end goes through here.
pub async fn dispatch(node: &Node, call: Call) -> Result<Answer, Error> {
    Ok(match call {
        Call::Profile => Answer::Profile(node.profile().await?),
        Call::Invite { ttl_secs } => {
            let invite = node
                .create_invite(ttl_secs.map(Duration::from_secs))
                .await?;
            let qr = crate::qr::terminal(&invite)?;
            Answer::Invite(InviteText { invite, qr })
        }
        Call::Pair { invite } => Answer::Contact(node.pair(&invite).await?),
        Call::Contacts { refresh } => {
            if refresh {
                node.refresh_presence(Duration::from_secs(3)).await;
            }
            Answer::Contacts(node.contacts()?)
        }
        Call::Send { contact, text } => Answer::Message(node.send_text(&contact, &text).await?),
        Call::History {
            contact,
            before,
            limit,
            mark_read,
        } => Answer::History(node.history(&contact, before, limit, mark_read).await?),
        Call::Verify { contact, verified } => {
            Answer::Contact(node.set_verified(&contact, verified).await?)
        }
        Call::Outbox { contact } => {
            let id: Option<ContactId> = match contact {
                Some(c) => Some(node.contact(&c)?.id),
                None => None,
            };
            Answer::Queued(Queued {
                queued: node.outbox_len(id.as_ref())?,
            })
        }
        Call::SendFile { contact, path } => {
            Answer::Transfer(node.send_file(&contact, &path).await?)
        }
        Call::Transfers => Answer::Transfers(node.transfers()?),
        Call::Accept { id } => Answer::Transfer(node.accept_transfer(&id).await?),
        Call::Decline { id } => Answer::Transfer(node.decline_transfer(&id).await?),
        Call::Cancel { id } => Answer::Transfer(node.cancel_transfer(&id).await?),
        Call::AutoAccept { contact, max_bytes } => {
            node.set_auto_accept(&contact, max_bytes).await?;
            Answer::AutoAccept(AutoAccept {
                contact: node.contact(&contact)?.id,
                max_bytes,
            })
        }
        Call::Downloads { dir } => {
            if let Some(dir) = dir {
                node.set_downloads_dir(&dir).await?;
            }
            Answer::Downloads(Downloads {
                dir: node.downloads_dir()?,
            })
        }
        Call::Block { contact } => Answer::Contact(node.block(&contact).await?),
        Call::Unblock { contact } => Answer::Contact(node.unblock(&contact).await?),
        Call::Remove {
            contact,
            keep_history,
        } => {
            let c = node.remove_contact(&contact, keep_history).await?;
            Answer::Removed(Removed {
                contact: c.id,
                name: c.name,
            })
        }
        Call::AcceptKey { contact } => Answer::Contact(node.accept_key(&contact).await?),
        Call::SafetyNumber { contact } => {
            let text = node.safety_text(&contact)?;
            Answer::SafetyNumber(SafetyNumber {
                contact: node.contact(&contact)?,
                qr: crate::qr::terminal(&text)?,
                text,
            })
        }
        Call::VerifyScanned { text } => Answer::Contact(node.verify_scanned(&text).await?),
        Call::Reset { contact } => Answer::Contact(node.reset_session(&contact).await?),
        Call::GroupCreate { name, members } => {
            Answer::Group(node.create_group(&name, &members).await?)
        }
        Call::Groups => Answer::Groups(node.groups()?),
        Call::Group { group } => Answer::Group(node.group(&group)?),
        Call::GroupAdd { group, contact } => Answer::Group(node.group_add(&group, &contact).await?),
        Call::GroupRemove { group, member } => {
            Answer::Group(node.group_remove(&group, &member).await?)
        }
        Call::GroupAdmin { group, member } => {
            Answer::Group(node.group_make_admin(&group, &member).await?)
        }
        Call::GroupLeave { group } => Answer::Group(node.group_leave(&group).await?),
        Call::GroupRename { group, name } => Answer::Group(node.group_rename(&group, &name).await?),
        Call::Timer { contact, secs } => Answer::Contact(match secs {
            Some(secs) => node.set_timer(&contact, secs).await?,
            None => node.contact(&contact)?,
        }),
        Call::BackupExport { path, passphrase } => {
            Answer::Backup(node.export_backup(&path, &passphrase, |_, _| {}).await?)
        }
        Call::BackupSchedule {
            dir,
            every_secs,
            keep,
            passphrase,
            off,
        } => Answer::Schedule(match (off, dir) {
            (true, _) => node.set_backup_schedule(None).await?,
            (false, Some(dir)) => {
                let passphrase = passphrase.ok_or_else(|| {
                    Error::InvalidInput("scheduled backups need their passphrase".into())
                })?;
                let every = every_secs.unwrap_or(24 * 60 * 60);
                let schedule = (dir, every, keep.unwrap_or(7), passphrase);
                node.set_backup_schedule(Some(schedule)).await?
            }
            (false, None) => node.backup_schedule()?,
        }),
        Call::Subscribe => {
            return Err(Error::InvalidInput(
                "subscribe works only over the control socket".into(),
            ))
        }
    })
}

#[derive(Serialize, Deserialize)]
struct RequestLine {
    v: u32,
    id: u64,
    call: Call,
}

fn socket_name(home: &Path) -> String {
    use sha2::{Digest, Sha256};
    let canon = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
    let h = Sha256::digest(canon.to_string_lossy().as_bytes());
    format!("ferry-{}", data_encoding::HEXLOWER.encode(&h[..8]))
}

/// Where the control socket of `home` lives.
pub fn socket_path(home: &Path) -> PathBuf {
    #[cfg(windows)]
    {
        PathBuf::from(format!(r"\\.\pipe\{}", socket_name(home)))
    }
    #[cfg(not(windows))]
    {
        let direct = home.join(CONTROL_SOCKET);
        // sockaddr_un holds about 104–108 bytes depending on the platform.
        if direct.as_os_str().len() < 100 {
            return direct;
        }
        let dir = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .unwrap_or_else(private_temp_dir);
        dir.join(format!("{}.sock", socket_name(home)))
    }
}

/// This user's folder for control sockets in the shared temp folder, `ferry-<uid>` (as tmux
/// does): a socket put straight into the temp folder could have its name taken by another user
/// first.
#[cfg(unix)]
fn private_temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("ferry-{}", my_uid()))
}

/// The effective user id of this process.
#[cfg(unix)]
fn my_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Makes sure `dir` is a folder only this user can enter: created 0700, or, if it exists,
/// a real folder (not a link) owned by this user with no access for others.
#[cfg(unix)]
fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("creating {}", dir.display()))(e)),
    }
    let meta =
        std::fs::symlink_metadata(dir).map_err(Error::io(format!("reading {}", dir.display())))?;
    if !meta.is_dir() || meta.uid() != my_uid() || meta.mode() & 0o077 != 0 {
        return Err(Error::InvalidInput(format!(
            "{} must be a folder of this user (uid {}) that nobody else may enter, and it is \
             not: remove it, or set XDG_RUNTIME_DIR",
            dir.display(),
            my_uid()
        )));
    }
    Ok(())
}

/// Serves the control socket of `node`'s home until the node shuts down, so that other
/// processes on this home (the CLI next to the app, scripts) reach it; then removes the socket.
/// Call it right after [`Node::open`], which holds the home's lock.
pub async fn serve(node: &Arc<Node>) -> Result<(), Error> {
    let server = Server::bind(node.home()).await?;
    let home = node.home().to_path_buf();
    let cancel = node.shutdown_token();
    let weak = Arc::downgrade(node);
    node.spawn_task(async move {
        server.run(weak, cancel).await;
        Server::remove_socket(&home);
    });
    Ok(())
}

/// Opens a node and serves its control socket: what a front end that holds a home does (the
/// app, the daemon, a one-off CLI command). Fails, with the node shut down again, if the
/// socket cannot be bound.
pub async fn open_serving(home: &Path, config: crate::Config) -> Result<Arc<Node>, Error> {
    let node = Node::open(home, config).await?;
    if let Err(e) = serve(&node).await {
        node.shutdown().await;
        return Err(e);
    }
    Ok(node)
}

/// The holder's side of the control socket.
#[derive(Debug)]
pub struct Server {
    #[cfg(unix)]
    listener: tokio::net::UnixListener,
    #[cfg(windows)]
    path: PathBuf,
    /// The pipe instance the next client connects to.
    #[cfg(windows)]
    next: tokio::net::windows::named_pipe::NamedPipeServer,
    #[cfg(windows)]
    access: Box<pipe_access::OwnerOnly>,
    #[cfg(windows)]
    me: pipe_access::UserSid,
}

impl Server {
    /// Binds the socket. Call only while holding the home's lock: any socket file left
    /// there is stale and removed.
    pub async fn bind(home: &Path) -> Result<Self, Error> {
        let path = socket_path(home);
        #[cfg(unix)]
        {
            let private = private_temp_dir();
            if path.parent() == Some(private.as_path()) {
                ensure_private_dir(&private)?;
            }
            let _ = std::fs::remove_file(&path);
            let listener = tokio::net::UnixListener::bind(&path)
                .map_err(Error::io(format!("binding {}", path.display())))?;
            crate::home::restrict(&path, 0o600)?;
            Ok(Server { listener })
        }
        #[cfg(windows)]
        {
            // Made here, not when serving starts, so that a pipe that cannot be made (or whose
            // name another process took first) fails the open.
            let fail = |e| Error::io(format!("creating the control pipe {}", path.display()))(e);
            let me = pipe_access::UserSid::of_this_process().map_err(fail)?;
            let access = pipe_access::OwnerOnly::new(&me).map_err(fail)?;
            let next = access.create(&path, true).map_err(fail)?;
            Ok(Server {
                path,
                next,
                access,
                me,
            })
        }
    }

    /// Removes the socket file (at shutdown).
    pub fn remove_socket(home: &Path) {
        #[cfg(unix)]
        let _ = std::fs::remove_file(socket_path(home));
        #[cfg(not(unix))]
        let _ = home;
    }

    /// Serves connections until cancelled.
    pub(crate) async fn run(self, node: Weak<Node>, cancel: CancellationToken) {
        #[cfg(unix)]
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => return,
                a = self.listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => {
                    // The socket is 0600 already; the peer's credentials are checked too, so a
                    // process of another user never reaches a call (root included).
                    match stream.peer_cred() {
                        Ok(c) if c.uid() == my_uid() => {}
                        Ok(c) => {
                            tracing::warn!(
                                uid = c.uid(),
                                "refused a control connection from another user"
                            );
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!("refused a control connection without credentials: {e}");
                            continue;
                        }
                    }
                    let node = node.clone();
                    let cancel = cancel.clone();
                    tokio::spawn(async move {
                        let (r, w) = stream.into_split();
                        serve_connection(node, r, w, cancel).await;
                    });
                }
                Err(e) => tracing::warn!("control socket: {e}"),
            }
        }
        #[cfg(windows)]
        {
            let Server {
                path,
                mut next,
                access,
                me,
            } = self;
            loop {
                let connected = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = next.connect() => r,
                };
                // The next instance is made before this one is handed over, so a client always
                // finds one.
                let instance = match access.create(&path, false) {
                    Ok(fresh) => std::mem::replace(&mut next, fresh),
                    Err(e) => {
                        tracing::error!("control pipe: cannot make another instance: {e}");
                        return;
                    }
                };
                if let Err(e) = connected {
                    tracing::warn!("control pipe: {e}");
                    continue;
                }
                let connected = instance;
                match pipe_access::peer_user(&connected, true) {
                    Ok(user) if user == me => {}
                    Ok(user) => {
                        tracing::warn!(?user, "refused a control connection from another user");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!("refused a control connection of unknown user: {e}");
                        continue;
                    }
                }
                let node = node.clone();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    let (r, w) = tokio::io::split(connected);
                    serve_connection(node, r, w, cancel).await;
                });
            }
        }
    }
}

async fn write_line<W: AsyncWrite + Unpin>(w: &mut W, v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    w.flush().await
}

fn error_value(id: u64, e: &Error) -> Value {
    json!({ "v": CONTROL_VERSION, "id": id, "error": { "code": e.code(), "message": e.to_string() } })
}

async fn serve_connection<R, W>(node: Weak<Node>, r: R, mut w: W, cancel: CancellationToken)
where
    R: tokio::io::AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut lines = BufReader::new(r);
    let mut buf = String::new();
    loop {
        buf.clear();
        let mut limited = tokio::io::AsyncReadExt::take(&mut lines, MAX_LINE as u64);
        let n = tokio::select! {
            _ = cancel.cancelled() => return,
            n = limited.read_line(&mut buf) => n,
        };
        match n {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !buf.ends_with('\n') {
            let _ = write_line(
                &mut w,
                &error_value(0, &Error::InvalidInput("request line too long".into())),
            )
            .await;
            return;
        }
        let req: RequestLine = match serde_json::from_str(buf.trim()) {
            Ok(r) => r,
            Err(e) => {
                let err = Error::InvalidInput(format!("bad request: {e}"));
                if write_line(&mut w, &error_value(0, &err)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let Some(node) = node.upgrade() else {
            let _ = write_line(&mut w, &error_value(req.id, &Error::Closed)).await;
            return;
        };
        if req.v != CONTROL_VERSION {
            let err = Error::InvalidInput(format!("control version {} not spoken here", req.v));
            let _ = write_line(&mut w, &error_value(req.id, &err)).await;
            continue;
        }
        if matches!(req.call, Call::Subscribe) {
            let mut events = node.subscribe();
            drop(node);
            let _ = write_line(
                &mut w,
                &json!({"v": CONTROL_VERSION, "id": req.id, "ok": null}),
            )
            .await;
            loop {
                let ev = tokio::select! {
                    _ = cancel.cancelled() => return,
                    ev = events.recv() => ev,
                };
                match ev {
                    Ok(ev) => {
                        let line = json!({ "v": CONTROL_VERSION, "event": ev });
                        if write_line(&mut w, &line).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("control subscriber lagged by {n} events");
                    }
                    Err(_) => return,
                }
            }
        }
        let answer = match dispatch(&node, req.call).await {
            Ok(v) => json!({ "v": CONTROL_VERSION, "id": req.id, "ok": v }),
            Err(e) => error_value(req.id, &e),
        };
        drop(node);
        if write_line(&mut w, &answer).await.is_err() {
            return;
        }
    }
}

/// Gives the messages in `value` (one message, a list, or an event carrying one) their author
/// if the holder did not send one, as a holder of a release before store schema 2 does: the
/// sender of an incoming message, this home (`me`, asked at most once) for an outgoing one.
fn fill_authors(value: &mut Value, mut me: impl FnMut() -> Option<String>) {
    let mut mine: Option<Option<String>> = None;
    let mut fill = |m: &mut Value| {
        let Some(obj) = m.as_object_mut() else { return };
        if obj.contains_key("author") {
            return;
        }
        let author = if obj.get("direction").and_then(Value::as_str) == Some("incoming") {
            obj.get("contact").cloned()
        } else {
            mine.get_or_insert_with(&mut me).clone().map(Value::String)
        };
        if let Some(author) = author {
            obj.insert("author".into(), author);
        }
    };
    if let Some(list) = value.as_array_mut() {
        list.iter_mut().for_each(&mut fill);
    } else if value.get("direction").is_some() {
        fill(value);
    } else if let Some(m) = value.get_mut("message") {
        fill(m); // an event's message
    }
}

/// A connection to the holder of a home.
pub struct Client {
    reader: BufReader<Box<dyn tokio::io::AsyncRead + Unpin + Send>>,
    writer: Box<dyn AsyncWrite + Unpin + Send>,
    next_id: u64,
    /// The home's own id, read only when a holder of an earlier release sends a message
    /// without its author.
    home: PathBuf,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the holder of `home`, if a process holds it and serves its socket.
    pub async fn connect(home: &Path) -> Result<Option<Client>, Error> {
        let path = socket_path(home);
        // The holder may be starting up or shutting down; wait for its socket or its exit.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if !crate::home::HomeLock::is_held(home) {
                return Ok(None);
            }
            match Self::try_connect(&path, home).await {
                Ok(c) => return Ok(Some(c)),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(Error::Io {
                        context: format!("not talking to the control socket {}", path.display()),
                        source: e,
                    })
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Io {
                        context: format!(
                            "the home is held by another process but its control socket {} does not answer",
                            path.display()
                        ),
                        source: e,
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn try_connect(path: &Path, home: &Path) -> std::io::Result<Client> {
        #[cfg(unix)]
        {
            let s = tokio::net::UnixStream::connect(path).await?;
            // Only a holder running as this user is told anything.
            let server = s.peer_cred()?.uid();
            if server != my_uid() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("it is served by another user (uid {server})"),
                ));
            }
            let (r, w) = s.into_split();
            Ok(Client {
                reader: BufReader::new(Box::new(r)),
                writer: Box::new(w),
                next_id: 1,
                home: home.to_path_buf(),
            })
        }
        #[cfg(windows)]
        {
            let s = tokio::net::windows::named_pipe::ClientOptions::new().open(path)?;
            // Only a holder running as this user is told anything.
            let server = pipe_access::peer_user(&s, false)?;
            if server != pipe_access::UserSid::of_this_process()? {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("it is served by another user ({server:?})"),
                ));
            }
            let (r, w) = tokio::io::split(s);
            Ok(Client {
                reader: BufReader::new(Box::new(r)),
                writer: Box::new(w),
                next_id: 1,
                home: home.to_path_buf(),
            })
        }
    }

    async fn send(&mut self, call: &Call) -> Result<u64, Error> {
        let id = self.next_id;
        self.next_id += 1;
        let line = serde_json::to_value(RequestLine {
            v: CONTROL_VERSION,
            id,
            call: call.clone(),
        })
        .map_err(|e| Error::InvalidInput(e.to_string()))?;
        write_line(&mut self.writer, &line)
            .await
            .map_err(Error::io("writing to the control socket"))?;
        Ok(id)
    }

    async fn read(&mut self) -> Result<Value, Error> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .map_err(Error::io("reading the control socket"))?;
        if n == 0 {
            return Err(Error::Closed);
        }
        serde_json::from_str(&line).map_err(|e| Error::Protocol(format!("control answer: {e}")))
    }

    /// Makes one call and returns its typed answer.
    pub async fn call(&mut self, call: Call) -> Result<Answer, Error> {
        let mut value = self.call_json(&call).await?;
        if matches!(call, Call::Send { .. } | Call::History { .. }) {
            self.fill_authors(&mut value);
        }
        Answer::from_json(&call, value)
    }

    /// Gives the messages in `value` their author where the holder sent none.
    fn fill_authors(&self, value: &mut Value) {
        let home = self.home.clone();
        fill_authors(value, move || {
            crate::identity::load_plain(&home)
                .ok()
                .flatten()
                .map(|i| i.id().to_string())
        });
    }

    /// Makes one call and returns the answer's JSON as it crossed.
    async fn call_json(&mut self, call: &Call) -> Result<Value, Error> {
        let id = self.send(call).await?;
        let answer = self.read().await?;
        if answer["id"].as_u64() != Some(id) {
            return Err(Error::Protocol("control answer for another request".into()));
        }
        if let Some(err) = answer.get("error") {
            return Err(Error::Remote {
                code: err["code"].as_str().unwrap_or("remote").to_string(),
                message: err["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(answer.get("ok").cloned().unwrap_or(Value::Null))
    }

    /// Subscribes and yields events until the holder goes away. An event this version does
    /// not know (from a newer holder) is skipped.
    pub async fn events(mut self) -> Result<impl futures_lite::Stream<Item = Event>, Error> {
        self.call(Call::Subscribe).await?;
        Ok(futures_lite::stream::unfold(self, |mut c| async move {
            loop {
                match c.read().await {
                    Ok(mut v) => match serde_json::from_value::<Event>({
                        let mut event = v["event"].take();
                        c.fill_authors(&mut event);
                        event
                    }) {
                        Ok(ev) => return Some((ev, c)),
                        Err(e) => tracing::debug!("skipped an unknown event: {e}"),
                    },
                    Err(_) => return None,
                }
            }
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The pipe lets this user alone in, its name cannot be taken twice, and a client of this
    /// user gets answers through it.
    #[cfg(windows)]
    #[tokio::test]
    async fn the_control_pipe_is_this_users_alone() {
        let home = tempfile::tempdir().unwrap();
        let server = Server::bind(home.path()).await.unwrap();
        let me = pipe_access::my_sddl().unwrap();
        let sddl = pipe_access::descriptor_of(&server.next).unwrap();
        assert!(sddl.starts_with(&format!("O:{me}D:P")), "{sddl}");
        let aces: Vec<&str> = sddl.split('(').skip(1).collect();
        assert_eq!(aces.len(), 1, "one entry only: {sddl}");
        assert!(
            aces[0].starts_with("A;") && aces[0].ends_with(&format!(";{me})")),
            "{sddl}"
        );

        // Wine (where scripts/windows.sh runs this) does not enforce FIRST_PIPE_INSTANCE.
        if std::env::var_os("FERRY_UNDER_WINE").is_none() {
            let taken = Server::bind(home.path()).await.unwrap_err();
            assert!(
                taken.to_string().contains("creating the control pipe"),
                "{taken}"
            );
        }

        let cancel = CancellationToken::new();
        let serving = tokio::spawn(server.run(Weak::new(), cancel.clone()));
        for _ in 0..3 {
            let mut client = Client::try_connect(&socket_path(home.path()), home.path())
                .await
                .unwrap();
            // The holder is gone (no node), and says so: the call crossed both checks.
            let err = client.call(Call::Profile).await.unwrap_err();
            assert!(matches!(err, Error::Remote { .. }), "{err:?}");
        }
        cancel.cancel();
        serving.await.unwrap();
    }

    /// A holder of the release before schema 2 sends messages without `author`; the client
    /// fills it in, so a newer CLI still reads an older daemon's history and events.
    #[test]
    fn messages_from_an_earlier_holder_get_their_author() {
        let me = iroh::SecretKey::from_bytes(&[1; 32]).public();
        let them = iroh::SecretKey::from_bytes(&[2; 32]).public();
        let old = |direction: &str, n: u8| {
            json!({
                "id": serde_json::to_value(crate::model::MessageId([n; 16])).unwrap(),
                "conversation": serde_json::to_value(crate::model::ConversationId::direct(&me, &them)).unwrap(),
                "contact": them.to_string(),
                "seq": n,
                "direction": direction,
                "body": "hi",
                "sent_at": 1,
                "stored_at": 2,
                "state": if direction == "incoming" { "received" } else { "delivered" },
                "transfer": null,
            })
        };
        let mut asked = 0;
        let mut history = json!([old("incoming", 1), old("outgoing", 2), old("outgoing", 3)]);
        fill_authors(&mut history, || {
            asked += 1;
            Some(me.to_string())
        });
        assert_eq!(asked, 1, "the home's id is read once");
        let Answer::History(page) = Answer::from_json(
            &Call::History {
                contact: "x".into(),
                before: None,
                limit: 10,
                mark_read: false,
            },
            history,
        )
        .unwrap() else {
            panic!("not a history")
        };
        let authors: Vec<_> = page.iter().map(|m| m.author).collect();
        assert_eq!(authors, vec![them, me, me]);
        // An event: the message inside it; a message that has an author keeps it.
        let mut event =
            json!({ "type": "message_received", "message": old("incoming", 4), "from": "Bob" });
        fill_authors(&mut event, || None);
        assert!(matches!(
            serde_json::from_value::<Event>(event).unwrap(),
            Event::MessageReceived { message, .. } if message.author == them
        ));
        let mut new = old("outgoing", 5);
        new["author"] = json!(them.to_string());
        fill_authors(&mut new, || panic!("not needed"));
        assert_eq!(new["author"], json!(them.to_string()));
    }

    /// The JSON of an answer is what version 1 of the control protocol sent, so a CLI and a
    /// holder of different releases still understand each other.
    #[test]
    fn answers_cross_in_the_version_1_shape_and_come_back_typed() {
        let cases = [
            (
                Call::Outbox { contact: None },
                Answer::Queued(Queued { queued: 3 }),
                json!({ "queued": 3 }),
            ),
            (
                Call::Invite { ttl_secs: None },
                Answer::Invite(InviteText {
                    invite: "ferry:x".into(),
                    qr: "▀".into(),
                }),
                json!({ "invite": "ferry:x", "qr": "▀" }),
            ),
            (
                Call::Downloads { dir: None },
                Answer::Downloads(Downloads {
                    dir: PathBuf::from("/d"),
                }),
                json!({ "dir": "/d" }),
            ),
            (Call::Transfers, Answer::Transfers(Vec::new()), json!([])),
            (Call::Subscribe, Answer::Subscribed, Value::Null),
        ];
        for (call, answer, wire) in cases {
            assert_eq!(serde_json::to_value(&answer).unwrap(), wire);
            assert_eq!(Answer::from_json(&call, wire).unwrap(), answer);
        }
    }

    #[test]
    fn an_answer_of_the_wrong_kind_is_a_protocol_error() {
        let e = Answer::from_json(&Call::Profile, json!({ "queued": 1 })).unwrap_err();
        assert_eq!(e.code(), "protocol");
        let e = Vec::<Transfer>::try_from(Answer::Queued(Queued { queued: 1 })).unwrap_err();
        assert_eq!(e.code(), "protocol");
    }
}
