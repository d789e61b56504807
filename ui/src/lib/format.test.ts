import { describe, expect, it } from "vitest";
import { authorHue, dayLabel, formatSize, groupPresence, groupReceipt, groupByDay, initials, presenceLabel, safetyGroups, tick, transferLabel } from "./format";
import { contact, message, transfer } from "./fixtures";

describe("format", () => {
  it("sizes in decimal units like a file manager", () => {
    expect(formatSize(0)).toBe("0 B");
    expect(formatSize(999)).toBe("999 B");
    expect(formatSize(1500)).toBe("1.5 KB");
    expect(formatSize(512 * 1024 * 1024)).toBe("537 MB");
    expect(formatSize(2_000_000_000_000_000)).toBe("2000 TB");
  });

  it("labels days relative to now", () => {
    const now = new Date(2026, 10, 25, 12, 0).getTime();
    expect(dayLabel(new Date(2026, 10, 25, 0, 1).getTime(), now)).toBe("Today");
    expect(dayLabel(new Date(2026, 10, 24, 23, 59).getTime(), now)).toBe("Yesterday");
    expect(dayLabel(new Date(2025, 0, 2).getTime(), now)).toMatch(/2025/);
  });

  it("groups messages by day in order", () => {
    const now = new Date(2026, 10, 25, 12).getTime();
    const a = message({ sent_at: new Date(2026, 10, 24, 9).getTime() });
    const b = message({ sent_at: new Date(2026, 10, 25, 9).getTime() });
    const c = message({ sent_at: new Date(2026, 10, 25, 10).getTime() });
    const groups = groupByDay([a, b, c], now);
    expect(groups.map((g) => [g.day, g.messages.length])).toEqual([["Yesterday", 1], ["Today", 2]]);
  });

  it("ticks only outgoing messages", () => {
    expect(tick(message({ direction: "incoming", state: "received" }))).toBeNull();
    expect(tick(message({ state: "queued" }))?.label).toMatch(/waiting/i);
    expect(tick(message({ state: "delivered" }))?.glyph).toBe("✓");
    expect(tick(message({ state: "read" }))?.glyph).toBe("✓✓");
  });

  it("describes presence with path and round trip", () => {
    expect(presenceLabel(contact({ presence: { state: "offline" } }))).toBe("Offline");
    expect(presenceLabel(contact({ presence: { state: "online", path: "direct", rtt_ms: 3 } }))).toBe("Online · direct · 3 ms");
    expect(presenceLabel(contact({ presence: { state: "online", path: "relayed", rtt_ms: null } }))).toBe("Online · via relay");
  });

  it("splits the safety number into groups of five", () => {
    expect(safetyGroups("12345 67890 12")).toEqual(["12345", "67890", "12"]);
  });

  it("makes initials", () => {
    expect(initials("Ada Lovelace")).toBe("AL");
    expect(initials("bob")).toBe("BO");
    expect(initials("  ")).toBe("?");
  });

  it("words transfer states from each side", () => {
    expect(transferLabel(transfer({ direction: "incoming", state: "offered" }), "Bob")).toBe("Bob wants to send you this");
    expect(transferLabel(transfer({ direction: "outgoing", state: "offered" }), "Bob")).toBe("Waiting for Bob to accept");
    expect(transferLabel(transfer({ state: "failed", error: "disk full" }), "Bob")).toBe("Failed: disk full");
  });

  it("words a group's file as shared with every member", () => {
    expect(transferLabel(transfer({ direction: "outgoing", state: "offered" }), "Bob", true)).toBe("Shared with the group");
    expect(transferLabel(transfer({ direction: "incoming", state: "offered" }), "Bob", true)).toBe("Bob shared this with the group");
    expect(transferLabel(transfer({ direction: "incoming", state: "paused" }), "Bob", true)).toBe("Paused: waiting for a member who has it");
    expect(transferLabel(transfer({ direction: "outgoing", state: "cancelled" }), "Bob", true)).toBe("You stopped sharing it");
    expect(transferLabel(transfer({ direction: "incoming", state: "done" }), "Bob", true)).toBe("Received");
  });
});


describe("groups", () => {
  it("counts members online and says when you left", () => {
    expect(groupPresence({ online: 3, members: [1, 2, 3, 4, 5], member: true })).toBe("3 of 5 online");
    expect(groupPresence({ online: 0, members: [1], member: false })).toBe("You are no longer in this group");
  });
  it("gives an author the same hue every time, and others other hues", () => {
    expect(authorHue("ab12")).toBe(authorHue("ab12"));
    expect(authorHue("ab12")).not.toBe(authorHue("cd34"));
  });
});

describe("group receipts", () => {
  it("say how far a message got, read first", () => {
    expect(groupReceipt(undefined)).toBe("Sent");
    expect(groupReceipt({ delivered: 0, read: 0, of: 3 })).toBe("Sent");
    expect(groupReceipt({ delivered: 2, read: 0, of: 3 })).toBe("Delivered to 2 of 3");
    expect(groupReceipt({ delivered: 3, read: 1, of: 3 })).toBe("Read by 1 of 3");
  });
});
