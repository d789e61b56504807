/** Light, dark, or whatever the system prefers. */
export type Theme = "light" | "dark" | "system";

const KEY = "ferry.theme";

/** The theme chosen in settings (system by default). */
export function storedTheme(storage: Pick<Storage, "getItem"> = localStorage): Theme {
  const v = storage.getItem(KEY);
  return v === "light" || v === "dark" ? v : "system";
}

/** Remembers the theme and applies it to the page. */
export function setTheme(theme: Theme, storage: Pick<Storage, "setItem"> = localStorage): void {
  storage.setItem(KEY, theme);
  applyTheme(theme);
}

/** Sets `data-theme` on the root element; the style sheet does the rest. */
export function applyTheme(theme: Theme, root: HTMLElement = document.documentElement): void {
  if (theme === "system") delete root.dataset.theme;
  else root.dataset.theme = theme;
}
