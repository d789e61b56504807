//! QR codes of invites and safety numbers: SVG for the desktop UI, block characters for a
//! terminal, and reading one back from a picture of it (a screenshot or a photo), given as bytes.
//!
//! The invite is encoded in upper case so the QR code can use its compact alphanumeric mode;
//! [`Invite::parse`] accepts either case.

use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};

use crate::invite::Invite;
pub use crate::limits::{MAX_IMAGE_BYTES, MAX_IMAGE_SIDE};
use crate::ProtoError;

fn code(text: &str) -> Result<QrCode, ProtoError> {
    QrCode::with_error_correction_level(text.to_ascii_uppercase(), EcLevel::L)
        .map_err(|e| ProtoError::InvalidInput(format!("cannot make a QR code: {e}")))
}

/// The QR code as an SVG document (dark modules on white, with a quiet zone).
pub fn svg(text: &str) -> Result<String, ProtoError> {
    Ok(code(text)?
        .render::<svg::Color>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// The QR code as half-block characters for a terminal (two modules per character).
pub fn terminal(text: &str) -> Result<String, ProtoError> {
    Ok(code(text)?
        .render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// Reads a Ferry invite from an encoded picture in memory (PNG, JPEG, WebP, BMP or GIF): a
/// screenshot pasted from the clipboard, or a camera frame.
pub fn read_invite_bytes(data: &[u8]) -> Result<String, ProtoError> {
    read_invite(&decode(data)?)
}

/// Reads a Ferry invite from a grey-scale picture (see [`read_invite_bytes`]).
pub fn read_invite(picture: &image::GrayImage) -> Result<String, ProtoError> {
    read_with(picture, |text| {
        Invite::parse(text)?;
        Ok(text.to_ascii_lowercase())
    })
}

/// Reads a safety number's QR text (`ferry-safety:1:…`, see
/// [`crate::keys::parse_safety_text`]) from an encoded picture in memory.
pub fn read_safety_bytes(data: &[u8]) -> Result<String, ProtoError> {
    read_with(&decode(data)?, |text| {
        crate::keys::parse_safety_text(text)?;
        Ok(text.to_ascii_lowercase())
    })
}

/// Decodes a picture, bounded in bytes and in pixels.
fn decode(data: &[u8]) -> Result<image::GrayImage, ProtoError> {
    if data.len() > MAX_IMAGE_BYTES {
        return Err(ProtoError::InvalidInput(format!(
            "this picture is too large ({} bytes; the limit is {MAX_IMAGE_BYTES})",
            data.len()
        )));
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| ProtoError::InvalidInput(format!("cannot read the picture: {e}")))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    reader.limits(limits);
    let picture = reader.decode().map_err(|e| {
        ProtoError::InvalidInput(format!("this is not a picture Ferry can read: {e}"))
    })?;
    Ok(picture.to_luma8())
}

/// The first QR code in the picture whose text `accept` takes.
fn read_with(
    picture: &image::GrayImage,
    accept: impl Fn(&str) -> Result<String, ProtoError>,
) -> Result<String, ProtoError> {
    let mut prepared = rqrr::PreparedImage::prepare(picture.clone());
    let grids = prepared.detect_grids();
    if grids.is_empty() {
        return Err(ProtoError::InvalidInput(
            "no QR code found in this picture".into(),
        ));
    }
    let mut last = None;
    // A grid that does not decode is skipped: the next one may.
    for (_, text) in grids.iter().filter_map(|g| g.decode().ok()) {
        match accept(text.trim()) {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        ProtoError::InvalidInput("the QR code in this picture cannot be read".into())
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
        Invite {
            version: 1,
            id: iroh_base::SecretKey::from_bytes(&[7; 32]).public(),
            addr: crate::model::WireAddr {
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

    fn png(picture: &image::GrayImage) -> Vec<u8> {
        let mut bytes = Vec::new();
        picture
            .write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
        bytes
    }

    #[test]
    fn an_invite_survives_a_screenshot_of_its_qr_code() {
        let invite = invite();
        for (scale, offset) in [(4, 37), (3, 11)] {
            assert_eq!(
                read_invite_bytes(&png(&picture(&invite, scale, offset))).unwrap(),
                invite.to_ascii_lowercase()
            );
        }
    }

    #[test]
    fn a_safety_number_survives_a_screenshot_and_an_invite_is_not_one() {
        let id = iroh_base::SecretKey::from_bytes(&[7; 32]).public();
        let number = crate::keys::safety_number((&id, &[1; 32]), (&id, &[2; 32]));
        let text = crate::keys::safety_text(&id, &number);
        let read = read_safety_bytes(&png(&picture(&text, 4, 9))).unwrap();
        assert_eq!(crate::keys::parse_safety_text(&read).unwrap(), (id, number));
        let e = read_safety_bytes(&png(&picture(&invite(), 3, 0))).unwrap_err();
        assert!(e.to_string().contains("not a Ferry safety number"), "{e}");
    }

    #[test]
    fn pictures_without_an_invite_get_clear_errors() {
        let blank = png(&image::GrayImage::from_pixel(64, 64, image::Luma([255])));
        let e = read_invite_bytes(&blank).unwrap_err();
        assert!(e.to_string().contains("no QR code"), "{e}");

        let other = png(&picture("HTTPS://EXAMPLE.COM", 4, 0));
        assert!(matches!(
            read_invite_bytes(&other),
            Err(ProtoError::InvalidInvite(_))
        ));

        for not_a_picture in [&b"not a picture"[..], b"GIF89a but not really", b""] {
            let e = read_invite_bytes(not_a_picture).unwrap_err();
            assert!(e.to_string().contains("not a picture"), "{e}");
        }
    }

    #[test]
    fn oversized_pictures_are_refused_before_decoding() {
        let e = read_invite_bytes(&vec![0; MAX_IMAGE_BYTES + 1]).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }
}
