//! The error of everything here that checks input, except the ratchet ([`crate::e2e::E2eError`])
//! and the framing ([`crate::wire::FrameError`]), which have their own.

/// Input that does not hold up.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// Invite text (or a QR code's text) that is not a usable invite.
    #[error("not a valid Ferry invite: {0}")]
    InvalidInvite(String),
    /// A value that makes no sense (an id, a name, a picture).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A message or name over its limit.
    #[error("{what} is too long: {len} bytes, at most {max}")]
    TooLong {
        /// What was too long.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A stored record that does not decode (damage, or a newer format).
    #[error("unreadable record: {0}")]
    Corrupt(String),
    /// A value could not be encoded.
    #[error("encoding: {0}")]
    Encode(#[from] postcard::Error),
}
