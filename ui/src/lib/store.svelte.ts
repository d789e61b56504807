/**
 * The app's state: contacts, the open conversation, transfers, and what the engine reports.
 * Engine events are applied by {@link Store.apply}; everything else calls the engine through
 * the injected {@link Api} (the generated bindings in the app, a fake in unit tests).
 */
import type { Status } from "../bindings";
import { errorMessage, type Api, type Contact, type EngineEvent, type Group, type Message, type Transfer } from "./api";

/** The screens of the main window. */
export type View =
  | { kind: "chat" }
  | { kind: "add" }
  | { kind: "details"; contact: string }
  | { kind: "new-group" }
  | { kind: "group-details"; group: string }
  | { kind: "transfers" }
  | { kind: "settings" };

/** Live progress of a transfer. */
export interface Progress {
  bytes: number;
  total: number;
  rate: number;
}

/** How far a message has got; later states win over earlier ones. */
const STATE_RANK: Record<Message["state"], number> = {
  queued: 0,
  failed: 1,
  delivered: 2,
  read: 3,
  received: 0,
  seen: 1,
};

/** How many messages a conversation page holds. */
export const PAGE = 100;

export class Store {
  status: Status = $state({ state: "starting" });
  contacts: Contact[] = $state([]);
  /** Groups this home is or was in (conversations are keyed by the group's id). */
  groups: Group[] = $state([]);
  /** How far your messages in groups got, by message id: delivered to / read by N of M. */
  receipts: Record<string, { delivered: number; read: number; of: number }> = $state({});
  selected: string | null = $state(null);
  view: View = $state({ kind: "chat" });
  /** Messages of loaded conversations, by contact id, oldest first. */
  messages: Record<string, Message[]> = $state({});
  /** Whether older messages exist before the loaded page, by contact id. */
  more: Record<string, boolean> = $state({});
  /** The newest message of each conversation, for the sidebar. */
  last: Record<string, Message> = $state({});
  transfers: Record<string, Transfer> = $state({});
  progress: Record<string, Progress> = $state({});
  /** A passing message for the status line (errors included). */
  notice: { text: string; error: boolean } | null = $state(null);
  /** Counts scheduled backups written or failed, so Settings reads the schedule again. */
  backupsChanged = $state(0);
  /** Whether the window has focus (messages in the open conversation count as read). */
  focused = $state(true);

  constructor(private readonly api: Api) {}

  get current(): Contact | undefined {
    return this.contacts.find((c) => c.id === this.selected);
  }

  /** The open group conversation, if a group is open. */
  get currentGroup(): Group | undefined {
    return this.groups.find((g) => g.id === this.selected);
  }

  group(id: string): Group | undefined {
    return this.groups.find((g) => g.id === id);
  }

  /** Where a message is listed: its group's id, or the contact's for a direct one. */
  keyOf(m: Message): string {
    return this.groups.some((g) => g.id === m.conversation) ? m.conversation : m.contact;
  }

  contact(id: string): Contact | undefined {
    return this.contacts.find((c) => c.id === id);
  }

  /** A file this home shares in a group: offered for as long as it shares it, so not a
   *  transfer in progress (its "contact" is this home itself). */
  isShare(t: Transfer): boolean {
    return t.direction === "outgoing" && this.status.state === "ready" && t.contact === this.status.id;
  }

  /** The group a file was shared in, if its message is loaded. */
  groupOfTransfer(id: string): Group | undefined {
    return this.groups.find((g) => (this.messages[g.id] ?? []).some((m) => m.transfer === id));
  }

  /** Who is behind a transfer: a contact, else the name a group gives them. */
  personName(id: string): string | undefined {
    return this.contact(id)?.name ?? this.groups.flatMap((g) => g.members).find((m) => m.id === id)?.name;
  }

  private noticeTimer: ReturnType<typeof setTimeout> | undefined;
  private noticeSeq = 0;

  /** Shows a passing message for a few seconds; errors stay until dismissed or replaced. */
  say(text: string, error = false): void {
    const seq = ++this.noticeSeq;
    this.notice = { text, error };
    clearTimeout(this.noticeTimer);
    if (!error) {
      this.noticeTimer = setTimeout(() => {
        if (this.noticeSeq === seq) this.notice = null;
      }, 6000);
    }
  }

  /** Runs a command, showing its error instead of throwing. Returns undefined on error. */
  async attempt<T>(f: () => Promise<T>): Promise<T | undefined> {
    try {
      return await f();
    } catch (e) {
      this.say(errorMessage(e), true);
      return undefined;
    }
  }

  /** Polls the shell until the home is open (or needs a name, or is busy). */
  async start(): Promise<void> {
    this.status = await this.api.status();
    if (this.status.state === "ready") await this.loadAll();
  }

  /** First start: the name, and a passphrase if the user chose one. */
  async createProfile(name: string, passphrase: string | null = null): Promise<void> {
    this.status = await this.api.createProfile(name, passphrase);
    if (this.status.state === "ready") await this.loadAll();
  }

  /** First start: restores a backup into the new home, then opens it. */
  async restoreBackup(path: string, passphrase: string, storePassphrase: string | null): Promise<void> {
    this.status = await this.api.importBackup(path, passphrase, storePassphrase);
    if (this.status.state === "ready") await this.loadAll();
  }

  /** Opens a home protected by a passphrase; throws (and stays locked) on a wrong one. */
  async unlock(passphrase: string): Promise<void> {
    this.status = await this.api.unlock(passphrase);
    if (this.status.state === "ready") await this.loadAll();
  }

  async loadAll(): Promise<void> {
    await Promise.all([this.refreshGroups(), this.refreshContacts(), this.refreshTransfers()]);
    if (!this.selected && this.contacts.length) await this.select(this.contacts[0]!.id);
  }

  async refreshContacts(): Promise<void> {
    const list = await this.attempt(() => this.api.contacts());
    if (!list) return;
    await Promise.all(
      list
        .filter((c) => !this.last[c.id])
        .map(async (c) => {
          const page = await this.api.history(c.id, null, 1, false).catch(() => []);
          if (page[0]) this.last[c.id] = page[0];
        }),
    );
    this.contacts = sortContacts(list, this.last);
  }

  async refreshGroups(): Promise<void> {
    const list = await this.attempt(() => this.api.groups());
    if (!list) return;
    await Promise.all(
      list
        .filter((g) => !this.last[g.id])
        .map(async (g) => {
          const page = await this.api.history(g.id, null, 1, false).catch(() => []);
          if (page[0]) this.last[g.id] = page[0];
        }),
    );
    this.groups = list;
  }

  /** Creates a group with these contacts and opens it. */
  async createGroup(name: string, members: string[]): Promise<boolean> {
    const g = await this.attempt(() => this.api.createGroup(name, members));
    if (!g) return false;
    this.upsertGroup(g);
    await this.select(g.id);
    return true;
  }

  /** A change to a group's members or name (admins add and remove; anyone renames or leaves). */
  async groupChange(
    group: string,
    change: { add: string } | { remove: string } | { rename: string } | { leave: true },
  ): Promise<void> {
    const g = await this.attempt(() =>
      "add" in change
        ? this.api.groupAdd(group, change.add)
        : "remove" in change
          ? this.api.groupRemove(group, change.remove)
          : "rename" in change
            ? this.api.groupRename(group, change.rename)
            : this.api.groupLeave(group),
    );
    if (!g) return;
    this.upsertGroup(g);
    if ("leave" in change) this.say(`You left ${g.name}.`);
    await this.loadHistory(g.id);
  }

  private upsertGroup(g: Group): void {
    const i = this.groups.findIndex((x) => x.id === g.id);
    if (i >= 0) this.groups[i] = g;
    else this.groups = [g, ...this.groups];
  }

  async refreshTransfers(): Promise<void> {
    const list = await this.attempt(() => this.api.transfers());
    if (!list) return;
    const map: Record<string, Transfer> = {};
    for (const t of list) map[t.id] = t;
    this.transfers = map;
  }

  /** Blocks a contact (the engine's event updates the list). */
  async block(id: string): Promise<void> {
    const c = await this.attempt(() => this.api.blockContact(id));
    if (c) this.say(`${c.name} is blocked. Nothing they send reaches you, and nothing goes to them.`);
  }

  async unblock(id: string): Promise<void> {
    const c = await this.attempt(() => this.api.unblockContact(id));
    if (c) this.say(`${c.name} is unblocked.`);
  }

  /** Accepts a contact's changed safety number: sending resumes. */
  async acceptKey(id: string): Promise<void> {
    const c = await this.attempt(() => this.api.acceptKey(id));
    if (c) this.say(`You accepted ${c.name}'s new safety number.`);
  }

  /** Resets the secure session with a contact (the engine's line says it is secured again). */
  async resetSession(id: string): Promise<void> {
    const c = await this.attempt(() => this.api.resetSession(id));
    if (c) this.say(`Messages with ${c.name} are secured again.`);
  }

    /** Sets disappearing messages with a contact (0 turns them off); the engine's event updates it. */
  async setTimer(id: string, secs: number): Promise<void> {
    const c = await this.attempt(() => this.api.setTimer(id, secs));
    if (c) {
      const i = this.contacts.findIndex((x) => x.id === c.id);
      if (i >= 0) this.contacts[i] = c;
    }
  }

  /** Removes a contact, with its history unless `keepHistory`. */
  async remove(id: string, keepHistory: boolean): Promise<void> {
    const name = this.contact(id)?.name ?? "The contact";
    const done = await this.attempt(() => this.api.removeContact(id, keepHistory));
    if (done === undefined) return;
    this.apply({ type: "contact_removed", contact: id, name });
    this.say(`${name} was removed.`);
  }

  /** Opens a conversation and marks what it shows as read. */
  async select(id: string): Promise<void> {
    this.selected = id;
    this.view = { kind: "chat" };
    await this.loadHistory(id);
  }

  async loadHistory(id: string): Promise<void> {
    const page = await this.attempt(() => this.api.history(id, null, PAGE, this.focused));
    if (!page) return;
    this.messages[id] = page;
    this.more[id] = page.length === PAGE;
    const newest = page[page.length - 1];
    if (newest) this.last[id] = newest;
    if (this.focused) this.setUnread(id, 0);
    if (this.group(id)) await this.loadReceipts(id);
  }

  /** Receipts of your messages in a loaded group conversation. */
  async loadReceipts(group: string): Promise<void> {
    const mine = (this.messages[group] ?? []).filter((m) => m.direction === "outgoing").map((m) => m.id);
    if (!mine.length) return;
    const list = await this.api.groupReceipts(group, mine).catch(() => []);
    for (const r of list) this.receipts[r.id] = { delivered: r.delivered, read: r.read, of: r.of };
  }

  /** Loads the page before the oldest loaded message. */
  async loadOlder(id: string): Promise<void> {
    const loaded = this.messages[id] ?? [];
    const oldest = loaded[0];
    if (!oldest) return;
    const page = await this.attempt(() => this.api.history(id, oldest.seq, PAGE, false));
    if (!page) return;
    this.messages[id] = [...page, ...loaded];
    this.more[id] = page.length === PAGE;
  }

  private setUnread(id: string, unread: number): void {
    const c = this.contact(id) ?? this.group(id);
    if (c) c.unread = unread;
  }

  /** Sends a text to the open conversation. Returns false when nothing was sent. */
  async send(text: string): Promise<boolean> {
    const id = this.selected;
    const body = text.trim();
    if (!id || !body) return false;
    const m = await this.attempt(() => this.api.sendText(id, body));
    if (!m) return false;
    this.upsertMessage(m);
    if (this.group(id)) {
      this.groups = [...this.groups];
      await this.loadReceipts(id);
    }
    else await this.refreshContacts();
    return true;
  }

  /** Offers files or folders (a drop, or the file dialog) to a contact. */
  async sendPaths(contact: string, paths: string[]): Promise<number> {
    if (!paths.length) return 0;
    const report = await this.attempt(() => this.api.sendPaths(contact, paths));
    if (!report) return 0;
    for (const t of report.sent) this.transfers[t.id] = t;
    if (report.failed.length) {
      const first = report.failed[0]!;
      const more = report.failed.length > 1 ? ` (and ${report.failed.length - 1} more)` : "";
      this.say(`Could not send ${baseName(first.path)}: ${errorMessage(first.error)}${more}`, true);
    }
    await this.loadHistory(contact);
    return report.sent.length;
  }

  async transferAction(id: string, action: "accept" | "decline" | "cancel"): Promise<void> {
    const call = {
      accept: this.api.acceptTransfer,
      decline: this.api.declineTransfer,
      cancel: this.api.cancelTransfer,
    }[action];
    const t = await this.attempt(() => call(id));
    if (t) this.transfers[t.id] = t;
  }

  private upsertMessage(m: Message): void {
    const key = this.keyOf(m);
    const newest = this.last[key];
    if (!newest || newest.seq <= m.seq) this.last[key] = m;
    const list = this.messages[key];
    if (!list) return;
    const i = list.findIndex((x) => x.id === m.id);
    if (i < 0) {
      list.push(m);
      return;
    }
    // A command's reply can land after the events that moved the message on: never go back.
    const known = list[i]!;
    list[i] = STATE_RANK[known.state] > STATE_RANK[m.state] ? { ...m, state: known.state } : m;
  }

  /** Applies one engine event. */
  apply(ev: EngineEvent): void {
    switch (ev.type) {
      case "message_received": {
        const m = ev.message;
        const key = this.keyOf(m);
        this.upsertMessage(m);
        const open = this.selected === key && this.view.kind === "chat" && this.focused;
        if (open) {
          // Reading it now: the history call marks it read and tells the sender.
          void this.loadHistory(key);
        } else if (m.direction === "incoming") {
          // A line the engine wrote (a changed safety number) is not an unread message.
          const c = this.contact(key) ?? this.group(key);
          if (c) c.unread += 1;
        }
        this.contacts = sortContacts(this.contacts, this.last);
        break;
      }
      case "message_sent": {
        // Also what the CLI or a drop sent while this window was open.
        if (ev.transfer) this.transfers[ev.transfer.id] = ev.transfer;
        this.upsertMessage(ev.message);
        this.contacts = sortContacts(this.contacts, this.last);
        break;
      }
      case "delivery_changed": {
        for (const m of this.messages[ev.contact] ?? []) if (m.id === ev.id) m.state = ev.state;
        // The queued count comes from the engine, which just changed it.
        if (ev.state === "delivered") void this.refreshContacts();
        break;
      }
      case "presence_changed": {
        const c = this.contact(ev.contact);
        if (c) {
          c.presence = ev.presence;
          c.name = ev.name;
        } else {
          // A contact this window has not listed yet (pairing still settling): fetch again.
          void this.refreshContacts();
        }
        break;
      }
      case "pairing_completed": {
        // Pairing again with a contact replaces it (a repaired pairing, a new key).
        const i = this.contacts.findIndex((c) => c.id === ev.contact.id);
        if (i >= 0) this.contacts[i] = ev.contact;
        else this.contacts = [...this.contacts, ev.contact];
        this.say(`You are now connected with ${ev.contact.name}.`);
        break;
      }
      case "transfer_offered":
      case "transfer_changed":
        this.transfers[ev.transfer.id] = ev.transfer;
        if (ev.transfer.state !== "transferring") delete this.progress[ev.transfer.id];
        break;
      case "transfer_progress":
        this.progress[ev.id] = { bytes: ev.bytes_done, total: ev.total, rate: ev.rate };
        break;
      case "transfer_completed": {
        const t = this.transfers[ev.id];
        if (t) {
          t.state = "done";
          t.path = ev.path;
          t.bytes_done = t.size;
        }
        delete this.progress[ev.id];
        break;
      }
      case "transfer_failed": {
        const t = this.transfers[ev.id];
        if (t) {
          t.state = "failed";
          t.error = ev.reason;
        }
        delete this.progress[ev.id];
        break;
      }
      case "contact_changed": {
        const i = this.contacts.findIndex((c) => c.id === ev.contact.id);
        if (i >= 0) this.contacts[i] = ev.contact;
        break;
      }
      case "contact_removed": {
        this.contacts = this.contacts.filter((c) => c.id !== ev.contact);
        delete this.messages[ev.contact];
        delete this.last[ev.contact];
        if (this.selected === ev.contact) {
          this.selected = this.contacts[0]?.id ?? null;
          this.view = { kind: "chat" };
        }
        break;
      }
      case "messages_expired": {
        // Disappearing messages whose time ran out: gone from the store, gone from view.
        const gone = new Set(ev.ids);
        const list = this.messages[ev.contact];
        if (list) this.messages[ev.contact] = list.filter((m) => !gone.has(m.id));
        const last = this.last[ev.contact];
        if (last && gone.has(last.id)) {
          // The preview falls back to the newest message still loaded, if any; the engine's
          // contact_changed that follows brings the counts.
          const newest = this.messages[ev.contact]?.at(-1);
          if (newest) this.last[ev.contact] = newest;
          else delete this.last[ev.contact];
        }
        break;
      }
      case "notice":
        // Something from a contact was refused (a quota): the engine sends it at most once a
        // minute per contact and quota.
        this.say(ev.text, true);
        break;
      case "group_receipts_changed":
        if (this.messages[ev.group]) void this.loadReceipts(ev.group);
        break;
      case "group_changed": {
        // Created, joined, or changed here or by another member: its lines come with history.
        const known = this.group(ev.group.id);
        this.upsertGroup(ev.group);
        if (known && this.messages[ev.group.id]) void this.loadHistory(ev.group.id);
        break;
      }
      case "backup_written":
        // A scheduled backup: Settings shows when; a failure is said wherever the user is.
        this.backupsChanged++;
        if (ev.error) this.say(`The scheduled backup failed: ${ev.error}`, true);
        break;
    }
  }

  /** The window came to the front: what the open conversation shows is now read. */
  async focus(focused: boolean): Promise<void> {
    this.focused = focused;
    const c = this.current ?? this.currentGroup;
    if (focused && c && c.unread > 0 && this.view.kind === "chat") await this.loadHistory(c.id);
  }
}

/** Most recent conversation first; contacts never written to follow, by name. */
export function sortContacts(list: Contact[], last: Record<string, Message>): Contact[] {
  return [...list].sort((a, b) => {
    const ta = last[a.id]?.sent_at ?? 0;
    const tb = last[b.id]?.sent_at ?? 0;
    if (ta !== tb) return tb - ta;
    return a.name.localeCompare(b.name);
  });
}

/** The last component of a path, either separator. */
export function baseName(path: string): string {
  const parts = path.split(/[\\/]/).filter(Boolean);
  return parts[parts.length - 1] ?? path;
}
