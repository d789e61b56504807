//! Records the store keeps that are not model types: what waits in the outbox, and the
//! invites this home issued. Their postcard encoding is the store format (see
//! `ferry_core::store`), so they are decoded here, where the fuzz targets reach them.

use serde::{Deserialize, Serialize};

use crate::e2e::Envelope;
use crate::model::{ContactId, MessageId};

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

/// An invite this home issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteRecord {
    /// Expiry (Unix ms).
    pub expires_at: u64,
    /// Whether someone already paired with it.
    pub used: bool,
}
