import { describe, expect, it } from "vitest";
import { describeError, formatVersionLine, isAppInfo, loadAppInfo } from "./appInfo";

describe("formatVersionLine", () => {
  it("prefixes the version", () => {
    expect(formatVersionLine({ name: "Ferry", version: "0.1.0" })).toBe("version 0.1.0");
  });

  it("trims whitespace and handles an empty version", () => {
    expect(formatVersionLine({ name: "Ferry", version: " 1.2.3 " })).toBe("version 1.2.3");
    expect(formatVersionLine({ name: "Ferry", version: "  " })).toBe("version unknown");
  });
});

describe("isAppInfo", () => {
  it("accepts the backend's shape and rejects others", () => {
    expect(isAppInfo({ name: "Ferry", version: "0.1.0" })).toBe(true);
    expect(isAppInfo({ name: "Ferry" })).toBe(false);
    expect(isAppInfo({ name: "Ferry", version: 1 })).toBe(false);
    expect(isAppInfo(null)).toBe(false);
    expect(isAppInfo("Ferry 0.1.0")).toBe(false);
  });
});

describe("describeError", () => {
  it("reads Error objects, strings and other values", () => {
    expect(describeError(new TypeError("boom"))).toBe("boom");
    expect(describeError("command app_info not found")).toBe("command app_info not found");
    expect(describeError({ code: 7 })).toBe('{"code":7}');
    expect(describeError(undefined)).toBe("undefined");
  });
});

describe("loadAppInfo", () => {
  it("returns the info when the command succeeds", async () => {
    const calls: string[] = [];
    const result = await loadAppInfo(async (cmd) => {
      calls.push(cmd);
      return { name: "Ferry", version: "0.1.0" };
    });
    expect(calls).toEqual(["app_info"]);
    expect(result).toEqual({ ok: true, info: { name: "Ferry", version: "0.1.0" } });
  });

  it("reports a rejected command as an error instead of throwing", async () => {
    const result = await loadAppInfo(() => Promise.reject(new Error("IPC unavailable")));
    expect(result).toEqual({ ok: false, error: "IPC unavailable" });
  });

  it("reports a malformed reply", async () => {
    const result = await loadAppInfo(async () => ({ version: 3 }));
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.error).toContain("unexpected reply");
  });
});
