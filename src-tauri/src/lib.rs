//! The Ferry desktop shell: a Tauri 2 window showing the web UI from `ui/dist`.
//!
//! The configuration is the repository's root `tauri.conf.json`; the build script
//! and [`tauri::generate_context!`] below both read that file.

use serde::Serialize;

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
    tauri::Builder::default()
        .invoke_handler(tauri::generate_handler![app_info])
        .run(tauri::generate_context!("../tauri.conf.json"))
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
