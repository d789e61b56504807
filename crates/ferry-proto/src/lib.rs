//! Ferry's protocol, with no I/O: identity keys and safety numbers, the pairing handshake and
//! Double Ratchet, wire frames and payloads, the model types, invites and their QR codes,
//! file-name cleaning and the limits. Everything that decodes bytes from outside is here, so
//! it can be tested and fuzzed without a network, a store or an async runtime.
//!
//! ```
//! use ferry_proto::e2e::{respond, AssociatedData, InitiatorHandshake};
//! use ferry_proto::keys::Identity;
//!
//! let (alice, bob) = (Identity::generate(), Identity::generate());
//! let (handshake, alice_ephemeral) = InitiatorHandshake::start();
//! let (mut bob_session, bob_ephemeral) = respond(
//!     bob.x25519_secret(),
//!     &alice.x25519_public(),
//!     &alice_ephemeral,
//!     b"binding",
//! )?;
//! let mut alice_session = handshake.complete(
//!     alice.x25519_secret(),
//!     &bob.x25519_public(),
//!     &bob_ephemeral,
//!     b"binding",
//! )?;
//! let ad = AssociatedData {
//!     sender: *alice.id().as_bytes(),
//!     recipient: *bob.id().as_bytes(),
//!     message_id: [1; 16],
//! };
//! let envelope = alice_session.seal(b"hello", &ad)?;
//! assert_eq!(bob_session.open(&envelope, &ad)?, b"hello");
//! # Ok::<(), ferry_proto::e2e::E2eError>(())
//! ```

pub mod e2e;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod group;
pub mod invite;
pub mod keys;
pub mod limits;
pub mod model;
pub mod naming;
pub mod qr;
pub mod records;
pub mod wire;

pub use error::ProtoError;
