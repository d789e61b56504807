//! The Ferry engine over iroh and sled: store, pairing, chat and files, on the protocol of
//! [`ferry_proto`] (keys, ratchet, frames, model types; re-exported here).
//!
//! Front ends (the desktop app, the `ferry` CLI) hold an `Arc<Node>` and nothing else:
//!
//! ```no_run
//! # async fn run() -> Result<(), ferry_core::Error> {
//! use ferry_core::{Config, Node};
//! let home = ferry_core::default_home()?;
//! Node::init(&home, "Alice")?;
//! let node = Node::open(&home, Config::default()).await?;
//! let invite = node.create_invite(None).await?;
//! println!("{invite}");
//! node.shutdown().await;
//! # Ok(()) }
//! ```

pub use ferry_proto::{e2e, group, invite, limits, model, naming};

pub mod backup;
mod bus;
pub mod chat;
mod contacts;
pub mod control;
mod error;
pub mod files;
mod groups;
pub mod home;
pub mod identity;
pub mod inbox;
mod net;
pub mod node;
mod outbox;
pub mod pairing;
pub mod qr;
pub mod reset;
mod sessions;
pub mod store;
mod timers;
pub mod transfer;
mod trust;
pub mod vault;
pub mod wire;

pub use error::{Error, Quota};
pub use home::default_home;
pub use model::*;
pub use node::{Config, NetSettings, Node, RelayChoice};
