//! Records the store keeps that are not model types: what waits in the outbox, and the
//! invites this home issued. Their postcard encoding is the store format (see
//! `ferry_core::store`), so they are decoded here, where the fuzz targets reach them.

use serde::{Deserialize, Serialize};

use crate::e2e::Envelope;
use crate::model::{
    ContactId, ConversationId, Direction, Message, MessageId, MessageState, TransferId,
};

/// What an outbox item carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutboxKind {
    /// Carries a message shown in the conversation (text, file offer); it is in `messages`.
    Message,
    /// A receipt or a transfer update: nothing shown by itself.
    Control,
}

/// A sealed payload waiting to be acknowledged by its recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Recipient.
    pub contact: ContactId,
    /// Id bound into the envelope's associated data.
    pub message_id: MessageId,
    /// The sealed payload.
    pub envelope: Envelope,
    /// What it is.
    pub kind: OutboxKind,
    /// When it was queued (Unix ms).
    pub queued_at: u64,
}

/// A conversation's disappearing-message timer, as the `settings` tree keeps it
/// (`timer/<contact id>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerSetting {
    /// Seconds a message lives after it was sent or received; 0 is off.
    pub secs: u64,
    /// When it was set (the setter's clock, Unix ms): of two changes, the later one holds.
    pub set_at: u64,
}

/// An invite this home issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRecord {
    /// Expiry (Unix ms).
    pub expires_at: u64,
    /// Whether someone already paired with it.
    pub used: bool,
}

/// A message as store schema 1 kept it: without its author. Read only by the migration to
/// schema 2, which adds the author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageV1 {
    /// Author-chosen id.
    pub id: MessageId,
    /// Conversation it belongs to.
    pub conversation: ConversationId,
    /// The other party.
    pub contact: ContactId,
    /// Order on this device.
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
    /// The file or folder this message offers.
    pub transfer: Option<TransferId>,
}

impl MessageV1 {
    /// The schema-2 message: schema 1 had only direct conversations, so the author is `me` for
    /// an outgoing message and the other party for an incoming one.
    pub fn upgrade(self, me: &ContactId) -> Message {
        let author = match self.direction {
            Direction::Outgoing | Direction::System => *me,
            Direction::Incoming => self.contact,
        };
        Message {
            id: self.id,
            conversation: self.conversation,
            contact: self.contact,
            seq: self.seq,
            direction: self.direction,
            body: self.body,
            sent_at: self.sent_at,
            stored_at: self.stored_at,
            state: self.state,
            transfer: self.transfer,
            author,
        }
    }
}
