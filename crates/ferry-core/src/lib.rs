//! The Ferry engine: identity, end-to-end encryption, store, pairing and chat over iroh.
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

pub mod chat;
pub mod control;
pub mod e2e;
mod error;
pub mod home;
pub mod identity;
pub mod model;
pub mod naming;
mod net;
pub mod node;
pub mod pairing;
pub mod qr;
pub mod store;
pub mod transfer;
pub mod wire;

pub use error::Error;
pub use home::default_home;
pub use model::*;
pub use node::{Config, NetSettings, Node, RelayChoice};
