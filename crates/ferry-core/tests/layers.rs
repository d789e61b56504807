//! The layer rule, checked on the source: every module imports only from layers below its own,
//! features never import each other, no module imports in a circle, and the protocol crate
//! stays pure (no async runtime, network or store anywhere in its dependency tree).
//!
//! The tables below are the allowed picture; there are no exceptions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A layer, lowest first. A module may use any module of a lower layer; of its own layer only
/// where `peers_allowed` says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    /// `ferry-proto`, as seen from `ferry-core` (re-exported modules).
    Proto,
    /// I/O adapters of protocol things: files, the home folder, async framing, errors.
    Base,
    /// The sled store.
    Store,
    /// Services, small handles a feature is built from: the bus, links and presence, sessions,
    /// the inbox, the outbox, the roster.
    Services,
    /// Features: messaging, pairing, transfer, trust, reset, timers. Never each other.
    Features,
    /// The facade, which builds everything.
    Node,
    /// The call surface over the facade (the control socket and its client).
    Surface,
}

impl Layer {
    fn peers_allowed(self) -> bool {
        matches!(self, Layer::Base | Layer::Services)
    }
}

/// `ferry-proto`'s modules: each level may use only lower levels.
const PROTO: &[(&str, u8)] = &[
    ("error", 0),
    ("limits", 0),
    ("model", 1),
    ("e2e", 1),
    ("keys", 2),
    ("naming", 2),
    ("wire", 3),
    ("records", 2),
    ("invite", 3),
    ("group", 2),
    ("qr", 4),
    ("fuzzing", 5),
];

/// `ferry-core`'s modules and the protocol modules it re-exports.
const CORE: &[(&str, Layer)] = &[
    ("e2e", Layer::Proto),
    ("invite", Layer::Proto),
    ("limits", Layer::Proto),
    ("model", Layer::Proto),
    ("naming", Layer::Proto),
    ("error", Layer::Base),
    ("home", Layer::Base),
    ("files", Layer::Base),
    ("identity", Layer::Base),
    ("vault", Layer::Base),
    ("qr", Layer::Base),
    ("wire", Layer::Base),
    ("store", Layer::Store),
    ("bus", Layer::Services),
    ("net", Layer::Services),
    ("sessions", Layer::Services),
    ("inbox", Layer::Services),
    ("outbox", Layer::Services),
    ("contacts", Layer::Services),
    ("chat", Layer::Features),
    ("groups", Layer::Features),
    ("pairing", Layer::Features),
    ("transfer", Layer::Features),
    ("trust", Layer::Features),
    ("reset", Layer::Features),
    ("timers", Layer::Features),
    ("backup", Layer::Features),
    ("node", Layer::Node),
    ("control", Layer::Surface),
];

/// Items of a crate root (re-exports) and the module each comes from. A new one must be added
/// here, so an import through the root cannot hide an arrow.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("ProtoError", "error"),
    ("Error", "error"),
    ("Quota", "error"),
    ("Node", "node"),
    ("Config", "node"),
    ("NetSettings", "node"),
    ("RelayChoice", "node"),
    ("default_home", "home"),
];

/// Crates the protocol crate must never depend on, directly or through others.
const IMPURE: &[&str] = &["tokio", "iroh", "iroh-blobs", "sled", "quinn", "mio"];

/// This package's folder, as cargo says when it runs the test (the compile-time value can name
/// another checkout when several share one target folder).
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn src(krate: &str) -> PathBuf {
    manifest_dir().join("..").join(krate).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        panic!("cannot read {}", dir.display());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/e2e/tests.rs` → `e2e`); `None` for the root.
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// The top-level modules named after every `crate::` in `code` (comments removed), including
/// each item of a `crate::{a, b::c}` group.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut refs = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `ferry_crate::`
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        refs.insert(ident(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 || c != '{' {
                    item.push(c);
                }
            }
            refs.insert(ident(item.trim()));
        } else {
            refs.insert(ident(rest));
        }
    }
    refs.retain(|r| !r.is_empty() && r != "self");
    refs
}

/// Module → the crate modules it refers to, for one crate.
fn imports(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let root = src(krate);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&root, &file) else {
            continue;
        };
        let code = std::fs::read_to_string(&file).unwrap_or_default();
        let refs = crate_refs(&code).into_iter().map(|r| {
            match ROOT_ITEMS.iter().find(|(item, _)| *item == r) {
                Some((_, module)) => module.to_string(),
                None if r.starts_with(char::is_uppercase) => {
                    panic!("{}: crate::{r} is not in ROOT_ITEMS", file.display())
                }
                None => r,
            }
        });
        let entry = map.entry(module.clone()).or_default();
        entry.extend(refs.into_iter().filter(|r| *r != module));
    }
    map
}

/// Everything reachable from `from` in one or more steps.
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&String> = graph.get(from).into_iter().flatten().collect();
    while let Some(next) = stack.pop() {
        if seen.insert(next.clone()) {
            stack.extend(graph.get(next).into_iter().flatten());
        }
    }
    seen
}

/// The modules of `map` that take part in an import circle.
fn cycles(map: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    map.keys()
        .filter(|m| reachable(map, m).contains(*m))
        .cloned()
        .collect()
}

#[test]
fn protocol_modules_import_only_lower_levels() {
    let level: BTreeMap<&str, u8> = PROTO.iter().copied().collect();
    let map = imports("ferry-proto");
    let mut wrong = Vec::new();
    for (module, refs) in &map {
        let Some(mine) = level.get(module.as_str()) else {
            panic!("ferry-proto module `{module}` is not in the PROTO table");
        };
        for r in refs {
            match level.get(r.as_str()) {
                Some(theirs) if theirs < mine => {}
                Some(_) => wrong.push(format!("{module} -> {r}")),
                None => panic!("`{module}` refers to crate::{r}, which the PROTO table lacks"),
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the levels: {wrong:?}");
    assert!(
        cycles(&map).is_empty(),
        "import circles: {:?}",
        cycles(&map)
    );
}

#[test]
fn engine_modules_import_only_lower_layers() {
    let layer: BTreeMap<&str, Layer> = CORE.iter().copied().collect();
    let map = imports("ferry-core");
    let mut found = BTreeSet::new();
    for (module, refs) in &map {
        let Some(&mine) = layer.get(module.as_str()) else {
            panic!("ferry-core module `{module}` is not in the CORE table");
        };
        for r in refs {
            let Some(&theirs) = layer.get(r.as_str()) else {
                panic!("`{module}` refers to crate::{r}, which the CORE table lacks");
            };
            let ok = theirs < mine || (theirs == mine && mine.peers_allowed());
            if !ok {
                found.insert((module.clone(), r.clone()));
            }
        }
    }
    assert!(found.is_empty(), "imports against the layers: {found:?}");
    assert!(
        cycles(&map).is_empty(),
        "import circles: {:?}",
        cycles(&map)
    );
}

#[test]
fn the_protocol_crate_depends_on_no_runtime_network_or_store() {
    let lock_path = manifest_dir().join("../../Cargo.lock");
    let lock = std::fs::read_to_string(&lock_path).unwrap_or_default();
    // Cargo.lock: `[[package]]` blocks with `name = "…"` and a `dependencies = [ "a", "b 1.0" ]`.
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .map(|n| n.trim_matches('"').to_string())
            .unwrap_or_default();
        let list = block
            .split_once("dependencies = [")
            .map(|(_, rest)| rest.split(']').next().unwrap_or(""))
            .unwrap_or("");
        let names = list
            .split(',')
            .map(|d| d.trim().trim_matches('"'))
            .filter(|d| !d.is_empty())
            .map(|d| d.split(' ').next().unwrap_or(d).to_string());
        deps.entry(name).or_default().extend(names);
    }
    assert!(
        deps.contains_key("ferry-proto"),
        "ferry-proto not in Cargo.lock"
    );
    let seen = reachable(&deps, "ferry-proto");
    let bad: Vec<_> = IMPURE.iter().filter(|c| seen.contains(**c)).collect();
    assert!(bad.is_empty(), "ferry-proto pulls in {bad:?}");
    assert!(
        seen.contains("chacha20poly1305"),
        "the walk found too little"
    );
}

#[test]
fn the_scanner_sees_grouped_and_nested_imports() {
    let refs = crate_refs(
        "use crate::{chat, net::{self, X}, Error};\nlet x = crate::store::Store::open(); // crate::node\n",
    );
    let want: BTreeSet<String> = ["chat", "net", "Error", "store"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(refs, want);
}
