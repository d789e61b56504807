/**
 * What the desktop shell reports about itself, and how the page shows it.
 * Kept free of DOM and Tauri imports so it can be unit-tested under Node.
 */

/** Mirrors `AppInfo` in src-tauri/src/lib.rs (the `app_info` command). */
export interface AppInfo {
  name: string;
  version: string;
}

/** The result of asking the backend, ready for display. */
export type AppInfoResult =
  | { ok: true; info: AppInfo }
  | { ok: false; error: string };

/** Calls a backend command; `invoke` from `@tauri-apps/api/core` fits. */
export type InvokeFn = (cmd: string) => Promise<unknown>;

/** The line shown under the app name, e.g. `version 0.1.0`. */
export function formatVersionLine(info: AppInfo): string {
  const version = info.version.trim();
  return version === "" ? "version unknown" : `version ${version}`;
}

/** True when `value` has the shape of {@link AppInfo}. */
export function isAppInfo(value: unknown): value is AppInfo {
  if (typeof value !== "object" || value === null) return false;
  const record = value as Record<string, unknown>;
  return typeof record.name === "string" && typeof record.version === "string";
}

/** Turns anything thrown or rejected into a readable message. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  if (typeof error === "string") return error;
  try {
    return JSON.stringify(error) ?? String(error);
  } catch {
    return String(error);
  }
}

/** Asks the backend for its name and version; never throws. */
export async function loadAppInfo(invoke: InvokeFn): Promise<AppInfoResult> {
  try {
    const value = await invoke("app_info");
    if (!isAppInfo(value)) {
      return { ok: false, error: `unexpected reply from app_info: ${describeError(value)}` };
    }
    return { ok: true, info: value };
  } catch (error) {
    return { ok: false, error: describeError(error) };
  }
}
