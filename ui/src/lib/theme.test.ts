import { describe, expect, it } from "vitest";
import { applyTheme, setTheme, storedTheme } from "./theme";

describe("theme", () => {
  it("defaults to the system theme and remembers a choice", () => {
    const m = new Map<string, string>();
    const storage = { getItem: (k: string) => m.get(k) ?? null, setItem: (k: string, v: string) => void m.set(k, v) };
    expect(storedTheme(storage)).toBe("system");
    setTheme("dark", storage);
    expect(storedTheme(storage)).toBe("dark");
    expect(document.documentElement.dataset.theme).toBe("dark");
    applyTheme("system");
    expect(document.documentElement.dataset.theme).toBeUndefined();
  });
});
