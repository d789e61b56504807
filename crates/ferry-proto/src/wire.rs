//! What crosses the network: ALPNs, versioned frames, and the length-prefixed framing with a
//! hard size cap checked before anything is allocated.
//!
//! Every frame is a 4-byte big-endian length followed by a postcard body. Bodies are enums whose
//! first variant index doubles as a version tag: new variants are added at the end.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::e2e::Envelope;
use crate::group::{EntryHash, KeyShare, SignedEntry, SignedReceipt};
use crate::model::TransferState;
pub use crate::model::WireAddr;

/// ALPN of the first chat protocol: one delivery per request. Still spoken with peers of
/// earlier releases, and still offered when dialling.
pub const ALPN_CHAT: &[u8] = b"ferry/chat/1";
/// ALPN of the chat protocol with batches: the same frames as `ferry/chat/1`, plus
/// [`ChatRequest::DeliverBatch`] answered by [`ChatResponse::Batch`]. A link negotiated on it
/// carries deliveries in batches; one on `ferry/chat/1` carries them one at a time.
pub const ALPN_CHAT_2: &[u8] = b"ferry/chat/2";

/// ALPN of the pairing protocol.
pub const ALPN_PAIR: &[u8] = b"ferry/pair/1";
/// ALPN of the session reset: a fresh handshake between two contacts over the identity keys
/// they already hold ([`ResetFrame`]). A peer of an earlier release does not offer it.
pub const ALPN_RESET: &[u8] = b"ferry/reset/1";
/// Bytes of the length that starts every frame.
pub const FRAME_HEADER_LEN: usize = 4;
pub use crate::limits::{MAX_BATCH, MAX_FRAME, MAX_NAME, MAX_TEXT};

/// A framing error.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer announced a frame over [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// The stream failed or ended early.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes end before the frame does, or go on after it.
    #[error("frame length does not match its header")]
    Truncated,
    /// The body did not decode.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Encodes one frame: the 4-byte big-endian body length, then the postcard body.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_allocvec(value)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(body.len()))?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// The body length a frame header announces; over [`MAX_FRAME`] is refused here, before the
/// reader allocates anything for the body.
pub fn frame_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a frame body (the bytes after the header).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    Ok(postcard::from_bytes(body)?)
}

/// Decodes one whole frame held in memory: a header and exactly the body it announces.
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    let (header, body) = bytes
        .split_first_chunk::<FRAME_HEADER_LEN>()
        .ok_or(FrameError::Truncated)?;
    let len = frame_len(*header)?;
    if body.len() != len {
        return Err(FrameError::Truncated);
    }
    decode_body(body)
}

/// The identity part of a pairing message: display name and the signed X25519 key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairIdentity {
    /// Display name.
    pub name: String,
    /// X25519 identity public key.
    pub x25519: [u8; 32],
    /// Signature of the endpoint key over the X25519 key.
    #[serde(with = "crate::e2e::serde_sig")]
    pub signature: [u8; 64],
    /// Where the sender can be reached.
    pub addr: WireAddr,
}

/// Frames of `ferry/pair/1`, in order: joiner `Hello`, inviter `Accept`/`Refuse`, joiner
/// `Confirm` (the first sealed message, proving both derived the same keys), inviter `Done`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairFrame {
    /// Joiner → inviter: the invite secret, its identity and its handshake ephemeral.
    Hello {
        /// The invite's one-time secret.
        secret: [u8; 16],
        /// The joiner's identity.
        identity: PairIdentity,
        /// The joiner's handshake ephemeral key.
        ephemeral: [u8; 32],
    },
    /// Inviter → joiner: pairing accepted.
    Accept {
        /// The inviter's identity.
        identity: PairIdentity,
        /// The inviter's handshake ephemeral key.
        ephemeral: [u8; 32],
    },
    /// Inviter → joiner: pairing refused.
    Refuse {
        /// Why, for the joiner's user.
        reason: String,
    },
    /// Joiner → inviter: the first ratchet message (key confirmation).
    Confirm {
        /// Message id bound into the associated data.
        message_id: [u8; 16],
        /// The sealed confirmation.
        envelope: Envelope,
    },
    /// Inviter → joiner: both sides have stored the pairing.
    Done,
}

/// Frames of `ferry/reset/1`, in order: initiator `Hello`, responder `Accept`/`Refuse`,
/// initiator `Confirm` (the first message of the new session, proving both derived the same
/// keys), responder `Done` (it has stored the new session) or `Refuse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetFrame {
    /// Initiator → responder: its handshake ephemeral key.
    Hello {
        /// The initiator's handshake ephemeral key.
        ephemeral: [u8; 32],
    },
    /// Responder → initiator: its handshake ephemeral key.
    Accept {
        /// The responder's handshake ephemeral key.
        ephemeral: [u8; 32],
    },
    /// Responder → initiator: not now, or not at all.
    Refuse {
        /// Why, for the initiator's user.
        reason: String,
    },
    /// Initiator → responder: the first sealed message of the new session (a
    /// [`Payload::PairConfirm`]).
    Confirm {
        /// Message id bound into the associated data.
        message_id: [u8; 16],
        /// The sealed confirmation.
        envelope: Envelope,
    },
    /// Responder → initiator: the new session is stored; store yours.
    Done,
}

/// Requests of `ferry/chat/1`, one per bidirectional stream, each answered by a [`ChatResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatRequest {
    /// A sealed payload for the conversation with the sender.
    Deliver {
        /// The message id (deduplication and associated data).
        message_id: [u8; 16],
        /// The sealed [`Payload`].
        envelope: Envelope,
    },
    /// Liveness probe.
    Ping,
    /// The sender's current addresses.
    Announce(WireAddr),
    /// Several sealed payloads, in order, each as `Deliver` would carry it (at most
    /// [`MAX_BATCH`]; `ferry/chat/2` only). Answered by [`ChatResponse::Batch`].
    DeliverBatch(Vec<Delivery>),
}

/// One delivery of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The message id (deduplication and associated data).
    pub message_id: [u8; 16],
    /// The sealed [`Payload`].
    pub envelope: Envelope,
}

/// How one delivery of a batch went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryAnswer {
    /// Stored and flushed (or already had it).
    Ack,
    /// Not accepted; the sender keeps it queued if `retry`.
    Reject {
        /// Why.
        reason: String,
        /// Whether trying again later may succeed.
        retry: bool,
    },
}

/// Answers on `ferry/chat/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatResponse {
    /// Stored and flushed (or already had it).
    Ack,
    /// Answer to `Ping`.
    Pong,
    /// Not accepted; the sender keeps it queued if `retry`.
    Reject {
        /// Why.
        reason: String,
        /// Whether trying again later may succeed.
        retry: bool,
    },
    /// Not taken now: the sender is over its allowance and should send it again after this
    /// many milliseconds (appended: a sender of an earlier release cannot read it, counts it
    /// as a failed attempt, and backs off as it always did).
    RetryAfter {
        /// How long to wait.
        ms: u32,
    },
    /// Answer to `DeliverBatch`: one answer for each delivery of a prefix of the batch, in
    /// order, all stored and flushed before this is sent. The receiver stops at the first
    /// delivery it cannot take now (a `Reject` with `retry`, the last answer then), or before
    /// the first one over the sender's allowance; the deliveries after the answered ones were
    /// not looked at, and the sender sends them again.
    Batch {
        /// Answers for the first `answers.len()` deliveries.
        answers: Vec<DeliveryAnswer>,
        /// Set when the rest is over the sender's allowance: send it again after this many
        /// milliseconds.
        retry_after_ms: Option<u32>,
    },
}

/// What is inside a sealed envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// A text message.
    Text {
        /// The text.
        body: String,
        /// Sender's clock, Unix milliseconds.
        sent_at: u64,
    },
    /// The listed messages were read.
    Read {
        /// Ids of messages the reader received from the recipient of this receipt.
        ids: Vec<[u8; 16]>,
    },
    /// Key confirmation at the end of pairing.
    PairConfirm,
    /// A file or folder the sender offers; the receiver fetches it over iroh-blobs.
    FileOffer {
        /// Transfer id.
        transfer: [u8; 16],
        /// BLAKE3 root hash (a blob, or for a folder the collection's hash sequence).
        hash: [u8; 32],
        /// A folder (collection) rather than one file.
        folder: bool,
        /// The sender's name for it (the receiver cleans it).
        name: String,
        /// Total payload bytes.
        size: u64,
        /// Number of files.
        files: u32,
    },
    /// The other side changed a transfer's state.
    TransferUpdate {
        /// Transfer id.
        transfer: [u8; 16],
        /// New state.
        state: TransferState,
        /// Why (for failures).
        reason: Option<String>,
    },
    /// The sender set the conversation's disappearing-message timer (appended: a receiver of
    /// an earlier release cannot decode it, refuses it for good, and the sender says so).
    Timer {
        /// Seconds a message lives after it was sent or received; 0 is off.
        secs: u64,
        /// When it was set (sender's clock, Unix ms): of two changes, the later one holds.
        set_at: u64,
    },
    /// Entries of one group's log, in log order (parents first), signed by their authors
    /// (appended with groups; at most [`MAX_GROUP_ENTRIES`]). Sent by the author, and passed on
    /// by members to members the author does not reach.
    GroupEntries {
        /// The group they are of (an entry of another group is dropped).
        group: [u8; 16],
        /// The entries.
        entries: Vec<SignedEntry>,
        /// Members already sent these by someone else (the author's direct contacts, and
        /// whoever passed them on so far): a member passes them on only to the others. At most
        /// [`MAX_MEMBERS`](crate::group::MAX_MEMBERS).
        covered: Vec<[u8; 32]>,
    },
    /// A member's sender chain, for a member of the group (appended with groups). Passed on
    /// like entries, but only to members who were in the group at `needs` and still are.
    GroupKey {
        /// The chain, signed by its author.
        share: KeyShare,
        /// The author's log heads when it made the share: the membership the share is for.
        needs: Vec<EntryHash>,
        /// As in [`Payload::GroupEntries`].
        covered: Vec<[u8; 32]>,
    },
    /// What the sender holds of a group (appended with groups): the receiver sends back what
    /// it has beyond it, entries and the sender chains the sender may have. Sent when a link
    /// comes up, and when an entry arrives whose parents are missing. It is always answered
    /// with at least one `GroupEntries` (empty if the sender lacks nothing) with nothing
    /// `covered`.
    GroupHave {
        /// The group.
        group: [u8; 16],
        /// For each author, the number of their last entry held (entries of one author are
        /// held from 1 with no gap). At most [`MAX_MEMBERS`](crate::group::MAX_MEMBERS) * 4.
        heads: Vec<([u8; 32], u64)>,
        /// The sender chains held, as (author, epoch). At most
        /// [`MAX_MEMBERS`](crate::group::MAX_MEMBERS) * 4.
        keys: Vec<([u8; 32], u32)>,
    },
    /// A member's receipt (what it holds and has read), passed on like entries, in groups of
    /// at most [`MAX_RECEIPT_MEMBERS`](crate::group::MAX_RECEIPT_MEMBERS) (appended with
    /// groups).
    GroupReceipt {
        /// The receipt, signed by its member.
        receipt: SignedReceipt,
        /// As in [`Payload::GroupEntries`].
        covered: Vec<[u8; 32]>,
    },
}

/// The most entries one [`Payload::GroupEntries`] carries.
pub const MAX_GROUP_ENTRIES: usize = 256;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn oversized_frame_is_refused_before_allocating() {
        let mut bytes = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 8]);
        let r: Result<ChatRequest, _> = decode_frame(&bytes);
        assert!(matches!(r, Err(FrameError::TooLarge(n)) if n == MAX_FRAME + 1));
    }

    #[test]
    fn garbage_frame_is_a_clear_error() {
        let mut bytes = 3u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xff, 0xff, 0xff]);
        let r: Result<ChatRequest, _> = decode_frame(&bytes);
        assert!(matches!(r, Err(FrameError::Malformed(_))));
    }

    #[test]
    fn short_or_long_frames_are_refused() {
        let frame = encode_frame(&ChatRequest::Ping).unwrap();
        for bad in [
            &frame[..2],
            &frame[..frame.len() - 1],
            &[frame.clone(), vec![0]].concat(),
        ] {
            let r: Result<ChatRequest, _> = decode_frame(bad);
            assert!(matches!(r, Err(FrameError::Truncated)), "{bad:?}");
        }
    }

    #[test]
    fn frames_roundtrip() {
        let req = ChatRequest::Announce(WireAddr {
            relay: Some("https://relay.example".into()),
            direct: vec!["127.0.0.1:4000".parse().unwrap()],
        });
        let back: ChatRequest = decode_frame(&encode_frame(&req).unwrap()).unwrap();
        assert_eq!(back, req);
    }

    /// Pins the wire format: a change here is a protocol change and needs a new ALPN.
    #[test]
    fn wire_format_snapshot() {
        let ping = postcard::to_allocvec(&ChatRequest::Ping).unwrap();
        assert_eq!(ping, [1]);
        let text = postcard::to_allocvec(&Payload::Text {
            body: "hi".into(),
            sent_at: 1,
        })
        .unwrap();
        assert_eq!(text, [0, 2, b'h', b'i', 1]);
        let read = postcard::to_allocvec(&Payload::Read { ids: vec![[7; 16]] }).unwrap();
        assert_eq!(read[..2], [1, 1]);
        assert_eq!(read.len(), 18);
        // The batch variants were appended: every earlier index is unchanged.
        let batch = postcard::to_allocvec(&ChatRequest::DeliverBatch(Vec::new())).unwrap();
        assert_eq!(batch, [3, 0]);
        let answer = postcard::to_allocvec(&ChatResponse::Batch {
            answers: vec![DeliveryAnswer::Ack],
            retry_after_ms: Some(5),
        })
        .unwrap();
        assert_eq!(answer, [4, 1, 0, 1, 5]);
        let hello = postcard::to_allocvec(&ResetFrame::Hello { ephemeral: [9; 32] }).unwrap();
        assert_eq!(hello[0], 0);
        assert_eq!(hello.len(), 33);
        assert_eq!(postcard::to_allocvec(&ResetFrame::Done).unwrap(), [4]);
        let timer = postcard::to_allocvec(&Payload::Timer { secs: 1, set_at: 2 }).unwrap();
        assert_eq!(timer, [5, 1, 2]);
        // Groups' payloads were appended after it.
        let entries = postcard::to_allocvec(&Payload::GroupEntries {
            group: [0; 16],
            entries: Vec::new(),
            covered: Vec::new(),
        })
        .unwrap();
        assert_eq!(entries, [[6].as_slice(), &[0; 16], &[0, 0]].concat());
        let have = postcard::to_allocvec(&Payload::GroupHave {
            group: [1; 16],
            heads: vec![([2; 32], 3)],
            keys: Vec::new(),
        })
        .unwrap();
        assert_eq!(have[0], 8);
        assert_eq!(have.len(), 1 + 16 + 1 + 32 + 1 + 1);
    }
}
