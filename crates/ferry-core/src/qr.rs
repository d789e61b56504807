//! QR codes of invites: SVG for the desktop UI, block characters for a terminal.
//!
//! The invite is encoded in upper case so the QR code can use its compact alphanumeric mode;
//! [`crate::pairing::Invite::parse`] accepts either case.

use qrcode::render::{svg, unicode};
use qrcode::{EcLevel, QrCode};

use crate::Error;

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
}
