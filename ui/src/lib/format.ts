/** Formatting shared by the screens; free of DOM and Tauri so it is unit-tested in Node. */
import type { Contact, Message, Transfer } from "./api";

/** Bytes as a file manager shows them (decimal units). */
export function formatSize(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let v = bytes;
  let unit = -1;
  while (v >= 1000 && unit < units.length - 1) {
    v /= 1000;
    unit += 1;
  }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[unit]}`;
}

/** Bytes per second as a speed. */
export function formatRate(bytesPerSecond: number): string {
  return `${formatSize(bytesPerSecond)}/s`;
}

/** The time of day of a timestamp (ms), e.g. `14:05`. */
export function formatTime(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function startOfDay(ms: number): number {
  const d = new Date(ms);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

/** A day separator's label: Today, Yesterday, or the date. */
export function dayLabel(ms: number, now: number = Date.now()): string {
  const days = Math.round((startOfDay(now) - startOfDay(ms)) / 86_400_000);
  if (days === 0) return "Today";
  if (days === 1) return "Yesterday";
  const sameYear = new Date(ms).getFullYear() === new Date(now).getFullYear();
  return new Date(ms).toLocaleDateString([], {
    weekday: days < 7 ? "long" : undefined,
    day: "numeric",
    month: "long",
    year: sameYear ? undefined : "numeric",
  });
}

/** Messages grouped by day, in order, for day separators. */
export function groupByDay(messages: Message[], now: number = Date.now()): { day: string; messages: Message[] }[] {
  const groups: { day: string; messages: Message[] }[] = [];
  for (const m of messages) {
    const day = dayLabel(m.sent_at, now);
    const last = groups[groups.length - 1];
    if (last && last.day === day) last.messages.push(m);
    else groups.push({ day, messages: [m] });
  }
  return groups;
}

/** What an outgoing message's tick says. */
export function tick(m: Message): { glyph: string; label: string } | null {
  if (m.direction !== "outgoing") return null;
  switch (m.state) {
    case "queued":
      return { glyph: "◷", label: "Waiting to be delivered" };
    case "delivered":
      return { glyph: "✓", label: "Delivered" };
    case "read":
      return { glyph: "✓✓", label: "Read" };
    case "failed":
      return { glyph: "!", label: "Not delivered" };
    default:
      return null;
  }
}

/** Presence in words: "Online · direct · 3 ms", "Online · relayed", "Offline". */
export function presenceLabel(c: Contact): string {
  if (c.presence.state === "offline") return "Offline";
  const parts = ["Online", c.presence.path === "direct" ? "direct" : "via relay"];
  if (c.presence.rtt_ms !== null && c.presence.rtt_ms !== undefined) parts.push(`${c.presence.rtt_ms} ms`);
  return parts.join(" · ");
}

/** The safety number in groups of five digits, as both sides read it aloud. */
export function safetyGroups(n: string): string[] {
  const digits = n.replace(/\D/g, "");
  const out: string[] = [];
  for (let i = 0; i < digits.length; i += 5) out.push(digits.slice(i, i + 5));
  return out;
}

/** Initials for an avatar. */
export function initials(name: string): string {
  const words = name.trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? [words[0]![0], words[words.length - 1]![0]] : [...(words[0] ?? "?")].slice(0, 2);
  return letters.join("").toUpperCase();
}

/** Whether a transfer is over (done, failed, declined, cancelled), as `TransferState::is_final`. */
export function isFinal(state: Transfer["state"]): boolean {
  return state === "done" || state === "failed" || state === "declined" || state === "cancelled";
}

/** The state of a transfer in words, from this side's point of view. */
export function transferLabel(t: Transfer, contactName: string, inGroup = false): string {
  const incoming = t.direction === "incoming";
  if (inGroup) {
    // A group's file: shared with every member, fetched from whoever holds it.
    switch (t.state) {
      case "offered":
        return incoming ? `${contactName} shared this with the group` : "Shared with the group";
      case "paused":
        return t.error ? `Paused: ${t.error}` : "Paused: waiting for a member who has it";
      case "cancelled":
        return incoming ? "Cancelled" : "You stopped sharing it";
      default:
        break;
    }
  }
  switch (t.state) {
    case "offered":
      return incoming ? `${contactName} wants to send you this` : `Waiting for ${contactName} to accept`;
    case "accepted":
      return incoming ? "Starting…" : `${contactName} accepted`;
    case "transferring":
      return incoming ? "Receiving…" : "Sending…";
    case "paused":
      return incoming ? `Paused: waiting for ${contactName} to come back` : "Paused";
    case "done":
      return incoming ? "Received" : "Sent";
    case "failed":
      return t.error ? `Failed: ${t.error}` : "Failed";
    case "declined":
      return incoming ? "You declined" : `${contactName} declined`;
    case "cancelled":
      return "Cancelled";
  }
}

/** The disappearing-message timers Ferry offers, in seconds (0 is off), with their labels. */
export const TIMERS: { secs: number; label: string }[] = [
  { secs: 0, label: "Off" },
  { secs: 300, label: "5 minutes" },
  { secs: 3600, label: "1 hour" },
  { secs: 86400, label: "1 day" },
  { secs: 604800, label: "1 week" },
];

/** "1 hour" for 3600; "off" for 0. */
export function timerLabel(secs: number): string {
  if (secs === 0) return "off";
  return TIMERS.find((t) => t.secs === secs)?.label ?? `${secs} seconds`;
}

/** "3 of 5 online": a group's members online now, you included. */
export function groupPresence(g: { online: number; members: unknown[]; member: boolean }): string {
  if (!g.member) return "You are no longer in this group";
  return `${g.online} of ${g.members.length} online`;
}

/** A steady colour for a group member's name: the same id gets the same hue everywhere. */
export function authorHue(id: string): number {
  let h = 0;
  for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) % 360;
  return h;
}

/** "Read by 2 of 4", "Delivered to 3 of 4", or "Sent": how far a group message has got. */
export function groupReceipt(r: { delivered: number; read: number; of: number } | undefined): string {
  if (!r || r.of === 0) return "Sent";
  if (r.read > 0) return `Read by ${r.read} of ${r.of}`;
  if (r.delivered > 0) return `Delivered to ${r.delivered} of ${r.of}`;
  return "Sent";
}
