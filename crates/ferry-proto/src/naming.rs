//! Receive-side file naming and file-type classification (no I/O; creating the files is
//! `ferry_core::files`).
//!
//! Every name chosen by a remote sender goes through this module before it touches the disk.
//! Invariants:
//! - [`safe_name`] returns one path component that is non-empty, at most [`MAX_NAME_BYTES`]
//!   bytes, free of `/`, `\`, NUL, control, bidi-control, zero-width and Windows-forbidden
//!   characters, is never `.` or `..`, has no leading whitespace and no trailing dot or
//!   whitespace, and is never a Windows device name. It is idempotent.
//! - [`safe_relative_path`] yields only such components, so joined onto a directory it stays
//!   inside that directory.
//! - [`numbered`] gives the candidates a caller creating a file tries when a name is taken:
//!   `name`, `name (1)`, `name (2)`, … where the number goes before the extension as defined
//!   below, never longer than [`MAX_NAME_BYTES`].
//! - [`classify`] and [`classify_remote`] decide from the name alone; a file is never trusted
//!   because of its content.
//!
//! The "extension" used for truncation and numbering is the part after the last `.` when that
//! dot is not the first character and the part is 1 to 16 bytes long (`archive.tar.gz` has the
//! extension `.gz`, so its numbered form is `archive.tar (1).gz`; `.bashrc` has none).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::limits::MAX_NAME;
pub use crate::limits::MAX_NAME_BYTES;
use crate::ProtoError;

/// Longest extension (without its dot) kept intact by truncation and numbering.
const MAX_EXT_BYTES: usize = 16;
/// Most components kept by [`safe_relative_path`].
const MAX_COMPONENTS: usize = 64;
/// Name used when nothing usable is left.
const FALLBACK_NAME: &str = "file";
/// Media type of anything `mime_guess` does not know.
const UNKNOWN_MEDIA_TYPE: &str = "application/octet-stream";

/// Extensions (lower case) whose files a double-click may run or that carry active content.
const DANGEROUS_EXTENSIONS: &[&str] = &[
    // Required set.
    "exe",
    "com",
    "scr",
    "msi",
    "msix",
    "msp",
    "bat",
    "cmd",
    "ps1",
    "psm1",
    "vbs",
    "vbe",
    "js",
    "jse",
    "wsf",
    "wsh",
    "hta",
    "cpl",
    "msc",
    "jar",
    "reg",
    "lnk",
    "url",
    "scf",
    "pif",
    "gadget",
    "application",
    "appx",
    "appxbundle",
    "sh",
    "bash",
    "zsh",
    "csh",
    "ksh",
    "command",
    "run",
    "bin",
    "app",
    "pkg",
    "dmg",
    "deb",
    "rpm",
    "apk",
    "appimage",
    "desktop",
    "py",
    "pyw",
    "pl",
    "rb",
    "php",
    "iso",
    "img",
    "vhd",
    "vhdx",
    "dll",
    "so",
    "dylib",
    "action",
    "workflow",
    "xll",
    "docm",
    "xlsm",
    "pptm",
    // Further Windows handlers that run code.
    "msixbundle",
    "appref-ms",
    "settingcontent-ms",
    "library-ms",
    "diagcab",
    "chm",
    "hlp",
    "inf",
    "ins",
    "isp",
    "job",
    "msh",
    "mst",
    "ps1xml",
    "psc1",
    "psd1",
    "ws",
    "wsc",
    "xbap",
    "jnlp",
    // Other macro-enabled Office formats.
    "dotm",
    "xltm",
    "xlam",
    "potm",
    "ppam",
    "ppsm",
    "sldm",
    // macOS files that open a shell or run a target.
    "terminal",
    "tool",
    "fileloc",
];

/// What a file is, from its (cleaned) name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileKind {
    /// Media type guessed from the extension ("application/octet-stream" when unknown).
    pub media_type: String,
    /// Executable, script, installer, shortcut, or anything a double-click would run.
    pub dangerous: bool,
}

/// Checks and normalises a display name (ours, or one a peer sends): trimmed, non-empty, at
/// most [`MAX_NAME`] bytes, with no control or bidi-control characters.
pub fn clean_display_name(name: &str) -> Result<String, ProtoError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ProtoError::InvalidInput("the name is empty".into()));
    }
    if name.len() > MAX_NAME {
        return Err(ProtoError::TooLong {
            what: "name",
            len: name.len(),
            max: MAX_NAME,
        });
    }
    if name.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return Err(ProtoError::InvalidInput(
            "the name has control or bidi characters".into(),
        ));
    }
    Ok(name.to_string())
}

/// Reduces a name chosen by a remote sender to one safe path component (see the module doc).
///
/// Keeps only the text after the last `/` or `\`, removes control, bidi-control, zero-width and
/// Windows-forbidden (`< > : " | ? *`) characters, trims leading whitespace and trailing dots
/// and whitespace, prefixes Windows device names (`CON`, `nul.tar.gz`, `COM¹`, …) with `_`, and
/// truncates to [`MAX_NAME_BYTES`] at a char boundary keeping a short extension. A name left
/// empty (`""`, `.`, `..`, `...`) becomes `"file"`. A leading dot is kept.
pub fn safe_name(remote: &str) -> String {
    let last = remote.rsplit(is_separator).next().unwrap_or(remote);
    clean_component(last).unwrap_or_else(|| FALLBACK_NAME.to_owned())
}

/// Cleans a relative path from a folder offer into components that stay inside any base.
///
/// Every component goes through the same cleaning as [`safe_name`]; components that are or
/// become empty (`""`, `.`, `..`, `...`, only control characters) are dropped, not mapped to
/// `"file"`. When more than 64 components remain, the first 63 and the last are kept, so the
/// file name survives. Returns `None` if nothing is left.
pub fn safe_relative_path(remote: &str) -> Option<PathBuf> {
    let mut components = remote.split(is_separator).filter_map(clean_component);
    let mut path = PathBuf::new();
    for component in components.by_ref().take(MAX_COMPONENTS - 1) {
        path.push(component);
    }
    if let Some(last) = components.next_back() {
        path.push(last);
    }
    if path.as_os_str().is_empty() {
        None
    } else {
        Some(path)
    }
}

/// Classifies a name.
///
/// The name is cleaned with [`safe_name`] first, so `"evil.exe. "` classifies like `evil.exe`.
/// The media type comes from the last extension; `dangerous` is set when the last extension
/// (case-insensitive, also for `invoice.pdf.exe` or a bare `.exe`) is executable or active.
pub fn classify(name: &str) -> FileKind {
    let name = safe_name(name);
    let ext = name
        .rsplit_once('.')
        .map(|(_, ext)| ext)
        .filter(|ext| !ext.is_empty());
    let media_type = ext
        .and_then(|ext| mime_guess::from_ext(ext).first())
        .map_or_else(
            || UNKNOWN_MEDIA_TYPE.to_owned(),
            |mime| mime.essence_str().to_owned(),
        );
    let dangerous = ext.is_some_and(|ext| {
        let ext = ext.to_lowercase();
        DANGEROUS_EXTENSIONS.contains(&ext.as_str())
    });
    FileKind {
        media_type,
        dangerous,
    }
}

/// Classifies the sender's original name: like `classify(&safe_name(remote))`, and dangerous if the original hid
/// its real extension with bidi controls (e.g. "report\u{202E}fdp.exe").
///
/// Any bidi control anywhere in `remote` makes the file dangerous.
pub fn classify_remote(remote: &str) -> FileKind {
    let mut kind = classify(&safe_name(remote));
    if remote.chars().any(is_bidi_control) {
        kind.dangerous = true;
    }
    kind
}

/// The `n`-th candidate for a clean `name` when earlier ones are taken: `name` itself for 0,
/// else `stem (n).ext`, within [`MAX_NAME_BYTES`].
pub fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    let suffix = format!(" ({n})");
    let (stem, ext) = split_ext(name);
    let room = MAX_NAME_BYTES.saturating_sub(suffix.len() + ext.len());
    let stem = &stem[..floor_char_boundary(stem, room)];
    format!("{stem}{suffix}{ext}")
}

/// Cleans one component; `None` when nothing usable is left.
fn clean_component(component: &str) -> Option<String> {
    let stripped: String = component.chars().filter(|&c| !is_removed(c)).collect();
    let mut name = truncate_name(trim_name(&stripped));
    if name.is_empty() {
        return None;
    }
    // Checked after truncation, which can expose a device name ("CON" + spaces + ".txt").
    if is_reserved(&name) {
        name.insert(0, '_');
        // The `_` keeps the name non-empty and non-reserved through this second cut.
        name = truncate_name(&name);
    }
    Some(name)
}

/// Trims leading whitespace and trailing dots and whitespace.
fn trim_name(name: &str) -> &str {
    name.trim_start()
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace())
}

/// Cuts a trimmed name to [`MAX_NAME_BYTES`] at a char boundary, keeping a short extension.
fn truncate_name(name: &str) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name.to_owned();
    }
    let (stem, ext) = split_ext(name);
    let stem = &stem[..floor_char_boundary(stem, MAX_NAME_BYTES - ext.len())];
    let mut cut = String::with_capacity(MAX_NAME_BYTES);
    cut.push_str(stem);
    cut.push_str(ext);
    // Without a kept extension the cut can end in a dot or space.
    trim_name(&cut).to_owned()
}

/// Splits off the extension, dot included (`"a.tar.gz"` → `("a.tar", ".gz")`); `""` if none.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(dot) if dot > 0 && (2..=MAX_EXT_BYTES + 1).contains(&(name.len() - dot)) => {
            name.split_at(dot)
        }
        _ => (name, ""),
    }
}

/// Largest char boundary of `s` not above `max`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut index = max;
    while !s.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// Whether Windows would open a device instead of a file with this name.
fn is_reserved(name: &str) -> bool {
    let base = name.split('.').next().unwrap_or(name).trim_end();
    let upper = base.to_uppercase();
    match upper.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" => true,
        _ => {
            (upper.starts_with("COM") || upper.starts_with("LPT"))
                && matches!(
                    &upper[3..],
                    "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "¹" | "²" | "³"
                )
        }
    }
}

/// `/` or `\`.
fn is_separator(c: char) -> bool {
    c == '/' || c == '\\'
}

/// Characters never kept in a name.
fn is_removed(c: char) -> bool {
    c.is_control()
        || is_separator(c)
        || is_bidi_control(c)
        || matches!(c, '\u{200B}'..='\u{200D}' | '\u{FEFF}')
        || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*')
}

/// Unicode bidi formatting characters that can reorder how a name is displayed (and so
/// disguise an extension or a display name).
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::Path;

    const TABLE: &[(&str, &str)] = &[
        ("..\\..\\x", "x"),
        ("a/../../b", "b"),
        ("../../etc/passwd", "passwd"),
        ("CON.txt", "_CON.txt"),
        ("con", "_con"),
        ("LPT9.tar.gz", "_LPT9.tar.gz"),
        ("report\u{202E}fdp.exe", "reportfdp.exe"),
        ("name. . ", "name"),
        ("\u{0}evil\n.txt", "evil.txt"),
        ("...", "file"),
        ("", "file"),
        (".", "file"),
        ("..", "file"),
        ("C:\\Windows\\system32\\cmd.exe", "cmd.exe"),
        (".bashrc", ".bashrc"),
        ("a<b>c:d|e?f*g\"h", "abcdefgh"),
        ("  spaced name.txt  ", "spaced name.txt"),
        ("zero\u{200B}\u{FEFF}width\u{200D}.png", "zerowidth.png"),
        ("\u{2067}bidi\u{2069}\u{200F}\u{061C}.txt", "bidi.txt"),
        ("c1\u{85}\u{9F}del\u{7F}.txt", "c1del.txt"),
        ("Nul.tar.gz", "_Nul.tar.gz"),
        ("COM\u{b9}.txt", "_COM\u{b9}.txt"),
        ("lpt\u{b3}", "_lpt\u{b3}"),
        ("nul .txt", "_nul .txt"),
        ("aux.", "_aux"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("COM10", "COM10"),
        ("com", "com"),
        ("dir/", "file"),
    ];

    /// Checks every invariant `safe_name` promises.
    fn assert_safe(name: &str) {
        assert!(!name.is_empty(), "{name:?}");
        assert!(name.len() <= MAX_NAME_BYTES, "{name:?}");
        assert!(!name.chars().any(is_removed), "{name:?}");
        assert!(name != "." && name != "..", "{name:?}");
        assert!(!name.starts_with(char::is_whitespace), "{name:?}");
        assert!(
            !name.ends_with(|c: char| c == '.' || c.is_whitespace()),
            "{name:?}"
        );
        assert!(!is_reserved(name), "{name:?}");
        assert_eq!(safe_name(name), name, "not idempotent");
    }

    #[test]
    fn hostile_names_map_to_expected() {
        for (remote, expected) in TABLE {
            assert_eq!(safe_name(remote), *expected, "for {remote:?}");
        }
    }

    #[test]
    fn hostile_names_are_idempotent_and_safe() {
        for (remote, _) in TABLE {
            assert_safe(&safe_name(remote));
        }
    }

    #[test]
    fn long_ascii_name_is_truncated_keeping_extension() {
        let remote = format!("{}.txt", "a".repeat(296));
        assert_eq!(remote.len(), 300);
        let name = safe_name(&remote);
        assert!(name.len() <= MAX_NAME_BYTES);
        assert_eq!(name.len(), MAX_NAME_BYTES);
        assert!(name.ends_with(".txt"));
        assert_safe(&name);
    }

    #[test]
    fn long_multibyte_name_is_truncated_on_char_boundary_keeping_extension() {
        let remote = format!("{}.jpg", "é".repeat(150));
        assert!(remote.len() > MAX_NAME_BYTES);
        let name = safe_name(&remote);
        assert!(name.len() <= MAX_NAME_BYTES);
        assert!(name.ends_with(".jpg"));
        assert!(name.trim_end_matches(".jpg").chars().all(|c| c == 'é'));
        assert_safe(&name);

        let emoji = format!("{}.png", "😀".repeat(100));
        let name = safe_name(&emoji);
        assert!(name.len() <= MAX_NAME_BYTES && name.ends_with(".png"));
        assert_safe(&name);
    }

    #[test]
    fn long_extension_is_not_kept_and_cut_is_trimmed() {
        let remote = format!("{}.{}", "b".repeat(254), "x".repeat(40));
        let name = safe_name(&remote);
        assert_eq!(name, "b".repeat(254));

        let dots = format!("{}{}", ".".repeat(300), "y".repeat(20));
        assert_eq!(safe_name(&dots), "file");
    }

    #[test]
    fn truncation_exposing_device_name_gets_underscore() {
        let remote = format!("CON{}x.txt", " ".repeat(300));
        let name = safe_name(&remote);
        assert!(name.starts_with("_CON"));
        assert!(name.ends_with(".txt"));
        assert_safe(&name);
    }

    #[test]
    fn reserved_name_at_length_limit_stays_within_limit() {
        let remote = format!("aux.{}", "z".repeat(300));
        let name = safe_name(&remote);
        assert!(name.starts_with("_aux."));
        assert_safe(&name);
    }

    #[test]
    fn leading_dot_is_kept_but_only_dots_become_file() {
        assert_eq!(safe_name(".config.toml"), ".config.toml");
        assert_eq!(safe_name("..hidden"), "..hidden");
        assert_eq!(safe_name(". . ."), "file");
        assert_eq!(safe_name("\u{202E}"), "file");
    }

    #[test]
    fn random_strings_satisfy_invariants() {
        const ALPHABET: &[char] = &[
            'a', 'Z', 'C', 'O', 'N', 'L', 'P', 'T', 'M', 'x', 't', '1', '9', '0', '.', '.', ' ',
            ' ', '/', '\\', '\0', '\n', '\t', '\u{7F}', '\u{85}', '\u{A0}', '\u{202E}', '\u{2066}',
            '\u{200B}', '\u{FEFF}', ':', '*', '?', '"', 'é', '日', '😀', '¹', '³', '\u{3000}', '(',
            ')',
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        for _ in 0..5_000 {
            let len = match next() % 4 {
                0 => next() % 8,
                1 | 2 => next() % 40,
                _ => 200 + next() % 200,
            };
            let remote: String = (0..len)
                .map(|_| ALPHABET[next() % ALPHABET.len()])
                .collect();
            let name = safe_name(&remote);
            assert_safe(&name);
            for n in [1, 42, 9_999] {
                assert_safe(&numbered(&name, n));
            }
            if let Some(path) = safe_relative_path(&remote) {
                assert!(path.components().count() <= MAX_COMPONENTS);
                for component in path.components() {
                    match component {
                        std::path::Component::Normal(part) => assert_safe(part.to_str().unwrap()),
                        other => panic!("{other:?} in {path:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn relative_path_drops_dot_components() {
        assert_eq!(
            safe_relative_path("photos/../../x/./y.jpg").unwrap(),
            PathBuf::from("photos/x/y.jpg")
        );
        assert_eq!(
            safe_relative_path("\\a\\\\CON\\b .\\c.txt").unwrap(),
            PathBuf::from("a/_CON/b/c.txt")
        );
    }

    #[test]
    fn relative_path_of_only_dots_is_none() {
        assert_eq!(safe_relative_path("../.."), None);
        assert_eq!(safe_relative_path(""), None);
        assert_eq!(safe_relative_path("/./\\.../"), None);
    }

    #[test]
    fn relative_path_keeps_at_most_64_components_and_the_leaf() {
        let remote = format!("{}leaf.txt", "d/".repeat(100));
        let path = safe_relative_path(&remote).unwrap();
        assert_eq!(path.components().count(), MAX_COMPONENTS);
        assert_eq!(path.file_name().unwrap(), "leaf.txt");

        let exact = format!("{}leaf.txt", "d/".repeat(63));
        assert_eq!(safe_relative_path(&exact).unwrap().components().count(), 64);
    }

    #[test]
    fn relative_path_stays_inside_base() {
        let base = Path::new("/base/dir");
        for remote in [
            "../../etc/passwd",
            "/etc/passwd",
            "C:\\x",
            "a/../../../b",
            "\\\\srv\\share",
        ] {
            let joined = base.join(safe_relative_path(remote).unwrap());
            assert!(joined.starts_with(base), "{joined:?}");
        }
    }

    #[test]
    fn numbered_names_put_suffix_before_last_extension() {
        assert_eq!(numbered("archive.tar.gz", 1), "archive.tar (1).gz");
        assert_eq!(numbered(".bashrc", 2), ".bashrc (2)");
        assert_eq!(numbered("Photos", 3), "Photos (3)");
        let long = safe_name(&format!("{}.txt", "é".repeat(200)));
        let candidate = numbered(&long, 9_999);
        assert!(candidate.len() <= MAX_NAME_BYTES);
        assert!(candidate.ends_with(" (9999).txt"));
    }

    #[test]
    fn classify_image_is_jpeg_and_harmless() {
        let kind = classify("photo.JPG");
        assert_eq!(kind.media_type, "image/jpeg");
        assert!(!kind.dangerous);
    }

    #[test]
    fn classify_unknown_is_octet_stream() {
        for name in ["noext", "x.unknownext", ".bashrc", "trailing."] {
            let kind = classify(name);
            assert_eq!(kind.media_type, UNKNOWN_MEDIA_TYPE, "{name}");
            assert!(!kind.dangerous, "{name}");
        }
    }

    #[test]
    fn classify_flags_dangerous_last_extension() {
        for name in [
            "invoice.pdf.exe",
            "setup.MSI",
            "run.Sh",
            "evil.exe. ",
            "evil.exe\u{200B}",
            ".exe",
            "macro.docm",
            "link.lnk",
        ] {
            assert!(classify(name).dangerous, "{name}");
        }
        assert!(!classify("notes.exe.txt").dangerous);
        assert!(!classify("doc.pdf").dangerous);
    }

    #[test]
    fn classify_remote_flags_bidi_disguised_extension() {
        let remote = "report\u{202E}fdp.exe";
        assert_eq!(safe_name(remote), "reportfdp.exe");
        assert!(classify_remote(remote).dangerous);
        let disguised = "photo\u{202E}gpj.txt";
        assert!(!classify(&safe_name(disguised)).dangerous);
        assert!(classify_remote(disguised).dangerous);
        assert_eq!(classify_remote("photo.jpg"), classify("photo.jpg"));
    }
}
