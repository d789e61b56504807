import { describe, expect, it, vi } from "vitest";
import { Store } from "./store.svelte";
import type { Api } from "./api";
import { contact, group, message, transfer } from "./fixtures";

function fakeApi(over: Partial<Record<keyof Api, unknown>> = {}): Api {
  const base = {
    status: vi.fn(async () => ({ state: "ready", id: "me" })),
    contacts: vi.fn(async () => [contact()]),
    groups: vi.fn(async () => [] as unknown[]),
    groupReceipts: vi.fn(async () => [] as unknown[]),
    transfers: vi.fn(async () => []),
    history: vi.fn(async () => [] as unknown[]),
    sendText: vi.fn(async (c: string, text: string) => message({ contact: c, body: text, state: "queued" })),
    sendPaths: vi.fn(async () => ({ sent: [transfer({ direction: "outgoing" })], failed: [] })),
    acceptTransfer: vi.fn(async (id: string) => transfer({ id, state: "accepted" })),
  };
  return { ...base, ...over } as unknown as Api;
}

describe("Store", () => {
  it("stays locked after a wrong passphrase and opens with the right one", async () => {
    const unlock = vi.fn(async (p: string) => {
      if (p !== "right passphrase") throw { code: "wrong_passphrase", message: "wrong passphrase" };
      return { state: "ready", id: "me" };
    });
    const api = fakeApi({ status: vi.fn(async () => ({ state: "locked" })), unlock });
    const s = new Store(api);
    await s.start();
    expect(s.status.state).toBe("locked");
    expect(api.contacts).not.toHaveBeenCalled();
    await expect(s.unlock("guess")).rejects.toMatchObject({ code: "wrong_passphrase" });
    expect(s.status.state).toBe("locked");
    await s.unlock("right passphrase");
    expect(s.status.state).toBe("ready");
    expect(s.selected).toBe("b0b");
  });

  it("opens the first conversation once ready and marks it read", async () => {
    const api = fakeApi();
    const s = new Store(api);
    await s.start();
    expect(s.selected).toBe("b0b");
    expect(api.history).toHaveBeenCalledWith("b0b", null, 100, true);
  });

  it("appends sent messages and follows delivery ticks", async () => {
    const s = new Store(fakeApi());
    await s.start();
    expect(await s.send("  hi Bob  ")).toBe(true);
    const sent = s.messages["b0b"]![0]!;
    expect(sent.body).toBe("hi Bob");
    expect(sent.state).toBe("queued");
    s.apply({ type: "delivery_changed", id: sent.id, contact: "b0b", state: "read" });
    expect(s.messages["b0b"]![0]!.state).toBe("read");
    expect(await s.send("   ")).toBe(false);
  });

  it("shows what another face of the engine sent (CLI, drop) with its file card", async () => {
    const s = new Store(fakeApi());
    await s.start();
    const offer = message({ body: "report.pdf", transfer: "t9", state: "queued" });
    s.apply({ type: "message_sent", message: offer, transfer: transfer({ id: "t9", direction: "outgoing" }) });
    expect(s.messages["b0b"]!.map((m) => m.id)).toEqual([offer.id]);
    expect(s.transfers["t9"]!.direction).toBe("outgoing");
    expect(s.last["b0b"]!.id).toBe(offer.id);
  });

  it("keeps a tick that arrived before the send command returned", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const sent = message({ body: "hi", state: "queued" });
    const api = fakeApi({ sendText: vi.fn(async () => (await gate, sent)) });
    const s = new Store(api);
    await s.start();
    const sending = s.send("hi");
    s.apply({ type: "message_sent", message: sent, transfer: null });
    s.apply({ type: "delivery_changed", id: sent.id, contact: "b0b", state: "delivered" });
    release();
    await sending;
    expect(s.messages["b0b"]![0]!.state).toBe("delivered");
  });

  it("lists a contact whose presence arrives before the contact list does", async () => {
    const api = fakeApi({ contacts: vi.fn(async () => []) });
    const s = new Store(api);
    await s.start();
    (api.contacts as ReturnType<typeof vi.fn>).mockResolvedValue([contact()]);
    s.apply({ type: "presence_changed", contact: "b0b", name: "Bob", presence: { state: "online", path: "direct", rtt_ms: 1 } });
    await vi.waitFor(() => expect(s.contacts.map((c) => c.id)).toEqual(["b0b"]));
  });

  it("counts unread for conversations that are not open", async () => {
    const api = fakeApi({ contacts: vi.fn(async () => [contact(), contact({ id: "c4r", name: "Carol" })]) });
    const s = new Store(api);
    await s.start();
    s.apply({ type: "message_received", from: "Carol", message: message({ contact: "c4r", direction: "incoming", state: "received" }) });
    expect(s.contact("c4r")!.unread).toBe(1);
    expect(s.contacts[0]!.id).toBe("c4r"); // most recent conversation first
  });

  it("re-reads the open conversation when a message arrives (which sends the read receipt)", async () => {
    const api = fakeApi();
    const s = new Store(api);
    await s.start();
    (api.history as ReturnType<typeof vi.fn>).mockClear();
    s.apply({ type: "message_received", from: "Bob", message: message({ direction: "incoming", state: "received" }) });
    expect(api.history).toHaveBeenCalledWith("b0b", null, 100, true);
    expect(s.contact("b0b")!.unread).toBe(0);
  });

  it("tracks transfer progress and completion", async () => {
    const s = new Store(fakeApi());
    await s.start();
    s.apply({ type: "transfer_offered", transfer: transfer() });
    s.apply({ type: "transfer_progress", id: "t1", bytes_done: 500, total: 2_000_000, rate: 100 });
    expect(s.progress["t1"]).toEqual({ bytes: 500, total: 2_000_000, rate: 100 });
    s.apply({ type: "transfer_completed", id: "t1", path: "/dl/report.pdf" });
    expect(s.transfers["t1"]!.state).toBe("done");
    expect(s.transfers["t1"]!.path).toBe("/dl/report.pdf");
    expect(s.progress["t1"]).toBeUndefined();
  });

  it("shows command errors as a notice instead of throwing", async () => {
    const api = fakeApi({ sendText: vi.fn(async () => Promise.reject({ code: "unknown_contact", message: "no such contact" })) });
    const s = new Store(api);
    await s.start();
    expect(await s.send("hello")).toBe(false);
    expect(s.notice).toEqual({ text: "No such contact", error: true });
  });

  it("shows what the engine refused from a contact (a quota) as a notice that stays", async () => {
    const s = new Store(fakeApi());
    await s.start();
    s.apply({ type: "notice", contact: "b0b", name: "Bob", text: "Bob sent another file, refused" });
    expect(s.notice).toEqual({ text: "Bob sent another file, refused", error: true });
  });

  it("follows a contact being blocked, and drops a removed one and its conversation", async () => {
    const carol = contact({ id: "ca401", name: "Carol" });
    const api = fakeApi({
      contacts: vi.fn(async () => [contact(), carol]),
      removeContact: vi.fn(async () => null),
    });
    const s = new Store(api);
    await s.start();
    expect(s.selected).toBe("b0b");
    s.apply({ type: "contact_changed", contact: contact({ state: "blocked" }) });
    expect(s.contact("b0b")?.state).toBe("blocked");
    await s.remove("b0b", false);
    expect(api.removeContact).toHaveBeenCalledWith("b0b", false);
    expect(s.contact("b0b")).toBeUndefined();
    expect(s.messages["b0b"]).toBeUndefined();
    expect(s.selected).toBe("ca401");
    expect(s.notice?.text).toBe("Bob was removed.");
    // The same event from another face (the CLI) is harmless when it comes again.
    s.apply({ type: "contact_removed", contact: "b0b", name: "Bob" });
    expect(s.contacts.map((c) => c.id)).toEqual(["ca401"]);
  });

  it("replaces a contact paired again, and does not count a line the engine wrote as unread", async () => {
    const s = new Store(fakeApi());
    await s.start();
    s.view = { kind: "details", contact: "b0b" };
    s.apply({ type: "pairing_completed", contact: contact({ key_changed: true }) });
    expect(s.contacts).toHaveLength(1);
    expect(s.contact("b0b")?.key_changed).toBe(true);
    s.apply({
      type: "message_received",
      message: message({ direction: "system", contact: "b0b", state: "seen", body: "Bob's safety number changed" }),
      from: "Bob",
    });
    expect(s.contact("b0b")?.unread).toBe(0);
    expect(s.messages["b0b"]?.at(-1)?.direction).toBe("system");
  });

  it("resets a session and shows the line it wrote; a failed reset says why", async () => {
    const api = fakeApi({ resetSession: vi.fn(async () => contact()) });
    const s = new Store(api);
    await s.start();
    await s.resetSession("b0b");
    expect(api.resetSession).toHaveBeenCalledWith("b0b");
    expect(s.notice?.text).toBe("Messages with Bob are secured again.");
    s.apply({
      type: "message_sent",
      message: message({ direction: "system", contact: "b0b", state: "seen", body: "Messages with Bob are secured again: the session was reset." }),
      transfer: null,
    });
    expect(s.messages["b0b"]?.at(-1)?.direction).toBe("system");
    expect(s.contact("b0b")?.unread).toBe(0);
    (api.resetSession as ReturnType<typeof vi.fn>).mockRejectedValue({ code: "reset_failed", message: "the session reset did not complete: Bob did not answer" });
    await s.resetSession("b0b");
    expect(s.notice).toEqual({ text: "The session reset did not complete: Bob did not answer", error: true });
  });

  it("drops messages whose time ran out, and sets a timer", async () => {
    const api = fakeApi({ setTimer: vi.fn(async () => contact({ timer_secs: 3600 })) });
    const s = new Store(api);
    await s.start();
    s.apply({ type: "message_received", message: message({ id: "m1", contact: "b0b" }), from: "Bob" });
    s.apply({ type: "message_received", message: message({ id: "m2", contact: "b0b" }), from: "Bob" });
    s.apply({ type: "messages_expired", contact: "b0b", ids: ["m1"] });
    expect(s.messages["b0b"]?.map((m) => m.id)).toEqual(["m2"]);
    // The newest going leaves the one before it as the preview, and none when none is left.
    s.apply({ type: "message_received", message: message({ id: "m3", contact: "b0b" }), from: "Bob" });
    s.apply({ type: "messages_expired", contact: "b0b", ids: ["m3"] });
    expect(s.last["b0b"]?.id).toBe("m2");
    s.apply({ type: "messages_expired", contact: "b0b", ids: ["m2"] });
    expect(s.last["b0b"]).toBeUndefined();
    await s.setTimer("b0b", 3600);
    expect(api.setTimer).toHaveBeenCalledWith("b0b", 3600);
    expect(s.contact("b0b")?.timer_secs).toBe(3600);
  });

  it("reports the paths a send refused", async () => {
    const api = fakeApi({
      sendPaths: vi.fn(async () => ({ sent: [], failed: [{ path: "/x/secret", error: { code: "io", message: "permission denied" } }] })),
    });
    const s = new Store(api);
    await s.start();
    expect(await s.sendPaths("b0b", ["/x/secret"])).toBe(0);
    expect(s.notice?.text).toBe("Could not send secret: Permission denied");
  });

  it("tells a file this home shares in a group from a transfer in progress", async () => {
    const s = new Store(fakeApi());
    await s.start();
    expect(s.isShare(transfer({ direction: "outgoing", contact: "me", state: "offered" }))).toBe(true);
    expect(s.isShare(transfer({ direction: "outgoing", contact: "b0b", state: "offered" }))).toBe(false);
    expect(s.isShare(transfer({ direction: "incoming", contact: "me", state: "offered" }))).toBe(false);
  });

  it("keeps a group's messages in the group, not in the conversation with their author", async () => {
    const s = new Store(fakeApi({ groups: vi.fn(async () => [group()]) }));
    await s.start();
    expect(s.groups.map((g) => g.name)).toEqual(["Trip"]);
    await s.select("b0b");
    const inGroup = message({ conversation: "9a0b", contact: "b0b", author: "b0b", direction: "incoming", state: "received", body: "to all" });
    s.apply({ type: "message_received", from: "Bob", message: inGroup });
    expect(s.messages["b0b"]!.some((m) => m.body === "to all")).toBe(false);
    expect(s.last["9a0b"]!.body).toBe("to all");
    expect(s.group("9a0b")!.unread).toBe(1);
    expect(s.contact("b0b")!.unread).toBe(0);
    // A change by another member (here: a rename) replaces the group as shown.
    s.apply({ type: "group_changed", group: group({ name: "Trip 2027", unread: 1 }) });
    expect(s.groups.map((g) => g.name)).toEqual(["Trip 2027"]);
    // A group this window did not know yet (just added to it) joins the list.
    s.apply({ type: "group_changed", group: group({ id: "77aa", name: "New" }) });
    expect(s.groups.map((g) => g.name)).toEqual(["New", "Trip 2027"]);
  });
});

