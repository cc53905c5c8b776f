// Types of @presence-hub/client/testing: a fake hub in memory for an application's tests.
import type { Viewer, ViewerList } from "./client.js";

export interface FakeSocket {
  readonly url: string;
  /** the socket URL's query: client_id, user_id, token */
  readonly query: Record<string, string>;
  readonly readyState: number;
  /** the sessions this socket watches */
  readonly watching: ReadonlySet<string>;
}

export class FakeHub {
  constructor(options?: { workspaceId?: string });
  readonly workspaceId: string;
  /** the class to pass as the client's `WebSocket` option */
  readonly WebSocket: typeof WebSocket;
  readonly seq: number;
  readonly online: number;
  readonly counts: Record<string, number>;
  readonly users: Record<string, number>;
  readonly onlineUsers: number;
  /** every frame the clients sent, parsed, in order */
  readonly sent: Array<{ type: string; [field: string]: unknown }>;
  /** the open sockets */
  readonly sockets: ReadonlySet<FakeSocket>;
  /** sockets ever made (connection attempts) */
  readonly opened: number;
  /** a close code every new socket gets at once instead of a snapshot (null: accept) */
  refuse: number | null;
  /** resolves once every frame sent so far (and what those caused) has arrived */
  flush(): Promise<void>;
  /** change the presence and push one counts frame with what changed; returns the new seq */
  set(change: {
    counts?: Record<string, number>;
    users?: Record<string, number>;
    online?: number;
    onlineUsers?: number;
  }): number;
  /** set who views a session; watching sockets get a viewers_diff */
  viewers(sessionId: string, viewers: Viewer[], options?: { anonymous?: number }): void;
  /** the list the fake holds for a session */
  readonly lists: ReadonlyMap<string, ViewerList>;
  /** close every open socket with this code (1006 by default: the clients reconnect) */
  drop(code?: number): void;
  /** the frames of one type the clients sent */
  sentOf(type: string): Array<{ type: string; [field: string]: unknown }>;
}
