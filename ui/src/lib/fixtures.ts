/** Test data shaped like the engine's (see bindings.ts). */
import type { Contact, Group, Message, Transfer } from "./api";

export function contact(over: Partial<Contact> = {}): Contact {
  return {
    id: "b0b",
    name: "Bob",
    presence: { state: "online", path: "direct", rtt_ms: 2 },
    safety_number: "12345 67890",
    verified: false,
    state: "unverified",
    key_changed: false,
    timer_secs: 0,
    unread: 0,
    queued: 0,
    ...over,
  };
}

let seq = 0;
export function message(over: Partial<Message> = {}): Message {
  seq += 1;
  return {
    id: `m${seq}`,
    conversation: "c",
    contact: "b0b",
    seq,
    direction: "outgoing",
    body: `hello ${seq}`,
    sent_at: 1_700_000_000_000 + seq,
    stored_at: 1_700_000_000_000 + seq,
    state: "delivered",
    transfer: null,
    author: "a11ce",
    ...over,
  };
}

export function transfer(over: Partial<Transfer> = {}): Transfer {
  return {
    id: "t1",
    contact: "b0b",
    direction: "incoming",
    name: "report.pdf",
    size: 2_000_000,
    hash: "h",
    folder: false,
    files: 1,
    media_type: "application/pdf",
    dangerous: false,
    state: "offered",
    bytes_done: 0,
    resumed_from: 0,
    path: null,
    error: null,
    created_at: 1,
    updated_at: 1,
    ...over,
  };
}

export function group(over: Partial<Group> = {}): Group {
  return {
    id: "9a0b",
    name: "Trip",
    members: [
      { id: "a11ce", name: "Alice", admin: true, kind: "you", online: true },
      { id: "b0b", name: "Bob", admin: false, kind: "contact", online: true },
      { id: "ca401", name: "Carol", admin: false, kind: "not_your_contact", online: false },
    ],
    member: true,
    admin: true,
    unread: 0,
    online: 2,
    waiting: 0,
    created_at: 1,
    ...over,
  };
}
