//! Every limit the protocol enforces on what a peer sends, in one place. Each is checked before
//! the thing it bounds is allocated or stored. The modules that enforce them re-export them.

/// The largest wire frame either side accepts (body bytes, after the 4-byte length).
pub const MAX_FRAME: usize = 64 * 1024;
/// The most deliveries one batch on `ferry/chat/2` may carry (and still within [`MAX_FRAME`]).
pub const MAX_BATCH: usize = 256;
/// The longest text message, in bytes of UTF-8.
pub const MAX_TEXT: usize = 32 * 1024;
/// The longest display name, in bytes of UTF-8.
pub const MAX_NAME: usize = 64;
/// The longest invite text accepted (a generous bound on addresses).
pub const MAX_INVITE_LEN: usize = 4096;
/// Skipped message keys kept per ratchet session (across chains; the oldest go first).
pub const MAX_SKIP: usize = 2000;
/// Message keys one incoming header may make a session skip (old and new chain together).
pub const MAX_CHAIN_GAP: u32 = 2000;
/// The longest received file name, in bytes of UTF-8, after cleaning.
pub const MAX_NAME_BYTES: usize = 255;
/// Pictures of a QR code larger than this on either side are refused before decoding.
pub const MAX_IMAGE_SIDE: u32 = 10_000;
/// Pictures handed over as bytes (a pasted screenshot, a camera frame) larger than this are
/// refused before decoding.
pub const MAX_IMAGE_BYTES: usize = 32 * 1024 * 1024;
/// The disappearing-message timers a conversation may have, in seconds (5 minutes, an hour, a
/// day, a week); 0 is off. A timer a peer sends that is not one of these is refused.
pub const TIMER_CHOICES: [u64; 4] = [5 * 60, 60 * 60, 24 * 60 * 60, 7 * 24 * 60 * 60];

/// The most files one folder offer may hold.
pub const MAX_FOLDER_FILES: usize = 100_000;
/// The most offers from one contact (or one group member) that may wait for an answer; more
/// are refused.
pub const MAX_PENDING_OFFERS: usize = 100;
