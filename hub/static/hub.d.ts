// Built by scripts/build_static.py from js/packages/client/src/client.d.ts and elements.d.ts:
// edit those, not this file (hub.d.ts, served by the hub at /static/hub.d.ts).

// Types of @presence-hub/client (the hub serves them with elements.d.ts as /static/hub.d.ts).

export interface Presence {
  seq: number;
  online: number;
  counts: Record<string, number>;
  /** distinct people per session (an anonymous client counts as one) */
  users: Record<string, number>;
  onlineUsers: number;
}

/** A user's profile: a JSON object of at most 1024 bytes (the application's choice). */
export type Profile = Record<string, unknown> & {
  name?: string;
  /** an http(s) image URL, shown by <presence-facepile> */
  avatar?: string;
  /** a CSS hex colour behind the initials */
  color?: string;
};

export interface Viewer {
  user_id: string;
  profile: Profile | null;
  /** that user's clients (tabs) viewing the session */
  clients: number;
}

export interface ViewerList {
  /** people viewing the session, the anonymous ones included */
  total: number;
  anonymous: number;
  /** the identified ones, earliest arrival first (at most the watch's limit) */
  viewers: Viewer[];
}

export const FINAL_CLOSE_CODES: Set<number>;
export const BACKOFF_BASE_MS: number;
export const BACKOFF_MAX_MS: number;
export const ACK_TIMEOUT_MS: number;
/** how long a tab keeps to the event stream after WebSockets failed to open */
export const SSE_REMEMBER_MS: number;

/** Why a setSession promise was rejected (see docs/clients.md). */
export class HubError extends Error {
  constructor(code: string, message: string, closeCode?: number);
  /** "connection_lost", "timeout", "closed", or the hub's error code ("unavailable", ...) */
  readonly code: string;
  /** with code "closed": the close code that stopped the connection */
  readonly closeCode?: number;
}
export function emptyPresence(): Presence;
export function applyFrame(state: Presence, frame: unknown): Presence;
export function applyViewers(list: ViewerList | undefined, frame: unknown): ViewerList;
export function initials(viewer: Viewer): string;
export function facepile(list: ViewerList, max: number): { faces: Viewer[]; more: number };
/** How to draw a viewer, from text only (avatar: an http(s) URL; color: a checked CSS colour). */
export function face(viewer: Viewer): {
  name: string;
  avatar: string | null;
  initials: string;
  color: string | null;
};
export function backoffDelay(
  attempt: number,
  base?: number,
  max?: number,
  random?: () => number,
): number;
export function isFinal(code: number): boolean;
export function tabClientId(storage?: Storage): string;

export interface ConnectOptions {
  workspaceId: string;
  clientId?: string;
  token?: string;
  /** called before every connection attempt: the token of that attempt (instead of `token`) */
  getToken?: () => string | Promise<string>;
  /** the user this client belongs to with auth off (with auth on, the token's user claim) */
  userId?: string;
  /** this user's profile, sent on every connect */
  profile?: Profile;
  WebSocket?: typeof WebSocket;
  /** "auto" (default): WebSockets, and the event stream (SSE) when they cannot open */
  transport?: Transport | "auto";
  EventSource?: typeof EventSource;
  /** for commands over REST while on the event stream */
  fetch?: typeof fetch;
  /** where the fallback is remembered (default sessionStorage; null: in memory only) */
  storage?: Storage | null;
  /** milliseconds; defaults BACKOFF_BASE_MS, BACKOFF_MAX_MS, ACK_TIMEOUT_MS */
  backoffBase?: number;
  backoffMax?: number;
  ackTimeout?: number;
}

export type Status = "connecting" | "open" | "reconnecting" | "closed";
export type Transport = "websocket" | "sse";

export class HubConnection extends EventTarget {
  constructor(url: string, options: ConnectOptions);
  /** the first connection that connect() made (the custom elements' default) */
  static first: HubConnection | null;
  /** "connecting" until the first snapshot, "open", "reconnecting" after a drop, "closed" */
  readonly status: Status;
  /** the transport in use: "websocket", or "sse" (the event stream) */
  readonly transport: Transport;
  readonly url: string;
  readonly workspaceId: string;
  readonly clientId: string;
  presence: Presence;
  session: string;
  readonly counts: Record<string, number>;
  readonly online: number;
  readonly users: Record<string, number>;
  readonly onlineUsers: number;
  readonly userId?: string;
  profile: Profile | null;
  /** connection attempts made */
  readonly attempts: number;
  /** the close code that stopped it for good, else null */
  readonly closeCode: number | null;
  /** the seq that includes the change; rejects with a HubError within ackTimeout */
  setSession(sessionId: string | null): Promise<number>;
  /** the (unmoved) seq; rejects with a HubError ("invalid_profile", ...) within ackTimeout */
  setProfile(profile: Profile): Promise<number>;
  /** follow a session's viewers ("viewers" events); counted: end each with one unwatch */
  watch(sessionId: string, limit?: number): Promise<ViewerList>;
  unwatch(sessionId: string): void;
  /** a watched session's viewers as last heard */
  viewers(sessionId: string): ViewerList;
  addEventListener(
    type: "viewers",
    listener: (event: CustomEvent<ViewerList & { sessionId: string }>) => void,
  ): void;
  addEventListener(
    type: "status",
    listener: (event: CustomEvent<{ status: Status }>) => void,
  ): void;
  addEventListener(
    type: "transport",
    listener: (event: CustomEvent<{ transport: Transport }>) => void,
  ): void;
  addEventListener(
    type: "closed",
    listener: (event: CustomEvent<{ code: number }>) => void,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null): void;
  /** stop for good: the socket closes with 1000, pending calls fail with "closed" */
  close(): void;
}

export function connect(url: string, options: ConnectOptions): HubConnection;

// Types of @presence-hub/client/elements: the custom elements, defined on import.

/** <presence-badge session="S" [count="users"]> */
export class PresenceBadge extends HTMLElement {
  static connection: HubConnection | null;
  hub: HubConnection | null;
}

/** <presence-facepile session="S" [max="3"]> */
export class PresenceFacepile extends HTMLElement {
  hub: HubConnection | null;
}
