//! QR codes of invites and safety numbers ([`ferry_proto::qr`]), and reading one from a
//! picture file.

pub use ferry_proto::qr::*;

use std::path::Path;

use crate::Error;

/// Reads a Ferry invite from a picture file of its QR code (PNG, JPEG, WebP, BMP or GIF).
///
/// Every QR code found in the picture is tried; the first that holds a valid invite wins.
pub fn read_invite_image(path: &Path) -> Result<String, Error> {
    Ok(read_invite_bytes(&picture_file(path)?)?)
}

/// Reads a safety number's QR text (`ferry-safety:1:…`) from a picture file of its code.
pub fn read_safety_image(path: &Path) -> Result<String, Error> {
    Ok(read_safety_bytes(&picture_file(path)?)?)
}

/// The bytes of a picture file, refused before reading when it is too large for a picture of
/// a QR code.
fn picture_file(path: &Path) -> Result<Vec<u8>, Error> {
    let cannot =
        |e: std::io::Error| Error::InvalidInput(format!("cannot open {}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(cannot)?.len();
    if len > MAX_IMAGE_BYTES as u64 {
        return Err(Error::InvalidInput(format!(
            "{} is too large for a picture of a QR code ({len} bytes)",
            path.display()
        )));
    }
    std::fs::read(path).map_err(cannot)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn picture_files_that_hold_no_invite_get_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let text = tmp.path().join("notes.png");
        std::fs::write(&text, b"not a picture").unwrap();
        let e = read_invite_image(&text).unwrap_err();
        assert!(e.to_string().contains("not a picture"), "{e}");
        assert_eq!(e.code(), "invalid_input");
        let e = read_invite_image(&tmp.path().join("missing.png")).unwrap_err();
        assert!(e.to_string().contains("cannot open"), "{e}");
    }
}
