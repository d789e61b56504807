//! What crosses the network: ALPNs, versioned frames, and the length-prefixed framing with a
//! hard size cap checked before anything is allocated.
//!
//! Every frame is a 4-byte big-endian length followed by a postcard body. Bodies are enums whose
//! first variant index doubles as a version tag: new variants are added at the end.

use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::e2e::Envelope;

/// ALPN of the chat protocol.
pub const ALPN_CHAT: &[u8] = b"ferry/chat/1";
/// ALPN of the pairing protocol.
pub const ALPN_PAIR: &[u8] = b"ferry/pair/1";
/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 64 * 1024;
/// The longest text message, in bytes of UTF-8.
pub const MAX_TEXT: usize = 32 * 1024;
/// The longest display name, in bytes of UTF-8.
pub const MAX_NAME: usize = 64;

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
    /// The body did not decode.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Writes one frame.
pub async fn write_frame<W, T>(w: &mut W, value: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = postcard::to_allocvec(value)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(body.len()))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&body).await?;
    Ok(())
}

/// Reads one frame, refusing oversized ones before allocating.
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(postcard::from_bytes(&body)?)
}

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

/// The identity part of a pairing message: display name and the signed X25519 key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairIdentity {
    /// Display name.
    pub name: String,
    /// X25519 identity public key.
    pub x25519: [u8; 32],
    /// Signature of the endpoint key over the X25519 key.
    #[serde(with = "serde_sig")]
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
        state: crate::model::TransferState,
        /// Why (for failures).
        reason: Option<String>,
    },
}

mod serde_sig {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(sig)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let bytes: &[u8] = <&[u8]>::deserialize(d)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(bytes.len(), &"64 bytes"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_frame_is_refused_before_allocating() {
        let mut bytes = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 8]);
        let r: Result<ChatRequest, _> = read_frame(&mut bytes.as_slice()).await;
        assert!(matches!(r, Err(FrameError::TooLarge(n)) if n == MAX_FRAME + 1));
    }

    #[tokio::test]
    async fn garbage_frame_is_a_clear_error() {
        let mut bytes = 3u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xff, 0xff, 0xff]);
        let r: Result<ChatRequest, _> = read_frame(&mut bytes.as_slice()).await;
        assert!(matches!(r, Err(FrameError::Malformed(_))));
    }

    #[tokio::test]
    async fn frames_roundtrip() {
        let mut buf = Vec::new();
        let req = ChatRequest::Announce(WireAddr {
            relay: Some("https://relay.example".into()),
            direct: vec!["127.0.0.1:4000".parse().unwrap()],
        });
        write_frame(&mut buf, &req).await.unwrap();
        let back: ChatRequest = read_frame(&mut buf.as_slice()).await.unwrap();
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
    }
}
