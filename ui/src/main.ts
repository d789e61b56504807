import { invoke, isTauri } from "@tauri-apps/api/core";
import { formatVersionLine, loadAppInfo, type AppInfoResult } from "./appInfo";

async function fetchAppInfo(): Promise<AppInfoResult> {
  if (!isTauri()) {
    return {
      ok: false,
      error: "Could not reach the Ferry backend: this page is not running inside the desktop app.",
    };
  }
  return loadAppInfo((cmd) => invoke(cmd));
}

function render(result: AppInfoResult): void {
  const nameEl = document.getElementById("app-name");
  const versionEl = document.getElementById("app-version");
  if (!nameEl || !versionEl) return;
  if (result.ok) {
    nameEl.textContent = result.info.name;
    versionEl.textContent = formatVersionLine(result.info);
    versionEl.classList.remove("error");
  } else {
    versionEl.textContent = `Error: ${result.error}`;
    versionEl.classList.add("error");
  }
}

void fetchAppInfo().then(render);
