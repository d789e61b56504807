/**
 * The engine as the UI sees it: the generated bindings, with short names for the types.
 * Only `bindings.ts` (generated from Rust) knows command names and argument shapes.
 */
import { commands, events } from "../bindings";
import type {
  ContactView_Serialize,
  Event_Serialize,
  GroupView,
  Message_Serialize,
  Profile_Serialize,
  Transfer_Serialize,
  CommandError,
} from "../bindings";

export type Contact = ContactView_Serialize;
export type Group = GroupView;
export type Message = Message_Serialize;
export type Transfer = Transfer_Serialize;
export type Profile = Profile_Serialize;
export type EngineEvent = Event_Serialize;
export type TrustState = Contact["state"];
export type Api = typeof commands;
export { commands, events };

/** True for the `{ code, message }` errors every command rejects with. */
export function isCommandError(e: unknown): e is CommandError {
  return (
    typeof e === "object" &&
    e !== null &&
    typeof (e as Record<string, unknown>).code === "string" &&
    typeof (e as Record<string, unknown>).message === "string"
  );
}

/** A readable sentence for anything a command threw. */
export function errorMessage(e: unknown): string {
  if (isCommandError(e)) return capitalise(e.message);
  if (e instanceof Error) return e.message || e.name;
  if (typeof e === "string") return e;
  return "Something went wrong.";
}

function capitalise(s: string): string {
  return s.length ? s[0]!.toUpperCase() + s.slice(1) : s;
}
