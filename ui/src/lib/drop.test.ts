import { describe, expect, it, vi } from "vitest";
import { handleDrop, type DropTarget } from "./drop";

function target(over: Partial<DropTarget> = {}): DropTarget {
  return {
    view: { kind: "chat" },
    selected: "b0b",
    sendPaths: vi.fn(async (_c: string, p: string[]) => p.length),
    readInvite: vi.fn(async () => {}),
    say: vi.fn(),
    ...over,
  };
}

describe("handleDrop", () => {
  it("sends files and folders dropped on a conversation to that contact", async () => {
    const t = target();
    expect(await handleDrop(["/home/a/photo.jpg", "/home/a/Holiday"], t)).toBe("sent");
    expect(t.sendPaths).toHaveBeenCalledWith("b0b", ["/home/a/photo.jpg", "/home/a/Holiday"]);
  });

  it("sends to the contact whose details are open", async () => {
    const t = target({ view: { kind: "details", contact: "c4r" } });
    await handleDrop(["/f"], t);
    expect(t.sendPaths).toHaveBeenCalledWith("c4r", ["/f"]);
  });

  it("sends to the group whose conversation or members page is open", async () => {
    const chat = target({ selected: "9r0up" });
    await handleDrop(["/f"], chat);
    expect(chat.sendPaths).toHaveBeenCalledWith("9r0up", ["/f"]);
    const members = target({ view: { kind: "group-details", group: "9r0up" } });
    await handleDrop(["/g"], members);
    expect(members.sendPaths).toHaveBeenCalledWith("9r0up", ["/g"]);
  });

  it("reads a picture dropped on Add contact as an invite", async () => {
    const t = target({ view: { kind: "add" } });
    expect(await handleDrop(["/tmp/notes.txt", "C:\\Users\\a\\QR.PNG"], t)).toBe("invite");
    expect(t.readInvite).toHaveBeenCalledWith("C:\\Users\\a\\QR.PNG");
    expect(t.sendPaths).not.toHaveBeenCalled();
  });

  it("explains instead of guessing", async () => {
    const noPicture = target({ view: { kind: "add" } });
    expect(await handleDrop(["/tmp/notes.txt"], noPicture)).toBe("ignored");
    expect(noPicture.say).toHaveBeenCalledWith(expect.stringMatching(/QR code/), true);

    const nobody = target({ selected: null });
    expect(await handleDrop(["/f"], nobody)).toBe("ignored");
    expect(nobody.sendPaths).not.toHaveBeenCalled();

    const settings = target({ view: { kind: "settings" } });
    expect(await handleDrop(["/f"], settings)).toBe("ignored");
    expect(await handleDrop([], target())).toBe("ignored");
  });
});
