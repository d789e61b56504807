//! The Ferry desktop shell: a Tauri 2 window showing the web UI from `ui/dist`, holding the
//! home through [`engine`] like `ferry daemon` does.
//!
//! The configuration is the repository's root `tauri.conf.json`; the build script
//! and [`tauri::generate_context!`] below both read that file.

pub mod engine;

use serde::Serialize;
use tauri::Manager;

/// What the UI shows about the running app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppInfo {
    /// Product name from the Tauri configuration (`productName`).
    pub name: String,
    /// Version of this crate (the workspace version).
    pub version: String,
}

impl AppInfo {
    /// The info for this build: `product_name` if the config has one, else `package_name`.
    fn new(product_name: Option<&str>, package_name: &str) -> Self {
        Self {
            name: product_name.unwrap_or(package_name).to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// Returns the app's name and version to the UI.
#[tauri::command]
fn app_info(app: tauri::AppHandle) -> AppInfo {
    AppInfo::new(
        app.config().product_name.as_deref(),
        &app.package_info().name,
    )
}

/// Builds and runs the app until its last window closes.
///
/// # Errors
/// Returns Tauri's error when the window or webview cannot be created.
pub fn run() -> Result<(), tauri::Error> {
    let app = tauri::Builder::default()
        .manage(engine::AppState::new())
        .setup(|app| {
            tauri::async_runtime::spawn(engine::open(app.handle().clone()));
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            app_info,
            engine::status,
            engine::create_profile,
            engine::call
        ])
        .build(tauri::generate_context!("../tauri.conf.json"))?;
    app.run(|handle, event| {
        if let tauri::RunEvent::Exit = event {
            // Close connections gracefully and flush the store before the process ends.
            let state = handle.state::<engine::AppState>();
            tauri::async_runtime::block_on(async {
                if let Some(node) = state.node().await {
                    node.shutdown().await;
                }
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::AppInfo;

    #[test]
    fn app_info_prefers_product_name() {
        let info = AppInfo::new(Some("Ferry"), "ferry-app");
        assert_eq!(info.name, "Ferry");
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(AppInfo::new(None, "ferry-app").name, "ferry-app");
    }

    /// The UI (ui/src/appInfo.ts) reads exactly these two string fields.
    #[test]
    fn app_info_json_matches_the_ui() -> Result<(), serde_json::Error> {
        let json = serde_json::to_value(AppInfo::new(Some("Ferry"), "ferry-app"))?;
        assert_eq!(
            json,
            serde_json::json!({ "name": "Ferry", "version": env!("CARGO_PKG_VERSION") })
        );
        Ok(())
    }
}
