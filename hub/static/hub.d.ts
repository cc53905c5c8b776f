// Types of hub.js, the presence hub's browser client.

export interface Presence {
  seq: number;
  online: number;
  counts: Record<string, number>;
}

export const FINAL_CLOSE_CODES: Set<number>;
export const BACKOFF_BASE_MS: number;
export const BACKOFF_MAX_MS: number;
export const ACK_TIMEOUT_MS: number;

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
  /** milliseconds; defaults BACKOFF_BASE_MS, BACKOFF_MAX_MS, ACK_TIMEOUT_MS */
  backoffBase?: number;
  backoffMax?: number;
  ackTimeout?: number;
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
  /** connection attempts made */
  readonly attempts: number;
  /** the close code that stopped it for good, else null */
  readonly closeCode: number | null;
  /** the seq that includes the change; rejects with a HubError within ackTimeout */
  setSession(sessionId: string | null): Promise<number>;
  close(): void;
}

export function connect(url: string, options: ConnectOptions): HubConnection;

export class PresenceBadge extends HTMLElement {
  static connection: HubConnection | null;
  hub: HubConnection | null;
}
