//! The engine's error type: concrete, with a stable code for front ends.

use std::path::PathBuf;

/// Everything that can go wrong in the engine.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The home has no identity yet.
    #[error("this home ({0}) is not initialised: run `ferry init --name <NAME>` first")]
    NotInitialized(PathBuf),
    /// `init` on a home that already has an identity.
    #[error("this home ({0}) is already initialised")]
    AlreadyInitialized(PathBuf),
    /// Another process holds the home.
    #[error("the home {home} is in use by another Ferry process (pid {pid}); talk to it instead")]
    HomeBusy {
        /// The home folder.
        home: PathBuf,
        /// The holder's process id, as written in its lock file (0 if unreadable).
        pid: u32,
    },
    /// No data folder could be determined for this platform.
    #[error("no data folder for this platform: pass --home or set FERRY_HOME")]
    NoHome,
    /// A file-system error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] sled::Error),
    /// Stored data could not be decoded (corruption or a newer format).
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// The invite text could not be read.
    #[error("not a valid Ferry invite: {0}")]
    InvalidInvite(String),
    /// The invite's lifetime has passed.
    #[error("this invite has expired; ask for a new one")]
    InviteExpired,
    /// The inviter refused the pairing.
    #[error("pairing refused: {0}")]
    PairingRefused(String),
    /// Pairing failed on the way.
    #[error("pairing failed: {0}")]
    Pairing(String),
    /// No contact matches.
    #[error("no contact matches {0:?}")]
    UnknownContact(String),
    /// More than one contact matches.
    #[error("{query:?} matches several contacts: {candidates}")]
    AmbiguousContact {
        /// What was asked for.
        query: String,
        /// The names and ids that match.
        candidates: String,
    },
    /// No group matches.
    #[error("no group matches {0:?}")]
    UnknownGroup(String),
    /// More than one group, or a contact and a group, match: the id tells them apart.
    #[error("{query:?} matches {candidates}: give the id (or its first characters) instead")]
    Ambiguous {
        /// What was asked for.
        query: String,
        /// What matches, with ids.
        candidates: String,
    },
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
    /// An argument that makes no sense.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The network could not be set up or a peer not reached.
    #[error("network: {0}")]
    Network(String),
    /// A peer broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// End-to-end encryption failed.
    #[error("encryption: {0}")]
    E2e(#[from] crate::e2e::E2eError),
    /// The control socket failed or the holder answered with an error.
    #[error("{message}")]
    Remote {
        /// The holder's error code.
        code: String,
        /// The holder's message.
        message: String,
    },
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Closed,
    /// A contact (or this user) went over one of its quotas. The text is for the contact.
    #[error("{0}")]
    Quota(Quota),
    /// The contact is blocked: nothing goes to it until it is unblocked.
    #[error("{0} is blocked; unblock them first")]
    Blocked(String),
    /// The contact's identity key changed and the user has not accepted the new one yet.
    #[error(
        "{0}'s safety number changed; compare the new one with them, then accept it \
         (`ferry verify {0} --accept`, or mark them verified) before sending"
    )]
    KeyChanged(String),
    /// A payload could not be opened (or sealed) because the session with the contact is out
    /// of step: gone, rolled back or replaced on one side. With `resetting`, a reset is under
    /// way or will be tried, so sending the payload again later may work.
    #[error(
        "the session with this contact is out of step{}",
        if *resetting { "; it is being reset, send it again after the reset" } else { "" }
    )]
    OutOfStep {
        /// Whether a session reset may repair it.
        resetting: bool,
    },
    /// A session reset did not complete.
    #[error("the session reset did not complete: {0}")]
    Reset(String),
    /// The home's data key is kept under a passphrase and none was given.
    #[error(
        "this home is protected by a passphrase: enter it (on a terminal), or set \
         FERRY_PASSPHRASE"
    )]
    PassphraseNeeded,
    /// The passphrase given does not open the home's data key. Nothing was changed.
    #[error("wrong passphrase{}", if *wait_secs > 0 {
        format!("; too many in a row, so the next try must wait {wait_secs} s")
    } else { String::new() })]
    WrongPassphrase {
        /// How long the next try must wait (0 for the first few wrong ones).
        wait_secs: u64,
    },
    /// Too many wrong passphrases in a row: this try came too early and was not checked.
    #[error("too many wrong passphrases in a row: try again in {secs} s")]
    UnlockWait {
        /// Seconds left to wait.
        secs: u64,
    },
    /// The OS keychain that keeps the data key did not answer.
    #[error("the OS keychain: {0}")]
    Keychain(String),
}

/// A quota that was reached (the limits are named constants where they are enforced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Quota {
    /// This many offers from the contact are still waiting for an answer.
    PendingOffers(usize),
    /// The contact made this node store this many bytes today (UTC).
    DailyBytes(u64),
    /// This many invites are open (issued, unused and unexpired).
    OpenInvites(usize),
}

impl std::fmt::Display for Quota {
    /// Said to whoever went over it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quota::PendingOffers(n) => write!(
                f,
                "{n} of your offers are still waiting for an answer; send more once some are \
                 answered"
            ),
            Quota::DailyBytes(n) => write!(
                f,
                "you have sent {} today, the most one contact may send in a day; try again \
                 tomorrow",
                crate::model::human_size(*n, crate::model::SizeUnits::Binary)
            ),
            Quota::OpenInvites(n) => write!(
                f,
                "{n} invites are still open; use or let some expire before making more"
            ),
        }
    }
}

impl Quota {
    /// Said to this node's user, about the contact `name`.
    pub fn notice(&self, name: &str) -> String {
        match self {
            Quota::PendingOffers(n) => format!(
                "{name} sent another file, refused: {n} of their offers are waiting for your \
                 answer"
            ),
            Quota::DailyBytes(n) => format!(
                "{name} has sent {} today, the most one contact may; more from them is \
                 refused until tomorrow",
                crate::model::human_size(*n, crate::model::SizeUnits::Binary)
            ),
            Quota::OpenInvites(n) => format!("{n} invites are open"),
        }
    }
}

impl Error {
    /// A stable machine-readable code (crosses to front ends as `{ code, message }`).
    pub fn code(&self) -> &str {
        match self {
            Error::NotInitialized(_) => "not_initialized",
            Error::AlreadyInitialized(_) => "already_initialized",
            Error::HomeBusy { .. } => "home_busy",
            Error::NoHome => "no_home",
            Error::Io { .. } => "io",
            Error::Store(_) => "store",
            Error::Corrupt(_) => "corrupt",
            Error::InvalidInvite(_) => "invalid_invite",
            Error::InviteExpired => "invite_expired",
            Error::PairingRefused(_) => "pairing_refused",
            Error::Pairing(_) => "pairing_failed",
            Error::UnknownContact(_) => "unknown_contact",
            Error::AmbiguousContact { .. } => "ambiguous_contact",
            Error::UnknownGroup(_) => "unknown_group",
            Error::Ambiguous { .. } => "ambiguous",
            Error::TooLong { .. } => "too_long",
            Error::InvalidInput(_) => "invalid_input",
            Error::Network(_) => "network",
            Error::Protocol(_) => "protocol",
            Error::E2e(_) => "e2e",
            Error::Remote { code, .. } => code,
            Error::Closed => "closed",
            Error::Quota(_) => "quota",
            Error::Blocked(_) => "blocked",
            Error::KeyChanged(_) => "key_changed",
            Error::OutOfStep { .. } => "out_of_step",
            Error::Reset(_) => "reset_failed",
            Error::PassphraseNeeded => "passphrase_needed",
            Error::WrongPassphrase { .. } => "wrong_passphrase",
            Error::UnlockWait { .. } => "unlock_wait",
            Error::Keychain(_) => "keychain",
        }
    }

    /// Whether trying the same thing again later may succeed: a store or file-system failure
    /// on this side (a full disk, say), a shutdown, or a session being reset; not bad input.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Store(_)
                | Error::Io { .. }
                | Error::Closed
                | Error::OutOfStep { resetting: true }
        )
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

impl From<ferry_proto::ProtoError> for Error {
    fn from(e: ferry_proto::ProtoError) -> Self {
        use ferry_proto::ProtoError as P;
        match e {
            P::InvalidInvite(m) => Error::InvalidInvite(m),
            P::InvalidInput(m) => Error::InvalidInput(m),
            P::TooLong { what, len, max } => Error::TooLong { what, len, max },
            P::Corrupt(m) => Error::Corrupt(m),
            P::Encode(e) => Error::Corrupt(e.to_string()),
            other => Error::InvalidInput(other.to_string()),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Corrupt(format!("JSON: {e}"))
    }
}

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Self {
        Error::Corrupt(e.to_string())
    }
}
