// Types of hub.js, the presence hub's browser client.

export interface Presence {
  seq: number;
  online: number;
  counts: Record<string, number>;
}

export const FINAL_CLOSE_CODES: Set<number>;
export function emptyPresence(): Presence;
export function applyFrame(state: Presence, frame: unknown): Presence;
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
  WebSocket?: typeof WebSocket;
}

export class HubConnection extends EventTarget {
  constructor(url: string, options: ConnectOptions);
  readonly url: string;
  readonly workspaceId: string;
  readonly clientId: string;
  presence: Presence;
  session: string;
  readonly counts: Record<string, number>;
  readonly online: number;
  setSession(sessionId: string | null): void;
  close(): void;
}

export function connect(url: string, options: ConnectOptions): HubConnection;

export class PresenceBadge extends HTMLElement {
  static connection: HubConnection | null;
  hub: HubConnection | null;
}
