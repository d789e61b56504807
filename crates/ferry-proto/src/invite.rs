//! Invites: one line, `ferry:` followed by base32 of a postcard [`Invite`]: the inviter's
//! endpoint id and addresses, X25519 identity key, display name, a one-time secret and an
//! expiry. The pairing handshake that uses one runs in `ferry_core::pairing`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{now_ms, ContactId, WireAddr};
use crate::naming::clean_display_name;
use crate::ProtoError;

/// The text prefix of an invite.
pub const INVITE_PREFIX: &str = "ferry:";
/// The invite format this code writes and reads.
pub const INVITE_VERSION: u8 = 1;
pub use crate::limits::MAX_INVITE_LEN;

/// What an invite carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// Format version.
    pub version: u8,
    /// The inviter's endpoint id.
    pub id: ContactId,
    /// Where to reach the inviter.
    pub addr: WireAddr,
    /// The inviter's X25519 identity key.
    pub x25519: [u8; 32],
    /// The inviter's display name.
    pub name: String,
    /// One-time secret the joiner must present.
    pub secret: [u8; 16],
    /// Expiry, Unix seconds.
    pub expires_at: u64,
}

impl Invite {
    /// The one-line text form, `ferry:` + lowercase base32.
    pub fn to_text(&self) -> Result<String, ProtoError> {
        let bytes = postcard::to_allocvec(self)?;
        Ok(format!(
            "{INVITE_PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&bytes).to_lowercase()
        ))
    }

    /// Reads an invite from text (case and surrounding white space do not matter).
    pub fn parse(text: &str) -> Result<Invite, ProtoError> {
        let text = text.trim();
        if text.len() > MAX_INVITE_LEN {
            return Err(ProtoError::InvalidInvite("too long".into()));
        }
        let lower = text.to_ascii_lowercase();
        let body = lower.strip_prefix(INVITE_PREFIX).ok_or_else(|| {
            ProtoError::InvalidInvite(format!("it should start with `{INVITE_PREFIX}`"))
        })?;
        let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| ProtoError::InvalidInvite("it is damaged (not base32)".into()))?;
        let invite: Invite = postcard::from_bytes(&bytes)
            .map_err(|_| ProtoError::InvalidInvite("it is damaged or incomplete".into()))?;
        if invite.version != INVITE_VERSION {
            return Err(ProtoError::InvalidInvite(format!(
                "made by a newer Ferry (format {})",
                invite.version
            )));
        }
        clean_display_name(&invite.name).map_err(|e| ProtoError::InvalidInvite(e.to_string()))?;
        Ok(invite)
    }

    /// Whether the invite is past its expiry.
    pub fn is_expired(&self) -> bool {
        self.expires_at.saturating_mul(1000) < now_ms()
    }
}

/// What binds a pairing's key agreement to the two endpoints and the invite used: both sides
/// pass it to the handshake, so a secret replayed between other endpoints derives other keys.
pub fn pair_binding(inviter: &ContactId, joiner: &ContactId, secret: &[u8; 16]) -> Vec<u8> {
    Sha256::new()
        .chain_update(b"ferry/pair-binding/1")
        .chain_update(inviter.as_bytes())
        .chain_update(joiner.as_bytes())
        .chain_update(secret)
        .finalize()
        .to_vec()
}

/// What binds a session reset's key agreement to the two endpoints and their roles: both sides
/// pass it to the handshake, so a reset's keys are never a pairing's, nor the same reset's with
/// the roles swapped.
pub fn reset_binding(initiator: &ContactId, responder: &ContactId) -> Vec<u8> {
    Sha256::new()
        .chain_update(b"ferry/reset-binding/1")
        .chain_update(initiator.as_bytes())
        .chain_update(responder.as_bytes())
        .finalize()
        .to_vec()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Invite {
        Invite {
            version: INVITE_VERSION,
            id: iroh_base::SecretKey::from_bytes(&[3; 32]).public(),
            addr: WireAddr {
                relay: Some("https://relay.example./".into()),
                direct: vec!["192.0.2.1:4433".parse().unwrap()],
            },
            x25519: [5; 32],
            name: "Alice".into(),
            secret: [7; 16],
            expires_at: 4_000_000_000,
        }
    }

    #[test]
    fn invite_roundtrips_through_text_in_any_case() {
        let text = sample().to_text().unwrap();
        assert!(text.starts_with("ferry:"));
        assert_eq!(Invite::parse(&text).unwrap(), sample());
        assert_eq!(
            Invite::parse(&format!("  {}\n", text.to_uppercase())).unwrap(),
            sample()
        );
    }

    #[test]
    fn garbage_invites_give_clear_errors() {
        for bad in [
            "",
            "hello",
            "ferry:",
            "ferry:!!!!",
            "ferry:mfrggzdfmztwq2lk",
            &"ferry:a".repeat(2000),
        ] {
            let err = Invite::parse(bad).unwrap_err();
            assert!(
                matches!(err, ProtoError::InvalidInvite(_)),
                "{bad:?}: {err}"
            );
        }
        let mut truncated = sample().to_text().unwrap();
        truncated.truncate(truncated.len() - 10);
        assert!(matches!(
            Invite::parse(&truncated),
            Err(ProtoError::InvalidInvite(_))
        ));
    }

    #[test]
    fn bidi_names_are_refused_in_invites() {
        let mut i = sample();
        i.name = "Al\u{202E}ice".into();
        let text = i.to_text().unwrap();
        assert!(matches!(
            Invite::parse(&text),
            Err(ProtoError::InvalidInvite(_))
        ));
    }
}
