/**
 * What a drop of files from the file manager does, by screen: on a conversation the files go
 * to that contact or group; on "Add contact" a dropped picture is read as an invite QR code.
 * Tauri's native drag-drop event gives real paths (folders included); WebDriver cannot fake
 * one, so this handler is unit-tested on its own and the end-to-end test calls the same
 * command it calls.
 */
import type { View } from "./store.svelte";

/** What the drop handler needs from the rest of the app. */
export interface DropTarget {
  view: View;
  selected: string | null;
  sendPaths(contact: string, paths: string[]): Promise<number>;
  readInvite(path: string): Promise<void>;
  say(text: string, error?: boolean): void;
}

const PICTURE = /\.(png|jpe?g|webp|bmp|gif)$/i;

/** Handles the paths of one drop; returns what it did, for tests and the status line. */
export async function handleDrop(paths: string[], target: DropTarget): Promise<"sent" | "invite" | "ignored"> {
  if (paths.length === 0) return "ignored";
  if (target.view.kind === "add") {
    const picture = paths.find((p) => PICTURE.test(p));
    if (!picture) {
      target.say("Drop a screenshot or photo of your friend's QR code here.", true);
      return "ignored";
    }
    await target.readInvite(picture);
    return "invite";
  }
  const v = target.view;
  const contact = v.kind === "details" ? v.contact : v.kind === "group-details" ? v.group : target.selected;
  if (!contact || (v.kind !== "chat" && v.kind !== "details" && v.kind !== "group-details")) {
    target.say("Open a conversation first, then drop files on it.", true);
    return "ignored";
  }
  const sent = await target.sendPaths(contact, paths);
  return sent > 0 ? "sent" : "ignored";
}
