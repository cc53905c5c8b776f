// @presence-hub/client/testing: a fake hub, no server, for an application's own tests.
//
//   const fake = new FakeHub();
//   const hub = connect("http://hub.test", { workspaceId: "w", WebSocket: fake.WebSocket });
//   await fake.flush();                                  // the snapshot arrived
//   fake.set({ counts: { S1: 2 }, users: { S1: 1 } });   // a counts frame, as the hub sends it
//   fake.viewers("S1", [{ user_id: "ana", profile: { name: "Ana" }, clients: 1 }]);
//   fake.sent;                                           // every frame the clients sent
//
// Frames travel asynchronously, as on a real socket; `await fake.flush()` lets them arrive.
// The fake answers what a hub answers: `ack` for a frame with a `ref`, a `viewers` frame for a
// `watch`, `pong` and `snapshot` for `ping` and `sync`; it changes no count by itself.

const EMPTY = { total: 0, anonymous: 0, viewers: [] };

/** One fake socket: what `new WebSocket(url)` makes when it is the fake's class. */
class FakeSocket {
  /** @param {FakeHub} hub @param {string} url */
  constructor(hub, url) {
    this.hub = hub;
    this.url = url;
    this.query = Object.fromEntries(new URL(url).searchParams);
    this.readyState = 0;
    /** @type {Set<string>} the sessions this socket watches */
    this.watching = new Set();
    /** @type {((event: { data: string }) => void) | null} */
    this.onmessage = null;
    /** @type {((event: { code: number, reason: string, wasClean: boolean }) => void) | null} */
    this.onclose = null;
    /** @type {((event: object) => void) | null} */
    this.onopen = null;
    hub.opened += 1;
    hub.later(() => {
      if (this.readyState !== 0) return;
      if (hub.refuse !== null) {
        this.end(hub.refuse);
        return;
      }
      this.readyState = 1;
      hub.sockets.add(this);
      this.onopen?.({});
      this.deliver({ type: "snapshot", workspace_id: hub.workspaceId, client_id: this.query.client_id, ...hub.wire() });
    });
  }

  /** @param {string} data */
  send(data) {
    if (this.readyState !== 1) throw new Error("the fake socket is not open");
    const frame = JSON.parse(data);
    this.hub.sent.push(frame);
    this.hub.answer(this, frame);
  }

  close(code = 1000) {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    this.hub.later(() => this.end(code));
  }

  /** @param {number} code */
  end(code) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.hub.sockets.delete(this);
    this.onclose?.({ code, reason: "", wasClean: code === 1000 });
  }

  /** @param {object} frame */
  deliver(frame) {
    const data = JSON.stringify(frame);
    this.hub.later(() => this.readyState === 1 && this.onmessage?.({ data }));
  }
}

/**
 * A hub in memory. Give `fake.WebSocket` to `connect()` (or to `<PresenceProvider WebSocket>`),
 * then drive what the clients see with `set()`, `viewers()` and `drop()`.
 */
export class FakeHub {
  constructor({ workspaceId = "w" } = {}) {
    this.workspaceId = workspaceId;
    this.seq = 1;
    this.online = 0;
    /** @type {Record<string, number>} */
    this.counts = {};
    /** @type {Record<string, number>} */
    this.users = {};
    this.onlineUsers = 0;
    /** @type {Map<string, {total: number, anonymous: number, viewers: any[]}>} */
    this.lists = new Map();
    /** @type {any[]} every frame the clients sent, parsed, in order */
    this.sent = [];
    /** @type {Set<FakeSocket>} the open sockets */
    this.sockets = new Set();
    /** sockets ever made (connection attempts) */
    this.opened = 0;
    /** @type {number | null} a close code every new socket gets at once instead of a snapshot */
    this.refuse = null;
    /** @type {Set<Promise<void>>} */
    this.pending = new Set();
    const hub = this;
    /** The class to pass as the client's `WebSocket` option. */
    this.WebSocket = class extends FakeSocket {
      /** @param {string} url */
      constructor(url) {
        super(hub, url);
      }
    };
  }

  /** @param {() => void} fn run after the current task, as a socket's events are */
  later(fn) {
    /** @type {Promise<void>} */
    const done = new Promise((resolve) => setTimeout(() => {
      this.pending.delete(done);
      try { fn(); } finally { resolve(); }
    }, 0));
    this.pending.add(done);
  }

  /** Resolves once every frame sent so far (and what those caused) has arrived. */
  async flush() {
    while (this.pending.size) await Promise.all([...this.pending]);
  }

  wire() {
    return {
      seq: this.seq, online: this.online, counts: { ...this.counts },
      users: { ...this.users }, online_users: this.onlineUsers,
    };
  }

  /**
   * Change the presence and push one `counts` frame (with a new seq) carrying what changed:
   * `counts` and `users` are merged (0 removes a session), `online` and `onlineUsers` replace.
   * @param {{ counts?: Record<string, number>, users?: Record<string, number>,
   *           online?: number, onlineUsers?: number }} change
   */
  set(change) {
    this.seq += 1;
    /** @type {Record<string, any>} */
    const frame = { type: "counts", seq: this.seq, counts: {} };
    for (const field of /** @type {const} */ (["counts", "users"])) {
      const values = this[field];
      for (const [session, n] of Object.entries(change[field] ?? {})) {
        if ((values[session] ?? 0) === n) continue;
        if (n > 0) values[session] = n;
        else delete values[session];
        (frame[field] ??= {})[session] = n;
      }
    }
    if (change.online !== undefined && change.online !== this.online) {
      this.online = frame.online = change.online;
    }
    if (change.onlineUsers !== undefined && change.onlineUsers !== this.onlineUsers) {
      this.onlineUsers = frame.online_users = change.onlineUsers;
    }
    for (const socket of this.sockets) socket.deliver(frame);
    return this.seq;
  }

  /**
   * Set who views a session; sockets that watch it get a `viewers_diff`.
   * @param {string} sessionId
   * @param {{ user_id: string, profile: object | null, clients: number }[]} viewers
   * @param {{ anonymous?: number }} [options]
   */
  viewers(sessionId, viewers, { anonymous = 0 } = {}) {
    const before = this.lists.get(sessionId) ?? EMPTY;
    const list = { total: viewers.length + anonymous, anonymous, viewers: [...viewers] };
    this.lists.set(sessionId, list);
    const had = new Map(before.viewers.map((v) => [v.user_id, v]));
    const now = new Set(viewers.map((v) => v.user_id));
    const frame = {
      type: "viewers_diff", session_id: sessionId, seq: this.seq, total: list.total, anonymous,
      joined: viewers.filter((v) => !had.has(v.user_id)),
      updated: viewers.filter((v) => had.has(v.user_id) && JSON.stringify(had.get(v.user_id)) !== JSON.stringify(v)),
      left: before.viewers.filter((v) => !now.has(v.user_id)).map((v) => v.user_id),
    };
    for (const socket of this.sockets) if (socket.watching.has(sessionId)) socket.deliver(frame);
  }

  /** Close every open socket with `code` (1006: dropped; the clients reconnect). */
  drop(code = 1006) {
    for (const socket of [...this.sockets]) {
      socket.readyState = 2;
      this.later(() => socket.end(code));
    }
  }

  /** The frames of one type the clients sent. @param {string} type */
  sentOf(type) {
    return this.sent.filter((frame) => frame.type === type);
  }

  /** @param {FakeSocket} socket @param {any} frame */
  answer(socket, frame) {
    const ack = () => frame.ref !== undefined && socket.deliver({ type: "ack", ref: frame.ref, seq: this.seq });
    if (frame.type === "watch") {
      socket.watching.add(frame.session_id);
      const list = this.lists.get(frame.session_id) ?? EMPTY;
      socket.deliver({
        type: "viewers", workspace_id: this.workspaceId, session_id: frame.session_id, seq: this.seq,
        ...list, ref: frame.ref,
      });
    } else if (frame.type === "unwatch") {
      socket.watching.delete(frame.session_id);
      ack();
    } else if (frame.type === "ping") {
      socket.deliver({ type: "pong", ref: frame.ref });
    } else if (frame.type === "sync") {
      socket.deliver({ type: "snapshot", workspace_id: this.workspaceId, ref: frame.ref, ...this.wire() });
    } else {
      ack();
    }
  }
}
