import { describe, expect, it } from "vitest";
import { bytesToBase64, dataUrlBase64 } from "./picture";

describe("picture", () => {
  it("encodes bytes as base64, also past one chunk", () => {
    expect(bytesToBase64(new Uint8Array([0x89, 0x50, 0x4e, 0x47]))).toBe("iVBORw==");
    const big = new Uint8Array(100_000).map((_, i) => i % 251);
    expect(atob(bytesToBase64(big)).length).toBe(100_000);
  });

  it("takes the payload of a data URL", () => {
    expect(dataUrlBase64("data:image/png;base64,AAAA")).toBe("AAAA");
    expect(dataUrlBase64("nonsense")).toBe("");
  });
});
