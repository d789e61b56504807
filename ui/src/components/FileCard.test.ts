import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen } from "@testing-library/svelte";
import FileCard from "./FileCard.svelte";
import { transfer } from "../lib/fixtures";

describe("FileCard", () => {
  it("offers accept and decline for an incoming file", async () => {
    const onAction = vi.fn();
    render(FileCard, { transfer: transfer(), contactName: "Bob", onAction, onOpen: vi.fn(), onReveal: vi.fn() });
    expect(screen.getByText("Bob wants to send you this")).toBeTruthy();
    await fireEvent.click(screen.getByRole("button", { name: "Accept" }));
    expect(onAction).toHaveBeenCalledWith("t1", "accept");
    await fireEvent.click(screen.getByRole("button", { name: "Decline" }));
    expect(onAction).toHaveBeenCalledWith("t1", "decline");
  });

  it("warns about dangerous files and asks twice before opening one", async () => {
    const onOpen = vi.fn();
    const t = transfer({ name: "setup.exe", dangerous: true, state: "done", path: "/dl/setup.exe" });
    render(FileCard, { transfer: t, contactName: "Bob", onAction: vi.fn(), onOpen, onReveal: vi.fn() });
    expect(screen.getByTestId("dangerous").textContent).toMatch(/run programs/);
    await fireEvent.click(screen.getByRole("button", { name: "Open" }));
    expect(onOpen).not.toHaveBeenCalled();
    await fireEvent.click(screen.getByRole("button", { name: "Open anyway" }));
    expect(onOpen).toHaveBeenCalledWith("t1");
  });

  it("shows progress while receiving", () => {
    const t = transfer({ state: "transferring" });
    render(FileCard, { transfer: t, contactName: "Bob", progress: { bytes: 1_000_000, total: 2_000_000, rate: 500_000 }, onAction: vi.fn(), onOpen: vi.fn(), onReveal: vi.fn() });
    const bar = screen.getByRole("progressbar") as HTMLProgressElement;
    expect(bar.value).toBe(1_000_000);
    expect(bar.parentElement!.textContent!.replace(/\s+/g, " ")).toContain("1.0 MB of 2.0 MB · 500 KB/s");
    expect(screen.getByRole("button", { name: "Cancel" })).toBeTruthy();
  });
});
