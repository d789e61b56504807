//! The engine's data types, shared by the store, the events and the front ends.
//!
//! Ids serialise as hex strings in human-readable formats (JSON for front ends) and as raw
//! bytes in postcard (store and wire).

use serde::{Deserialize, Serialize};

use std::net::SocketAddr;

use crate::ProtoError;

/// A contact's id: its iroh endpoint id.
pub type ContactId = iroh_base::PublicKey;

/// How to reach an endpoint: what an invite carries and what contacts announce.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct WireAddr {
    /// The home relay, if any.
    pub relay: Option<String>,
    /// Direct socket addresses.
    #[cfg_attr(feature = "specta", specta(type = Vec<String>))]
    pub direct: Vec<SocketAddr>,
}

macro_rules! byte_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(feature = "specta", derive(specta::Type), specta(type = String))]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// A new random id.
            pub fn random() -> Self {
                use rand_core::RngCore;
                let mut b = [0u8; 16];
                rand_core::OsRng.fill_bytes(&mut b);
                Self(b)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({self})", stringify!($name))
            }
        }

        impl std::str::FromStr for $name {
            type Err = ProtoError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                data_encoding::HEXLOWER_PERMISSIVE
                    .decode(s.as_bytes())
                    .ok()
                    .and_then(|v| <[u8; 16]>::try_from(v).ok())
                    .map(Self)
                    .ok_or_else(|| ProtoError::InvalidInput(format!("not an id: {s:?}")))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_string())
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    <[u8; 16]>::deserialize(d).map(Self)
                }
            }
        }
    };
}

byte_id!(
    /// A message's id, chosen by its author, unique across conversations.
    MessageId
);
byte_id!(
    /// A file transfer's id, chosen by the sender.
    TransferId
);
byte_id!(
    /// A conversation's id. For a direct conversation both sides derive the same one from the two
    /// endpoint ids; group conversations will have random ones.
    ConversationId
);

impl ConversationId {
    /// The id of the direct conversation between two endpoints (order-independent).
    pub fn direct(a: &ContactId, b: &ContactId) -> Self {
        use sha2::{Digest, Sha256};
        let (lo, hi) = if a.as_bytes() <= b.as_bytes() {
            (a, b)
        } else {
            (b, a)
        };
        let d = Sha256::new()
            .chain_update(b"ferry/direct-conversation/1")
            .chain_update(lo.as_bytes())
            .chain_update(hi.as_bytes())
            .finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&d[..16]);
        ConversationId(id)
    }
}

/// How [`human_size`] counts: powers of 1024 (KiB, as the CLI shows) or of 1000 (KB, as
/// desktop file managers and the app show).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeUnits {
    /// B, KiB, MiB, GiB, TiB.
    Binary,
    /// B, KB, MB, GB, TB.
    Decimal,
}

/// A disappearing-message timer for people: `5 minutes`, `1 hour`, `1 day`, `2 weeks`, `off`.
pub fn timer_label(secs: u64) -> String {
    let (n, unit) = match secs {
        0 => return "off".into(),
        s if s % 604_800 == 0 => (s / 604_800, "week"),
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A byte count for people, with one decimal: `1.5 GiB`, `3.1 MB`, `999 B`.
pub fn human_size(bytes: u64, units: SizeUnits) -> String {
    let (step, names) = match units {
        SizeUnits::Binary => (1024.0, ["B", "KiB", "MiB", "GiB", "TiB"]),
        SizeUnits::Decimal => (1000.0, ["B", "KB", "MB", "GB", "TB"]),
    };
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= step && unit < names.len() - 1 {
        v /= step;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", names[unit])
    }
}

/// An on/off switch as people and environment variables write it (`on`/`off`, `true`/`false`,
/// `yes`/`no`, `1`/`0`); `None` for anything else.
pub fn parse_switch(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A paired contact as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Endpoint id.
    pub id: ContactId,
    /// Display name they chose.
    pub name: String,
    /// Their X25519 identity key.
    pub x25519: [u8; 32],
    /// Where they were last reachable.
    pub addr: WireAddr,
    /// When the pairing completed (Unix ms).
    pub paired_at: u64,
    /// Whether the user compared safety numbers and marked them verified.
    pub verified: bool,
}

/// How a live connection to a contact runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// A direct UDP path.
    Direct,
    /// Through a relay server.
    Relayed,
}

/// Whether a contact is reachable now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Presence {
    /// A live connection exists.
    Online {
        /// The path it uses.
        path: PathKind,
        /// Round-trip time in milliseconds, when known.
        rtt_ms: Option<u64>,
    },
    /// No live connection.
    Offline,
}

/// A contact as front ends show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ContactView {
    /// Endpoint id.
    #[cfg_attr(feature = "specta", specta(type = String))]
    pub id: ContactId,
    /// Display name.
    pub name: String,
    /// Reachability now.
    pub presence: Presence,
    /// Safety number to compare out of band.
    pub safety_number: String,
    /// Marked verified by the user (also in `state`; kept for front ends that read only this).
    pub verified: bool,
    /// Verified, unverified or blocked (absent from an earlier release's answer: unverified).
    #[serde(default)]
    pub state: TrustState,
    /// Their identity key changed since the user last accepted it: sending waits until the
    /// user accepts the new one (after comparing the new safety number).
    #[serde(default)]
    pub key_changed: bool,
    /// Disappearing messages in this conversation: seconds a message lives after it was sent
    /// or received, 0 when off.
    #[serde(default)]
    pub timer_secs: u64,
    /// Messages received and not yet read.
    pub unread: u64,
    /// Messages waiting in the outbox for this contact.
    pub queued: u64,
}

/// How far the user trusts a contact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum TrustState {
    /// The user compared safety numbers and marked them verified.
    Verified,
    /// Paired, not verified.
    #[default]
    Unverified,
    /// Blocked: nothing it sends is taken, nothing is sent to it.
    Blocked,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// This home sent it.
    Outgoing,
    /// The contact sent it.
    Incoming,
    /// A line this home wrote into the conversation about it (a changed safety number, say):
    /// never sent, never a transfer's direction. Appended, so older records read as before.
    System,
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Outgoing, stored in the outbox, not yet acknowledged.
    Queued,
    /// Outgoing, acknowledged by the contact's device.
    Delivered,
    /// Outgoing, the contact has read it.
    Read,
    /// Incoming, not yet read here.
    Received,
    /// Incoming, read here.
    Seen,
    /// Outgoing, refused by the contact for good (see the log for why).
    Failed,
}

/// A message as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Message {
    /// Author-chosen id.
    pub id: MessageId,
    /// Conversation it belongs to.
    pub conversation: ConversationId,
    /// The other party of the conversation.
    #[cfg_attr(feature = "specta", specta(type = String))]
    pub contact: ContactId,
    /// Per-conversation order on this device.
    pub seq: u64,
    /// Who wrote it.
    pub direction: Direction,
    /// The text.
    pub body: String,
    /// Author's clock (Unix ms).
    pub sent_at: u64,
    /// This device's clock when stored (Unix ms).
    pub stored_at: u64,
    /// Delivery state.
    pub state: MessageState,
    /// The file or folder this message offers, if it is a file card.
    pub transfer: Option<TransferId>,
    /// Who wrote it: this home's own id for an outgoing message, the sender's for an incoming
    /// one (in a direct conversation the same as `contact`; in a group, one of its members).
    #[cfg_attr(feature = "specta", specta(type = String))]
    pub author: ContactId,
}

/// What kind of conversation a [`Conversation`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// Two endpoints; the id is [`ConversationId::direct`] of both.
    Direct,
    /// A group; the id is the group's id (appended: a release before groups cannot read it,
    /// and never wrote one).
    Group,
}

/// A conversation: its own record, so that one with more than two members (a group) is a new
/// kind, not a new store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Conversation {
    /// Its id.
    pub id: ConversationId,
    /// Direct (for now).
    pub kind: ConversationKind,
    /// Everyone in it, this home included, sorted by id.
    #[cfg_attr(feature = "specta", specta(type = Vec<String>))]
    pub members: Vec<ContactId>,
    /// When this home first knew it (Unix ms).
    pub created_at: u64,
}

impl Conversation {
    /// The direct conversation between `me` and `contact`.
    pub fn direct(me: &ContactId, contact: &ContactId, created_at: u64) -> Conversation {
        let mut members = vec![*me, *contact];
        members.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        members.dedup();
        Conversation {
            id: ConversationId::direct(me, contact),
            kind: ConversationKind::Direct,
            members,
            created_at,
        }
    }
}

/// How a group member stands for this home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum MemberKind {
    /// This home.
    You,
    /// A contact you verified.
    Verified,
    /// A contact you paired with and did not verify.
    Contact,
    /// Someone you have not paired with: shown by the name the group gives them, "not
    /// verified by you".
    NotYourContact,
    /// A contact you blocked: their group messages are hidden here (for you only).
    Blocked,
}

/// A member of a group, as front ends show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct GroupMember {
    /// Their endpoint id.
    #[cfg_attr(feature = "specta", specta(type = String))]
    pub id: ContactId,
    /// Your name for them if they are your contact, else the name the group gives them.
    pub name: String,
    /// May add and remove members.
    pub admin: bool,
    /// How they stand for you.
    pub kind: MemberKind,
    /// Online now (only known for your contacts, and you).
    pub online: bool,
}

/// A group conversation, as front ends show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct GroupView {
    /// The group's id (also its conversation's id).
    pub id: ConversationId,
    /// Its name.
    pub name: String,
    /// Its members now, you included while you are one; admins first, then by name.
    pub members: Vec<GroupMember>,
    /// You are still a member (false once you left or were removed).
    pub member: bool,
    /// You are an admin.
    pub admin: bool,
    /// Messages received and not yet read.
    pub unread: u64,
    /// Members online now, you included.
    pub online: u32,
    /// Entries held back until earlier ones arrive (a gap, shown, never skipped).
    pub waiting: u32,
    /// When this home first knew it (Unix ms).
    pub created_at: u64,
}

/// How far one of your messages in a group has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct MessageReceipt {
    /// The message.
    pub id: MessageId,
    /// Members (you not counted) who hold it.
    pub delivered: u32,
    /// Members who have read it.
    pub read: u32,
    /// Members it is for: the others in the group now.
    pub of: u32,
}

/// Where a file transfer is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Offered, waiting for the receiver's answer.
    Offered,
    /// Accepted, not started yet.
    Accepted,
    /// Bytes are moving.
    Transferring,
    /// Interrupted (peer offline, connection lost); resumes by itself.
    Paused,
    /// Verified and saved.
    Done,
    /// Stopped for good by an error.
    Failed,
    /// The receiver said no.
    Declined,
    /// Either side cancelled.
    Cancelled,
}

impl TransferState {
    /// Whether nothing more will happen to the transfer.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TransferState::Done
                | TransferState::Failed
                | TransferState::Declined
                | TransferState::Cancelled
        )
    }
}

impl TransferState {
    /// The state a transfer in `self` moves to on `to`, or why it cannot: the one place the
    /// transfer's life is decided. Final states never change; only an offer can be accepted
    /// or declined; bytes move (or pause, or finish) only once accepted; either side may
    /// cancel, and anything may fail, until the transfer is final.
    pub fn next(self, to: TransferState) -> Result<TransferState, ProtoError> {
        use TransferState::*;
        let allowed = match (self, to) {
            (from, _) if from.is_final() => false,
            (_, Cancelled | Failed) => true,
            (Offered, Accepted | Declined) => true,
            (Accepted | Transferring | Paused, Transferring | Paused | Done) => true,
            _ => false,
        };
        if allowed {
            Ok(to)
        } else {
            Err(ProtoError::InvalidInput(format!(
                "a transfer that is {self:?} cannot become {to:?}"
            )))
        }
    }
}

/// A file or folder sent or received, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Transfer {
    /// Id chosen by the sender.
    pub id: TransferId,
    /// The other side.
    #[cfg_attr(feature = "specta", specta(type = String))]
    pub contact: ContactId,
    /// Sent or received.
    pub direction: Direction,
    /// File or folder name (cleaned, for received ones).
    pub name: String,
    /// Total payload bytes.
    pub size: u64,
    /// BLAKE3 root hash (hex).
    pub hash: String,
    /// A folder (a collection of files) rather than one file.
    pub folder: bool,
    /// Number of files.
    pub files: u32,
    /// Media type guessed from the name.
    pub media_type: String,
    /// Executable, script, installer or shortcut.
    pub dangerous: bool,
    /// State.
    pub state: TransferState,
    /// Payload bytes verified so far.
    pub bytes_done: u64,
    /// Bytes already present when the latest attempt started (resume point).
    pub resumed_from: u64,
    /// Source (sent) or saved location (received).
    pub path: Option<std::path::PathBuf>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Created (Unix ms).
    pub created_at: u64,
    /// Last change (Unix ms).
    pub updated_at: u64,
}

impl Transfer {
    /// A transfer just offered, in either direction, of a file of this media type (a folder's
    /// is `inode/directory`); the caller fills in size, hash, files and path.
    pub fn offered(
        id: TransferId,
        contact: ContactId,
        direction: Direction,
        name: String,
        folder: bool,
        media_type: String,
        dangerous: bool,
    ) -> Transfer {
        let now = now_ms();
        Transfer {
            id,
            contact,
            direction,
            name,
            size: 0,
            hash: String::new(),
            folder,
            files: 0,
            media_type: if folder {
                "inode/directory".into()
            } else {
                media_type
            },
            dangerous,
            state: TransferState::Offered,
            bytes_done: 0,
            resumed_from: 0,
            path: None,
            error: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// This home's public profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Profile {
    /// Endpoint id.
    #[cfg_attr(feature = "specta", specta(type = String))]
    pub id: ContactId,
    /// Display name.
    pub name: String,
    /// Current addresses.
    pub addr: WireAddr,
    /// How this home's data key is kept (`None` from a holder of a release before sealing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<Protection>,
}

/// How a home's data key, which seals everything it stores, is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum Protection {
    /// Wrapped under a passphrase (Argon2id): asked for at every start.
    Passphrase,
    /// In the OS keychain: as safe as the user's login.
    Keychain,
    /// In a file beside the data: anyone who copies the folder can read it.
    File,
}

impl Protection {
    /// What it means, in a sentence for people.
    pub fn describe(self) -> &'static str {
        match self {
            Protection::Passphrase => "protected by a passphrase",
            Protection::Keychain => "kept in the OS keychain, not protected by a passphrase",
            Protection::File => {
                "kept in a file beside the data, NOT protected by a passphrase: anyone who \
                 copies the folder can read it"
            }
        }
    }
}

/// Disk space a home uses, for the settings screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct StorageUsage {
    /// The home folder.
    pub home: std::path::PathBuf,
    /// Contacts, history, sessions, settings (the sled store).
    pub store_bytes: u64,
    /// The blob store: partial downloads and the outboards of offered files (offered files
    /// themselves are referenced in place, not copied).
    pub blobs_bytes: u64,
}

/// Something that happened, for front ends to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A new message arrived.
    MessageReceived {
        /// The message.
        message: Message,
        /// The sender's display name.
        from: String,
    },
    /// A message (or a file offer, with its transfer) was written on this device and queued.
    MessageSent {
        /// The stored message.
        message: Message,
        /// The transfer it offers, for a file offer.
        transfer: Option<Transfer>,
    },
    /// An outgoing message changed state (delivered, read).
    DeliveryChanged {
        /// The message.
        id: MessageId,
        /// The contact it went to.
        #[cfg_attr(feature = "specta", specta(type = String))]
        contact: ContactId,
        /// Its new state.
        state: MessageState,
    },
    /// A contact's reachability changed.
    PresenceChanged {
        /// The contact.
        #[cfg_attr(feature = "specta", specta(type = String))]
        contact: ContactId,
        /// Their display name.
        name: String,
        /// New reachability.
        presence: Presence,
    },
    /// Pairing with someone completed.
    PairingCompleted {
        /// The new contact.
        contact: ContactView,
    },
    /// A contact offers a file or folder.
    TransferOffered {
        /// The offer (see `dangerous`).
        transfer: Transfer,
    },
    /// A transfer changed state.
    TransferChanged {
        /// The transfer as it is now.
        transfer: Transfer,
    },
    /// Bytes moved.
    TransferProgress {
        /// Which transfer.
        id: TransferId,
        /// Bytes done.
        bytes_done: u64,
        /// Bytes in all.
        total: u64,
        /// Current rate, bytes per second.
        rate: u64,
    },
    /// A received transfer is verified and saved.
    TransferCompleted {
        /// Which transfer.
        id: TransferId,
        /// Where it was saved.
        path: std::path::PathBuf,
    },
    /// A transfer failed for good.
    TransferFailed {
        /// Which transfer.
        id: TransferId,
        /// Why.
        reason: String,
    },
    /// A contact's state changed (verified, blocked, unblocked).
    ContactChanged {
        /// The contact as it is now.
        contact: ContactView,
    },
    /// A contact was removed.
    ContactRemoved {
        /// The contact.
        #[cfg_attr(feature = "specta", specta(type = String))]
        contact: ContactId,
        /// Their display name.
        name: String,
    },
    /// Messages of a conversation with disappearing messages reached their time and were
    /// deleted.
    MessagesExpired {
        /// The contact of the conversation.
        #[cfg_attr(feature = "specta", specta(type = String))]
        contact: ContactId,
        /// The deleted messages.
        ids: Vec<MessageId>,
    },
    /// Something from a contact was refused (a quota was reached) and the user should know.
    Notice {
        /// The contact.
        #[cfg_attr(feature = "specta", specta(type = String))]
        contact: ContactId,
        /// Their display name.
        name: String,
        /// What happened, in a sentence.
        text: String,
    },
    /// A scheduled backup was written, or failed (appended: a front end of an earlier release
    /// skips it).
    BackupWritten {
        /// When (Unix ms).
        at_ms: u64,
        /// The file written.
        file: Option<String>,
        /// Why it failed, if it did.
        error: Option<String>,
    },
    /// A group was created, joined, or changed (members, name, admins), or this home left it
    /// (appended with groups).
    GroupChanged {
        /// The group as it is now.
        group: GroupView,
    },
    /// A member of a group said what it holds or has read: the receipts of your messages
    /// there changed (appended with groups).
    GroupReceiptsChanged {
        /// The group.
        group: ConversationId,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransferState::*;

    const ALL: [TransferState; 8] = [
        Offered,
        Accepted,
        Transferring,
        Paused,
        Done,
        Failed,
        Declined,
        Cancelled,
    ];

    /// Every transition a transfer may take; everything else is refused.
    const ALLOWED: &[(TransferState, TransferState)] = &[
        (Offered, Accepted),
        (Offered, Declined),
        (Offered, Cancelled),
        (Offered, Failed),
        (Accepted, Transferring),
        (Accepted, Paused),
        (Accepted, Done),
        (Accepted, Failed),
        (Accepted, Cancelled),
        (Transferring, Transferring),
        (Transferring, Paused),
        (Transferring, Done),
        (Transferring, Failed),
        (Transferring, Cancelled),
        (Paused, Transferring),
        (Paused, Paused),
        (Paused, Done),
        (Paused, Failed),
        (Paused, Cancelled),
    ];

    #[test]
    fn every_transfer_transition_is_allowed_or_refused_as_the_table_says() {
        for from in ALL {
            for to in ALL {
                let want = ALLOWED.contains(&(from, to));
                let got = from.next(to);
                assert_eq!(got.is_ok(), want, "{from:?} -> {to:?}: {got:?}");
                if let Ok(state) = got {
                    assert_eq!(state, to);
                }
            }
        }
        for state in [Done, Failed, Declined, Cancelled] {
            assert!(state.is_final());
            assert!(ALL.iter().all(|to| state.next(*to).is_err()));
        }
    }
}
