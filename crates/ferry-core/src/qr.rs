//! QR codes of invites: SVG for the desktop UI, block characters for a terminal, and reading
//! an invite back from a picture of one (a screenshot or a photo).
//!
//! The invite is encoded in upper case so the QR code can use its compact alphanumeric mode;
//! [`crate::pairing::Invite::parse`] accepts either case.

use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};

use std::path::Path;

use crate::Error;

/// Pictures larger than this on either side are refused before decoding.
pub const MAX_IMAGE_SIDE: u32 = 10_000;

fn code(text: &str) -> Result<QrCode, Error> {
    QrCode::with_error_correction_level(text.to_ascii_uppercase(), EcLevel::L)
        .map_err(|e| Error::InvalidInput(format!("cannot make a QR code: {e}")))
}

/// The QR code as an SVG document (dark modules on white, with a quiet zone).
pub fn svg(text: &str) -> Result<String, Error> {
    Ok(code(text)?
        .render::<svg::Color>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// The QR code as half-block characters for a terminal (two modules per character).
pub fn terminal(text: &str) -> Result<String, Error> {
    Ok(code(text)?
        .render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Reads a Ferry invite from a picture of its QR code (PNG, JPEG, WebP, BMP or GIF).
///
/// Every QR code found in the picture is tried; the first that holds a valid invite wins.
pub fn read_invite_image(path: &Path) -> Result<String, Error> {
    let cannot =
        |e: std::io::Error| Error::InvalidInput(format!("cannot open {}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(cannot)?.len();
    if len > MAX_IMAGE_BYTES as u64 {
        return Err(Error::InvalidInput(format!(
            "{} is too large for a picture of a QR code ({len} bytes)",
            path.display()
        )));
    }
    read_invite_bytes(&std::fs::read(path).map_err(cannot)?)
}

/// Pictures handed over as bytes (a pasted screenshot, a camera frame) larger than this are
/// refused before decoding.
pub const MAX_IMAGE_BYTES: usize = 32 * 1024 * 1024;

/// Reads a Ferry invite from an encoded picture in memory (PNG, JPEG, WebP, BMP or GIF): a
/// screenshot pasted from the clipboard, or a camera frame.
pub fn read_invite_bytes(data: &[u8]) -> Result<String, Error> {
    if data.len() > MAX_IMAGE_BYTES {
        return Err(Error::InvalidInput(format!(
            "this picture is too large ({} bytes; the limit is {MAX_IMAGE_BYTES})",
            data.len()
        )));
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| Error::InvalidInput(format!("cannot read the picture: {e}")))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    reader.limits(limits);
    let picture = reader
        .decode()
        .map_err(|e| Error::InvalidInput(format!("this is not a picture Ferry can read: {e}")))?;
    read_invite(&picture.to_luma8())
}

/// Reads a Ferry invite from a grey-scale picture (see [`read_invite_image`]).
pub fn read_invite(picture: &image::GrayImage) -> Result<String, Error> {
    let mut prepared = rqrr::PreparedImage::prepare(picture.clone());
    let grids = prepared.detect_grids();
    if grids.is_empty() {
        return Err(Error::InvalidInput(
            "no QR code found in this picture".into(),
        ));
    }
    let mut last = None;
    for grid in grids {
        match grid.decode() {
            Ok((_, text)) => match crate::pairing::Invite::parse(text.trim()) {
                Ok(_) => return Ok(text.trim().to_ascii_lowercase()),
                Err(e) => last = Some(e),
            },
            Err(e) => tracing::debug!("unreadable QR code: {e}"),
        }
    }
    Err(last.unwrap_or_else(|| {
        Error::InvalidInput("the QR code in this picture cannot be read".into())
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn invite_sized_text_renders_in_both_forms() {
        let text = format!("ferry:{}", "a".repeat(400));
        let s = svg(&text).unwrap();
        assert!(s.starts_with("<?xml") && s.contains("<svg"));
        let t = terminal(&text).unwrap();
        assert!(t.lines().count() > 20);
    }

    /// Draws `text`'s QR code at `scale` pixels a module into a bigger light-grey picture.
    fn picture(text: &str, scale: u32, offset: u32) -> image::GrayImage {
        let qr = code(text).unwrap();
        let w = qr.width() as u32;
        let colors = qr.to_colors();
        let side = (w + 8) * scale + 2 * offset;
        image::GrayImage::from_fn(side, side, |x, y| {
            let (mx, my) = (
                (x as i64 - offset as i64) / scale as i64 - 4,
                (y as i64 - offset as i64) / scale as i64 - 4,
            );
            let dark = mx >= 0
                && my >= 0
                && (mx as u32) < w
                && (my as u32) < w
                && colors[(my as u32 * w + mx as u32) as usize] == qrcode::Color::Dark;
            image::Luma([if dark { 20 } else { 235 }])
        })
    }

    /// A well-formed invite (made without a node: unit tests here start no endpoint).
    fn invite() -> String {
        crate::pairing::Invite {
            version: 1,
            id: iroh::SecretKey::from_bytes(&[7; 32]).public(),
            addr: crate::wire::WireAddr {
                relay: None,
                direct: vec!["127.0.0.1:4000".parse().unwrap()],
            },
            x25519: [9; 32],
            name: "Ann".into(),
            secret: [1; 16],
            expires_at: 4_000_000_000,
        }
        .to_text()
        .unwrap()
    }

    #[test]
    fn an_invite_survives_a_screenshot_of_its_qr_code() {
        let invite = invite();
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("shot.png");
        picture(&invite, 4, 37).save(&path).unwrap();
        assert_eq!(
            read_invite_image(&path).unwrap(),
            invite.to_ascii_lowercase()
        );
    }

    #[test]
    fn a_pasted_picture_reads_like_a_file() {
        let invite = invite();
        let mut png = Vec::new();
        picture(&invite, 3, 11)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(
            read_invite_bytes(&png).unwrap(),
            invite.to_ascii_lowercase()
        );
        let e = read_invite_bytes(b"GIF89a but not really").unwrap_err();
        assert!(e.to_string().contains("not a picture"), "{e}");
    }

    #[test]
    fn pictures_without_an_invite_get_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let blank = tmp.path().join("blank.png");
        image::GrayImage::from_pixel(64, 64, image::Luma([255]))
            .save(&blank)
            .unwrap();
        let e = read_invite_image(&blank).unwrap_err();
        assert!(e.to_string().contains("no QR code"), "{e}");

        let other = tmp.path().join("other.png");
        picture("HTTPS://EXAMPLE.COM", 4, 0).save(&other).unwrap();
        assert_eq!(
            read_invite_image(&other).unwrap_err().code(),
            "invalid_invite"
        );

        let text = tmp.path().join("notes.png");
        std::fs::write(&text, b"not a picture").unwrap();
        let e = read_invite_image(&text).unwrap_err();
        assert!(e.to_string().contains("not a picture"), "{e}");
        assert!(read_invite_image(&tmp.path().join("missing.png")).is_err());
    }
}
