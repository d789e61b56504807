//! Who this home is: the Ed25519 key that is the iroh endpoint id, and the X25519 identity key
//! used by [`crate::e2e`], bound to it by a signature; and the safety number two contacts
//! compare. Reading and writing the identity file is `ferry_core::identity`.

use iroh_base::{PublicKey, SecretKey, Signature};
use rand_core::OsRng;
use serde::{Deserialize, Serialize};
use x25519_dalek::StaticSecret;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ProtoError;

/// Domain separation for the signature that binds the X25519 key to the endpoint id.
const BINDING_LABEL: &[u8] = b"ferry/identity-binding/1";
const FILE_VERSION: u8 = 1;

/// This home's long-term keys.
#[derive(Clone)]
pub struct Identity {
    secret_key: SecretKey,
    x25519: StaticSecret,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct IdentityFile {
    version: u8,
    ed25519: [u8; 32],
    x25519: [u8; 32],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id().fmt_short().to_string())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Makes new random keys.
    pub fn generate() -> Self {
        Identity {
            secret_key: SecretKey::from_bytes(&StaticSecret::random_from_rng(OsRng).to_bytes()),
            x25519: StaticSecret::random_from_rng(OsRng),
        }
    }

    /// The keys as the identity file holds them: a versioned postcard record, wiped on drop.
    pub fn to_file_bytes(&self) -> Result<Zeroizing<Vec<u8>>, ProtoError> {
        let file = IdentityFile {
            version: FILE_VERSION,
            ed25519: self.secret_key.to_bytes(),
            x25519: self.x25519.to_bytes(),
        };
        Ok(Zeroizing::new(postcard::to_allocvec(&file)?))
    }

    /// Reads the keys back from the identity file's bytes.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, ProtoError> {
        let file: IdentityFile =
            postcard::from_bytes(bytes).map_err(|e| ProtoError::Corrupt(e.to_string()))?;
        if file.version != FILE_VERSION {
            return Err(ProtoError::Corrupt(format!(
                "unknown identity format {}",
                file.version
            )));
        }
        Ok(Identity {
            secret_key: SecretKey::from_bytes(&file.ed25519),
            x25519: StaticSecret::from(file.x25519),
        })
    }

    /// The iroh endpoint id (Ed25519 public key).
    pub fn id(&self) -> PublicKey {
        self.secret_key.public()
    }

    /// The iroh secret key.
    pub fn secret_key(&self) -> &SecretKey {
        &self.secret_key
    }

    /// The X25519 identity secret.
    pub fn x25519_secret(&self) -> &StaticSecret {
        &self.x25519
    }

    /// The X25519 identity public key.
    pub fn x25519_public(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&self.x25519).to_bytes()
    }

    /// The signature, by the endpoint key, over the X25519 public key.
    pub fn binding_signature(&self) -> [u8; 64] {
        self.secret_key
            .sign(&binding_message(&self.x25519_public()))
            .to_bytes()
    }
}

fn binding_message(x25519: &[u8; 32]) -> Vec<u8> {
    [BINDING_LABEL, x25519.as_slice()].concat()
}

/// Checks that `x25519` was signed by the endpoint key `id`.
pub fn verify_binding(id: &PublicKey, x25519: &[u8; 32], signature: &[u8; 64]) -> bool {
    id.verify(&binding_message(x25519), &Signature::from_bytes(signature))
        .is_ok()
}

/// The safety number two contacts compare: 12 groups of 5 digits, the same on both sides.
pub fn safety_number(a: (&PublicKey, &[u8; 32]), b: (&PublicKey, &[u8; 32])) -> String {
    use sha2::{Digest, Sha512};
    let mut parts = [
        [a.0.as_bytes().as_slice(), a.1.as_slice()].concat(),
        [b.0.as_bytes().as_slice(), b.1.as_slice()].concat(),
    ];
    parts.sort();
    let mut digest: [u8; 64] = Sha512::new()
        .chain_update(b"ferry/safety-number/1")
        .chain_update(&parts[0])
        .chain_update(&parts[1])
        .finalize()
        .into();
    // Iterate to make a targeted collision on the 60 shown digits expensive.
    for _ in 0..1024 {
        digest = Sha512::digest(digest).into();
    }
    digest
        .chunks(5)
        .take(12)
        .map(|c| {
            let n = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a safety number's QR code holds, before the endpoint id and the 60 digits:
/// `ferry-safety:1:<id of the one showing it>:<digits>`.
pub const SAFETY_SCHEME: &str = "ferry-safety:1:";

/// The text of a safety number's QR code, shown by `shower`.
pub fn safety_text(shower: &PublicKey, number: &str) -> String {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    format!("{SAFETY_SCHEME}{shower}:{digits}")
}

/// Reads a safety number's QR text back: who showed it, and the number in groups as
/// [`safety_number`] writes it. Either case is accepted (the QR code carries upper case).
pub fn parse_safety_text(text: &str) -> Result<(PublicKey, String), ProtoError> {
    let bad = |why: &str| ProtoError::InvalidInput(format!("not a Ferry safety number: {why}"));
    let text = text.trim().to_ascii_lowercase();
    let rest = text
        .strip_prefix(SAFETY_SCHEME)
        .ok_or_else(|| bad("it does not start with ferry-safety:1:"))?;
    let (id, digits) = rest.split_once(':').ok_or_else(|| bad("no digits"))?;
    let id: PublicKey = id
        .parse()
        .map_err(|_| bad("the id is not an endpoint id"))?;
    if digits.len() != 60 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad("it must hold 60 digits"));
    }
    let groups: Vec<&str> = (0..12).map(|i| &digits[i * 5..i * 5 + 5]).collect();
    Ok((id, groups.join(" ")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn identity_roundtrips_through_its_file_bytes() {
        let id = Identity::generate();
        let loaded = Identity::from_file_bytes(&id.to_file_bytes().unwrap()).unwrap();
        assert_eq!(loaded.id(), id.id());
        assert_eq!(loaded.x25519_public(), id.x25519_public());
        let mut newer = id.to_file_bytes().unwrap().to_vec();
        newer[0] = 2;
        assert!(matches!(
            Identity::from_file_bytes(&newer),
            Err(ProtoError::Corrupt(_))
        ));
        assert!(Identity::from_file_bytes(&[1, 2, 3]).is_err());
    }

    #[test]
    fn binding_signature_verifies_only_for_its_key() {
        let id = Identity::generate();
        let other = Identity::generate();
        assert!(verify_binding(
            &id.id(),
            &id.x25519_public(),
            &id.binding_signature()
        ));
        assert!(!verify_binding(
            &id.id(),
            &other.x25519_public(),
            &id.binding_signature()
        ));
        assert!(!verify_binding(
            &other.id(),
            &id.x25519_public(),
            &id.binding_signature()
        ));
    }

    #[test]
    fn safety_number_is_order_independent_and_differs_per_pair() {
        let (a, b, c) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let (ax, bx, cx) = (a.x25519_public(), b.x25519_public(), c.x25519_public());
        let ab = safety_number((&a.id(), &ax), (&b.id(), &bx));
        assert_eq!(ab, safety_number((&b.id(), &bx), (&a.id(), &ax)));
        assert_ne!(ab, safety_number((&a.id(), &ax), (&c.id(), &cx)));
        assert_eq!(ab.split(' ').count(), 12);
        assert!(ab.split(' ').all(|g| g.len() == 5));
    }

    #[test]
    fn safety_texts_read_back_in_either_case_and_garbage_is_refused() {
        let a = Identity::generate();
        let b = Identity::generate();
        let n = safety_number((&a.id(), &a.x25519_public()), (&b.id(), &b.x25519_public()));
        let text = safety_text(&a.id(), &n);
        assert_eq!(parse_safety_text(&text).unwrap(), (a.id(), n.clone()));
        assert_eq!(
            parse_safety_text(&text.to_ascii_uppercase()).unwrap(),
            (a.id(), n)
        );
        for bad in [
            "",
            "ferry-safety:1:",
            "ferry-safety:2:abc:123",
            &format!("{SAFETY_SCHEME}nothex:{}", "1".repeat(60)),
            &format!("{SAFETY_SCHEME}{}:{}", a.id(), "1".repeat(59)),
            &format!("{SAFETY_SCHEME}{}:{}x", a.id(), "1".repeat(59)),
        ] {
            assert!(parse_safety_text(bad).is_err(), "{bad:?}");
        }
    }
}
