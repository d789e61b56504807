//! Build script: reads the app configuration from the repository root.

/// The single Tauri configuration file, relative to this crate's folder.
/// `generate_context!` in src/lib.rs names the same file.
const CONFIG: &str = "../tauri.conf.json";

fn main() {
    let attributes = tauri_build::Attributes::new().config_path(CONFIG);
    if let Err(error) = tauri_build::try_build(attributes) {
        // A build script reports failure by exiting non-zero; cargo shows stderr.
        eprintln!("error: tauri-build failed: {error:#}");
        std::process::exit(1);
    }
}
