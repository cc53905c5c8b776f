// Built by scripts/build_static.py from js/packages/client/src/client.js and elements.js:
// edit those, not this file (hub.js, served by the hub at /static/hub.js).

// presence hub: the browser client (ES module, no dependencies, no build step).
//
//   import { connect } from "@presence-hub/client";      // or "/static/hub.js" from a hub
//   const hub = connect("http://127.0.0.1:8000", { workspaceId });
//   hub.addEventListener("change", () => render(hub.counts, hub.online));
//   hub.setSession("S1");
//
// People (the protocol's section 5): pass `userId` (auth off) or a token with a `user` claim,
// and `hub.users` / `hub.onlineUsers` count distinct people; `hub.setProfile({ name })` names
// this user; `hub.watch("S1")` follows who views S1 ("viewers" events, `hub.viewers("S1")`).
// The custom elements <presence-badge> and <presence-facepile> are in "./elements.js"; the hub
// serves both modules as one file, /static/hub.js (scripts/build_static.py).
//
// Frames are applied by seq with pure functions (applyFrame), so state converges whatever
// arrives late. The reconnect model is docs/clients.md, shared with the Python client and held
// to the same test vectors (tests/vectors/client_model.json): full-jitter exponential backoff,
// the current session said again after every reconnect, a stop for good on the close codes
// after which a retry cannot help, and no promise that waits without a bound.

/**
 * @typedef {{ seq: number, online: number, counts: Record<string, number>,
 *             users: Record<string, number>, onlineUsers: number }} Presence
 * @typedef {{ user_id: string, profile: Record<string, any> | null, clients: number }} Viewer
 * @typedef {{ total: number, anonymous: number, viewers: Viewer[] }} ViewerList
 */

export const BACKOFF_BASE_MS = 250;
export const BACKOFF_MAX_MS = 15000;
export const ACK_TIMEOUT_MS = 10000;

/**
 * Why a setSession promise was rejected: `code` is "connection_lost" (the socket dropped before
 * the answer; the session is said again after the reconnect), "timeout", "closed" (the
 * connection stopped for good; `closeCode` says why) or the hub's error code ("unavailable",
 * "rate_limited", ...).
 */
export class HubError extends Error {
  /** @param {string} code @param {string} message @param {number} [closeCode] */
  constructor(code, message, closeCode) {
    super(message);
    this.name = "HubError";
    this.code = code;
    this.closeCode = closeCode;
  }
}

/** How long a tab keeps to the event stream after WebSockets failed to open (then tries again). */
export const SSE_REMEMBER_MS = 3600000;
const SSE_KEY = "presence-hub.sse-until";
/** The close code of an event stream refused with an HTTP status (EventSource cannot read it). */
const REFUSED = { 400: 4400, 401: 4401, 403: 4403, 404: 4404, 410: 4410 };
const EVENTS = ["snapshot", "counts", "session", "viewers", "viewers_diff"];

/** Close codes after which reconnecting cannot help (docs/clients.md, "Which endings are final"). */
export const FINAL_CLOSE_CODES = new Set([1000, 1008, 1009, 4400, 4401, 4403, 4404, 4410]);

/** The reason of the one close 4401 after which a client reconnects with a fresh token. */
export const TOKEN_EXPIRED = "token expired";
/** A live socket refreshes its token half way to exp, and at most this long before it. */
export const REFRESH_LEAD_MAX_MS = 60000;

/**
 * A JWT's exp in milliseconds, read without verifying it (the hub verifies); null when the
 * token is not a JWT or has no numeric exp.
 * @param {string | undefined} token
 * @returns {number | null}
 */
export function tokenExpiry(token) {
  try {
    const body = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(body.padEnd(body.length + ((4 - (body.length % 4)) % 4), "="))).exp;
    return typeof exp === "number" ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * Milliseconds from now until a token expiring at expMs is refreshed: half way there, and at
 * most REFRESH_LEAD_MAX_MS before it.
 * @param {number} expMs @param {number} [now]
 */
export function refreshDelay(expMs, now = Date.now()) {
  const remaining = expMs - now;
  return Math.max(0, remaining - Math.min(REFRESH_LEAD_MAX_MS, remaining / 2));
}

/** @type {ViewerList} the list of a session nobody watches (one object: safe to compare) */
const NO_VIEWERS = Object.freeze({ total: 0, anonymous: 0, viewers: /** @type {Viewer[]} */ ([]) });

/** @returns {Presence} */
export function emptyPresence() {
  return { seq: -1, online: 0, counts: {}, users: {}, onlineUsers: 0 };
}

/** @param {Record<string, number>} values @param {Record<string, number>} [frame] */
function absolute(values, frame) {
  const next = { ...values };
  for (const [session, n] of Object.entries(frame ?? {})) {
    if (n > 0) next[session] = n;
    else delete next[session];
  }
  return next;
}

/**
 * The presence after one server frame; the same object when the frame changes nothing.
 * @param {Presence} state
 * @param {any} frame a parsed server frame
 * @returns {Presence}
 */
export function applyFrame(state, frame) {
  if (frame.type === "snapshot") {
    return {
      seq: frame.seq,
      online: frame.online,
      counts: { ...frame.counts },
      users: { ...(frame.users ?? {}) },
      onlineUsers: frame.online_users ?? 0,
    };
  }
  if (frame.type !== "counts" || frame.seq <= state.seq) {
    return state;
  }
  return {
    seq: frame.seq,
    online: typeof frame.online === "number" ? frame.online : state.online,
    counts: absolute(state.counts, frame.counts),
    users: absolute(state.users, frame.users),
    onlineUsers: typeof frame.online_users === "number" ? frame.online_users : state.onlineUsers,
  };
}

/**
 * A session's viewers after a `viewers` or `viewers_diff` frame: `left` ones go, `updated`
 * ones change in place, `joined` ones go last (the list is the earliest arrivals).
 * @param {ViewerList | undefined} list
 * @param {any} frame
 * @returns {ViewerList}
 */
export function applyViewers(list, frame) {
  if (frame.type === "viewers" || !list) {
    return { total: frame.total, anonymous: frame.anonymous, viewers: [...(frame.viewers ?? [])] };
  }
  const left = new Set(frame.left);
  const updated = new Map(frame.updated.map((/** @type {Viewer} */ v) => [v.user_id, v]));
  const viewers = list.viewers
    .filter((v) => !left.has(v.user_id))
    .map((v) => updated.get(v.user_id) ?? v);
  return { total: frame.total, anonymous: frame.anonymous, viewers: [...viewers, ...frame.joined] };
}

/**
 * Full-jitter exponential backoff: a delay in [0, min(max, base * 2^attempt)) milliseconds.
 * @param {number} attempt 1 for the first retry
 * @param {number} [base]
 * @param {number} [max]
 * @param {() => number} [random]
 */
export function backoffDelay(attempt, base = BACKOFF_BASE_MS, max = BACKOFF_MAX_MS, random = Math.random) {
  return random() * Math.min(max, base * 2 ** attempt);
}

/** @param {number} code */
export function isFinal(code) {
  return FINAL_CLOSE_CODES.has(code);
}

/** A client id kept for this tab (sessionStorage), new for a new tab. */
export function tabClientId(storage = globalThis.sessionStorage) {
  const key = "presence-hub.client-id";
  let id = storage?.getItem(key);
  if (!id) {
    id = crypto.randomUUID();
    storage?.setItem(key, id);
  }
  return id;
}

/**
 * A live presence connection; dispatches "change" after every applied frame, "status" when
 * `status` changes, "session" for session records, "viewers" (detail: { sessionId, total,
 * anonymous, viewers }) when a watched session's viewers change, "transport" (detail:
 * { transport }) when it switches between "websocket" and "sse", and "closed" (detail:
 * { code }) when it stops for good.
 */
export class HubConnection extends EventTarget {
  /** @type {HubConnection | null} the first connection connect() made (the elements' default) */
  static first = null;

  /**
   * @param {string} url the hub's base URL (http or https)
   * @param {{ workspaceId: string, clientId?: string, token?: string,
   *           getToken?: () => string | Promise<string>, userId?: string,
   *           profile?: Record<string, any>, WebSocket?: typeof WebSocket,
   *           transport?: "auto" | "websocket" | "sse", EventSource?: typeof EventSource,
   *           fetch?: typeof fetch, storage?: Storage | null,
   *           backoffBase?: number, backoffMax?: number, ackTimeout?: number }} options
   *           (durations in milliseconds). `transport`: "auto" (the default) uses WebSockets,
   *           and the event stream when they cannot open (docs/clients.md)
   */
  constructor(url, options) {
    super();
    this.url = url.replace(/\/$/, "");
    this.workspaceId = options.workspaceId;
    this.clientId = options.clientId ?? tabClientId();
    this.token = options.token;
    /** called before every connection attempt (what it returns is the token of that attempt),
     * and before the token's exp, to send it in a refresh frame */
    this.getToken = options.getToken;
    this.expiredOnce = false; // closed 4401 "token expired" since the last snapshot
    /** @type {ReturnType<typeof setTimeout> | undefined} the planned refresh */
    this.refreshTimer = undefined;
    /** the user this client belongs to, with auth off (with auth on: the token's) */
    this.userId = options.userId;
    /** @type {Record<string, any> | null} this user's profile; said again after a reconnect */
    this.profile = options.profile ?? null;
    /** @type {Map<string, {limit: number, count: number, queued?: boolean}>} watched sessions
     * (refcounted; queued while the watch() that made it waits for a live socket) */
    this.watching = new Map();
    /** @type {Map<string, ViewerList>} */
    this.lists = new Map();
    this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    // A WebSocket of the caller's own (a fake hub) comes without an event stream unless one is given.
    /** @type {any} */
    this.EventSourceImpl = options.EventSource ?? (options.WebSocket ? undefined : globalThis.EventSource);
    /** @type {typeof fetch} */
    this.fetchImpl = options.fetch ?? ((url, init) => globalThis.fetch(url, init));
    this.storage = options.storage === undefined ? globalThis.sessionStorage : options.storage;
    /** @type {"auto" | "websocket" | "sse"} */
    this.mode = options.transport ?? "auto";
    this.sseUntil = 0; // when the fallback ends, where there is no sessionStorage
    /** @type {ReturnType<typeof setTimeout> | undefined} ends an event stream once the hour is over */
    this.sseTimer = undefined;
    /** @type {"websocket" | "sse"} the transport in use */
    this.transport = this.mode === "sse" || (this.mode === "auto" && this.until() > 0) ? "sse" : "websocket";
    this.failures = 0; // WebSockets in a row that dropped before they opened
    this.opened = false; // whether the current socket or stream opened
    /** @type {string[]} the sessions the current event stream watches */
    this.streamWatches = [];
    /** @type {Map<string, number>} the ref of a watch() waiting for its stream's viewers event */
    this.watchRefs = new Map();
    this.backoffBase = options.backoffBase ?? BACKOFF_BASE_MS;
    this.backoffMax = options.backoffMax ?? BACKOFF_MAX_MS;
    this.ackTimeout = options.ackTimeout ?? ACK_TIMEOUT_MS;
    /** @type {Presence} */
    this.presence = emptyPresence();
    /** @type {string} the session this client views; said again after a reconnect */
    this.session = "";
    this.attempt = 0;
    this.attempts = 0; // connection attempts made
    this.stopped = false;
    /** @type {number | null} the close code that stopped it for good */
    this.closeCode = null;
    this.live = false; // a socket whose snapshot came
    this.refs = 0;
    /** @type {Map<number, {resolve: (frame: any) => void, reject: (e: HubError) => void}>} */
    this.pending = new Map();
    /** @type {Set<() => void>} calls waiting for a live socket */
    this.waiting = new Set();
    /** @type {any} the WebSocket or the EventSource */
    this.socket = null;
    /** @type {"connecting" | "open" | "reconnecting" | "closed"} */
    this.status = "connecting";
    this.open();
  }

  /** @param {"connecting" | "open" | "reconnecting" | "closed"} status */
  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: { status } }));
  }

  /** @returns {Record<string, number>} */
  get counts() {
    return this.presence.counts;
  }

  get online() {
    return this.presence.online;
  }

  /** @returns {Record<string, number>} distinct people per session */
  get users() {
    return this.presence.users;
  }

  get onlineUsers() {
    return this.presence.onlineUsers;
  }

  /**
   * The viewers of a watched session as last heard (earliest arrival first).
   * @param {string} sessionId
   * @returns {ViewerList}
   */
  viewers(sessionId) {
    return this.lists.get(sessionId) ?? NO_VIEWERS;
  }

  get socketUrl() {
    return `${this.base.replace(/^http/, "ws")}/ws?${this.query()}`;
  }

  /** The event stream's URL: the same query, and the sessions watched (`watch=`). */
  get eventsUrl() {
    const query = this.query();
    const watches = [...this.watching.keys()].slice(0, 8);
    if (watches.length) query.set("watch", watches.join(","));
    return `${this.base}/events?${query}`;
  }

  get base() {
    return `${this.url}/v1/workspaces/${encodeURIComponent(this.workspaceId)}`;
  }

  query() {
    const query = new URLSearchParams({ client_id: this.clientId });
    if (this.userId) query.set("user_id", this.userId);
    if (this.token) query.set("token", this.token);
    return query;
  }

  /** How long (ms) this tab keeps to the event stream it fell back to; 0: not (any more). */
  until() {
    let until = this.sseUntil;
    try {
      until = Math.max(until, Number(this.storage?.getItem(SSE_KEY)) || 0);
    } catch {}
    return Math.max(0, until - Date.now());
  }

  /** @param {"websocket" | "sse"} transport */
  setTransport(transport) {
    if (this.transport === transport) return;
    this.transport = transport;
    this.dispatchEvent(new CustomEvent("transport", { detail: { transport } }));
  }

  open() {
    this.attempts += 1;
    if (this.mode === "auto") this.setTransport(this.until() > 0 ? "sse" : "websocket");
    if (!this.getToken) {
      this.dial();
      return;
    }
    // A token provider that fails is one more failed attempt: back off and ask it again.
    const attempt = this.attempts;
    Promise.resolve()
      .then(this.getToken)
      .then(
        (token) => {
          this.token = token;
          if (!this.stopped && attempt === this.attempts) this.dial();
        },
        () => this.stopped || this.closed(1006),
      );
  }

  dial() {
    this.opened = false;
    if (this.transport === "sse") return this.stream();
    const socket = new this.WebSocketImpl(this.socketUrl);
    this.socket = socket;
    socket.onopen = () => (this.opened = true);
    socket.onmessage = (/** @type {MessageEvent} */ event) => this.receive(JSON.parse(event.data));
    socket.onclose = (/** @type {CloseEvent} */ event) => this.socket === socket && this.closed(event.code, event.reason);
  }

  /** Open the event stream: each event is a frame; `close` carries the code a socket had. */
  stream() {
    const url = this.eventsUrl;
    const source = new this.EventSourceImpl(url);
    this.socket = source;
    this.streamWatches = [...this.watching.keys()];
    const mine = () => this.socket === source;
    // The hour over, a WebSocket is tried again (a reconnect, as after a 1001).
    clearTimeout(this.sseTimer);
    const left = this.mode === "auto" ? this.until() : 0;
    if (left > 0) this.sseTimer = setTimeout(() => mine() && (source.close(), this.closed(1001)), left + 10);
    for (const type of EVENTS) {
      source.addEventListener(type, (/** @type {any} */ e) => mine() && this.receive(JSON.parse(e.data)));
    }
    source.addEventListener("close", (/** @type {any} */ e) => {
      source.close();
      const { code, reason } = JSON.parse(e.data);
      if (mine()) this.closed(code, reason);
    });
    source.onerror = () => {
      source.close();
      if (!mine()) return;
      if (this.opened) return this.closed(1006);
      // Refused before it started: the status says why (EventSource cannot read it).
      this.socket = null;
      this.fetchImpl(url).then(
        (/** @type {Response} */ r) => (r.body?.cancel(), /** @type {any} */ (REFUSED)[r.status] ?? 1006),
        () => 1006,
      ).then((/** @type {number} */ code) => this.socket === null && !this.stopped && this.closed(code));
    };
  }

  /** Open the event stream again (its watches change). */
  restream() {
    if (this.transport !== "sse" || this.stopped || !this.socket) return;
    this.socket?.close();
    this.dial();
  }

  /** Plan a refresh frame with a fresh token before this token's exp (with getToken, on a
   * WebSocket: an event stream is renewed by a new one, after its close 4401). */
  planRefresh() {
    clearTimeout(this.refreshTimer);
    const exp = this.getToken && this.transport === "websocket" ? tokenExpiry(this.token) : null;
    if (exp === null) return;
    this.refreshTimer = setTimeout(async () => {
      /** @type {string} */
      let token;
      try {
        token = await /** @type {() => string | Promise<string>} */ (this.getToken)();
        await this.ask(() => ({ type: "refresh", token }));
      } catch {
        return; // refused or unanswered: the hub closes 4401 "token expired", we reconnect
      }
      this.token = token;
      this.planRefresh();
    }, refreshDelay(exp));
  }

  /** @param {any} frame */
  receive(frame) {
    if (frame.type === "viewers" && frame.ref === undefined) {
      frame.ref = this.watchRefs.get(frame.session_id);
      this.watchRefs.delete(frame.session_id);
    }
    if (frame.type === "snapshot") {
      this.attempt = 0;
      this.failures = 0;
      this.opened = this.live = true;
      this.expiredOnce = false;
      this.planRefresh();
      this.setStatus("open");
      if (this.session && this.waiting.size === 0) {
        this.send({ type: "set_session", session_id: this.session });
      }
      if (this.profile) this.send({ type: "set_profile", profile: this.profile });
      for (const [session_id, { limit, queued }] of this.watching) {
        if (!queued) this.send({ type: "watch", session_id, limit }); // else its call sends it
      }
      for (const wake of [...this.waiting]) wake();
    }
    if (frame.type === "viewers" || frame.type === "viewers_diff") {
      if (this.watching.has(frame.session_id)) {
        const list = applyViewers(this.lists.get(frame.session_id), frame);
        this.lists.set(frame.session_id, list);
        this.dispatchEvent(new CustomEvent("viewers", { detail: { sessionId: frame.session_id, ...list } }));
      }
    }
    if (frame.type === "ack" || frame.type === "error" || frame.type === "viewers") {
      const call = this.pending.get(frame.ref);
      if (call) {
        this.pending.delete(frame.ref);
        if (frame.type === "error") call.reject(new HubError(frame.code, frame.message ?? frame.code));
        else call.resolve(frame);
      }
      return;
    }
    if (frame.type === "viewers_diff") return;
    if (frame.type === "session") {
      this.dispatchEvent(new CustomEvent("session", { detail: frame }));
      return;
    }
    const next = applyFrame(this.presence, frame);
    if (next !== this.presence) {
      this.presence = next;
      this.dispatchEvent(new CustomEvent("change", { detail: next }));
    }
  }

  /** @param {number} code @param {string} [reason] */
  closed(code, reason) {
    this.socket = null;
    this.live = false;
    clearTimeout(this.refreshTimer);
    // Its token expired: once, a new connection with a fresh token; a second 4401 is final.
    const renew = code === 4401 && reason === TOKEN_EXPIRED && !this.expiredOnce;
    if (renew) this.expiredOnce = true;
    const final = this.stopped || (isFinal(code) && !renew);
    const error = final
      ? new HubError("closed", `the hub closed the connection for good: ${code}`, code)
      : new HubError("connection_lost", "the socket dropped before the hub answered");
    for (const call of this.pending.values()) call.reject(error);
    this.pending.clear();
    // WebSockets that cannot open (dropped before the open, twice in a row: a proxy that answers
    // the handshake without a 101, say): the event stream, remembered for this tab for an hour.
    if (!final && code === 1006 && !this.opened && this.mode === "auto" && this.transport === "websocket" && this.EventSourceImpl && ++this.failures >= 2) {
      this.sseUntil = Date.now() + SSE_REMEMBER_MS;
      try {
        this.storage?.setItem(SSE_KEY, String(this.sseUntil));
      } catch {}
      this.failures = 0;
      this.setTransport("sse");
      // The first attempt on the new transport does not wait: nothing says it will fail too.
      this.setStatus("reconnecting");
      setTimeout(() => this.stopped || this.open(), 0);
      return;
    }
    if (final) {
      this.stopped = true;
      this.closeCode = code;
      for (const wake of [...this.waiting]) wake();
      this.setStatus("closed");
      this.dispatchEvent(new CustomEvent("closed", { detail: { code } }));
      return;
    }
    this.setStatus("reconnecting");
    this.attempt += 1;
    const delay = backoffDelay(this.attempt, this.backoffBase, this.backoffMax);
    setTimeout(() => this.stopped || this.open(), delay);
  }

  /** @param {any} frame */
  send(frame) {
    if (this.transport === "sse") return this.rest(frame);
    if (this.socket && this.socket.readyState === 1) this.socket.send(JSON.stringify(frame));
  }

  /**
   * A frame over the event stream's transport: set_session and set_profile by REST (answered
   * as an ack or an error with the frame's ref), a watch by a new stream that names it.
   * @param {any} frame
   */
  rest(frame) {
    const { type, ref, session_id } = frame;
    if (type === "watch") {
      if (ref === undefined) return;
      this.watchRefs.set(session_id, ref);
      if (!this.streamWatches.includes(session_id) || this.lists.has(session_id)) this.restream();
      return;
    }
    const profile = type === "set_profile";
    if (!profile && type !== "set_session") return; // unwatch: the next stream leaves it out
    const client = encodeURIComponent(this.clientId);
    const url = profile ? `${this.base}/clients/${client}/profile` : `${this.base}/current-session?client_id=${client}`;
    /** @type {Record<string, string>} */
    const headers = { "content-type": "application/json" };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const body = JSON.stringify(profile ? frame.profile : { session_id });
    const answer = (/** @type {any} */ f) => ref !== undefined && this.receive({ ...f, ref });
    this.fetchImpl(url, { method: profile ? "PUT" : "POST", headers, body })
      .then(async (/** @type {Response} */ r) => {
        const data = await r.json();
        answer(r.ok ? { type: "ack", seq: data.seq } : { type: "error", code: data.error, message: data.message });
      })
      .catch(() => answer({ type: "error", code: "connection_lost", message: "the request failed" }));
  }

  /**
   * View a session ("" or null: none). The intent is kept at once and said again after every
   * reconnect, whatever the promise says. Resolves with the seq that includes it; rejects with a
   * HubError (connection_lost, timeout, closed, or the hub's refusal) within ackTimeout.
   * @param {string | null} sessionId
   * @returns {Promise<number>}
   */
  setSession(sessionId) {
    this.session = sessionId ?? "";
    return quiet(this.ask(() => ({ type: "set_session", session_id: this.session })).then(seqOf));
  }

  /**
   * This user's profile (a JSON object of at most 1024 bytes: name, avatar URL, colour), shown
   * to everyone watching a session it views; kept and said again after every reconnect.
   * Resolves with the seq; rejects like setSession ("invalid_profile" for a bad one).
   * @param {Record<string, any>} profile
   * @returns {Promise<number>}
   */
  setProfile(profile) {
    this.profile = profile;
    return quiet(this.ask(() => ({ type: "set_profile", profile })).then(seqOf));
  }

  /**
   * Follow who views a session: "viewers" events and hub.viewers(sessionId) from now on;
   * resolves with the list as it is now. Watches are counted: each watch() is ended by one
   * unwatch(). Rejects with "forbidden" without the viewers scope, "too_many_watches" past 8.
   * @param {string} sessionId
   * @param {number} [limit] 1..1000 (100)
   * @returns {Promise<ViewerList>}
   */
  watch(sessionId, limit = 100) {
    const watch = this.watching.get(sessionId);
    if (watch) {
      watch.count += 1;
      return Promise.resolve(this.viewers(sessionId));
    }
    const entry = { limit, count: 1, queued: true };
    this.watching.set(sessionId, entry);
    const make = () => {
      entry.queued = false;
      return { type: "watch", session_id: sessionId, limit };
    };
    return quiet(
      this.ask(make).then(
        () => this.viewers(sessionId),
        (error) => {
          if (error.code !== "connection_lost") this.watching.delete(sessionId);
          throw error;
        },
      ),
    );
  }

  /**
   * End one watch() of the session; the last one stops it (after the current task, so that a
   * view re-rendered at once, which unwatches and watches again, keeps its list).
   * @param {string} sessionId
   */
  unwatch(sessionId) {
    const watch = this.watching.get(sessionId);
    if (!watch || --watch.count > 0) return;
    setTimeout(() => {
      if (watch.count > 0 || this.watching.get(sessionId) !== watch) return;
      this.watching.delete(sessionId);
      this.lists.delete(sessionId);
      this.send({ type: "unwatch", session_id: sessionId });
      this.watchRefs.delete(sessionId);
    }, 0);
  }

  /**
   * Send a frame (made by `make` when the socket is live) with a fresh ref; the hub's answer.
   * @param {() => object} make
   * @returns {Promise<any>}
   */
  ask(make) {
    const result = new Promise((resolve, reject) => {
      let ref = 0;
      const timer = setTimeout(() => {
        this.waiting.delete(go);
        this.pending.delete(ref);
        reject(new HubError("timeout", `no answer from the hub within ${this.ackTimeout} ms`));
      }, this.ackTimeout);
      /** @param {(value: any) => void} fn */
      const settle = (fn) => (/** @type {any} */ value) => {
        clearTimeout(timer);
        fn(value);
      };
      const go = () => {
        this.waiting.delete(go);
        if (this.stopped) {
          settle(reject)(new HubError("closed", "the connection stopped", this.closeCode ?? 0));
          return;
        }
        ref = ++this.refs;
        this.pending.set(ref, { resolve: settle(resolve), reject: settle(reject) });
        this.send({ ...make(), ref });
      };
      if (this.live || this.stopped) go();
      else this.waiting.add(go);
    });
    result.catch(() => {}); // a caller that does not await it sees no unhandled rejection
    return result;
  }

  /** Stop for good: the socket closes with 1000 and pending calls fail with "closed". */
  close() {
    if (this.status === "closed") return;
    this.stopped = true;
    clearTimeout(this.sseTimer);
    clearTimeout(this.refreshTimer);
    const socket = this.socket;
    if (socket) {
      socket.onclose = socket.onmessage = socket.onerror = null;
      socket.close(1000);
    }
    this.closed(1000); // now, not when the socket's close event comes (or while backing off)
  }
}

/** @param {{ seq: number }} frame */
const seqOf = (frame) => frame.seq;

/**
 * The promise, marked handled: a caller that does not await it sees no unhandled rejection.
 * @template T @param {Promise<T>} promise @returns {Promise<T>}
 */
function quiet(promise) {
  promise.catch(() => {});
  return promise;
}

/**
 * A new connection; the first one made is also the custom elements' default.
 * @param {string} url
 * @param {ConstructorParameters<typeof HubConnection>[1]} options
 */
export function connect(url, options) {
  const connection = new HubConnection(url, options);
  HubConnection.first ??= connection;
  return connection;
}

/**
 * Initials for a face: from profile.name ("Ana Lima" -> "AL"), else from the user id.
 * @param {Viewer} viewer
 */
export function initials(viewer) {
  const name = typeof viewer.profile?.name === "string" && viewer.profile.name.trim()
    ? viewer.profile.name : viewer.user_id;
  const words = name.trim().split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words[words.length - 1]] : [words[0] ?? "?"];
  return letters.map((w) => [...w][0].toUpperCase()).join("").slice(0, 2);
}

/**
 * What a facepile shows: the first `max` identified viewers, and "+k" for everyone else
 * (the other identified ones and the anonymous ones).
 * @param {ViewerList} list @param {number} max
 * @returns {{ faces: Viewer[], more: number }}
 */
export function facepile(list, max) {
  const faces = list.viewers.slice(0, Math.max(0, max));
  return { faces, more: Math.max(0, list.total - faces.length) };
}

const COLOR = /^(#[0-9a-f]{3,8}|(rgb|hsl)a?\([\d\s.,%]+\))$/i;

/**
 * How to draw one viewer, from text only: `name` (a title), `avatar` (an http(s) URL, else
 * null), `initials`, and `color` (a CSS colour that passed a strict pattern, else null).
 * @param {Viewer} viewer
 * @returns {{ name: string, avatar: string | null, initials: string, color: string | null }}
 */
export function face(viewer) {
  const { name, avatar, color } = viewer.profile ?? {};
  return {
    name: typeof name === "string" ? name : viewer.user_id,
    avatar: typeof avatar === "string" && /^https?:\/\//i.test(avatar) ? avatar : null,
    initials: initials(viewer),
    color: typeof color === "string" && COLOR.test(color) ? color : null,
  };
}

// presence hub: the custom elements <presence-badge> and <presence-facepile>, defined on import
// (where customElements exists). They follow the first connection that connect() made, or the
// one set as `PresenceBadge.connection` or on an element's `hub`.

const HTMLElementBase = globalThis.HTMLElement ?? class {};

/**
 * <presence-badge session="S1" [count="users"]>: "N viewing", hidden at 0: clients, or with
 * count="users" people (one person with two tabs counts once). Styled with the custom
 * properties --presence-badge-background, --presence-badge-color and --presence-badge-radius.
 */
export class PresenceBadge extends HTMLElementBase {
  /** @type {HubConnection | null} the connection elements follow unless given their own */
  static #connection = null;

  static get connection() {
    return PresenceBadge.#connection ?? HubConnection.first;
  }

  static set connection(connection) {
    PresenceBadge.#connection = connection;
  }

  static observedAttributes = ["session", "count"];

  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    this.render = this.render.bind(this);
    /** @type {HubConnection | null} */
    this.hub = null;
  }

  connectedCallback() {
    this.hub = this.hub ?? PresenceBadge.connection;
    this.hub?.addEventListener("change", this.render);
    this.render();
  }

  disconnectedCallback() {
    this.hub?.removeEventListener("change", this.render);
  }

  attributeChangedCallback() {
    this.render();
  }

  render() {
    const people = this.getAttribute("count") === "users";
    const n = (people ? this.hub?.users : this.hub?.counts)?.[this.getAttribute("session") ?? ""] ?? 0;
    this.hidden = n === 0;
    /** @type {ShadowRoot} */ (this.shadowRoot).innerHTML = `<style>
      :host { display: inline-block; font: 12px/1.6 system-ui, sans-serif;
        padding: 0 0.6em; border-radius: var(--presence-badge-radius, 1em);
        background: var(--presence-badge-background, #1f6feb);
        color: var(--presence-badge-color, #fff); }
      :host([hidden]) { display: none; }
    </style>${n} viewing`;
  }
}

/**
 * <presence-facepile session="S1" [max="3"]>: the faces of who views S1 (profile.avatar, an
 * http(s) image URL, else initials of profile.name on profile.color), earliest arrival first,
 * and "+k" for the rest; hidden when nobody is there. It watches the session (the token needs
 * the viewers scope with auth on). Styled with --presence-facepile-size,
 * --presence-facepile-overlap, --presence-facepile-border, --presence-facepile-background,
 * --presence-facepile-color, --presence-facepile-more-background and --presence-facepile-font.
 */
export class PresenceFacepile extends HTMLElementBase {
  static observedAttributes = ["session", "max"];

  constructor() {
    super();
    this.attachShadow({ mode: "open" });
    this.render = this.render.bind(this);
    /** @type {HubConnection | null} */
    this.hub = null;
    /** @type {string | null} the session watched */
    this.watched = null;
  }

  connectedCallback() {
    this.hub = this.hub ?? PresenceBadge.connection;
    this.hub?.addEventListener("viewers", this.render);
    this.follow();
    this.render();
  }

  disconnectedCallback() {
    this.hub?.removeEventListener("viewers", this.render);
    if (this.watched !== null) this.hub?.unwatch(this.watched);
    this.watched = null;
  }

  attributeChangedCallback() {
    if (this.hub) this.follow();
    this.render();
  }

  follow() {
    const session = this.getAttribute("session") ?? "";
    if (!this.hub || this.watched === session) return;
    if (this.watched !== null) this.hub.unwatch(this.watched);
    this.watched = session;
    this.hub.watch(session).then(this.render, (error) => {
      this.dataset.error = error.code;
    });
  }

  render() {
    const max = Number.parseInt(this.getAttribute("max") ?? "3", 10);
    const list = this.hub?.viewers(this.getAttribute("session") ?? "") ?? { total: 0, anonymous: 0, viewers: [] };
    const { faces, more } = facepile(list, Number.isFinite(max) ? max : 3);
    this.hidden = list.total === 0;
    const style = document.createElement("style");
    style.textContent = `
      :host { display: inline-flex; align-items: center; }
      :host([hidden]) { display: none; }
      .face { box-sizing: border-box; width: var(--presence-facepile-size, 24px);
        height: var(--presence-facepile-size, 24px); border-radius: 50%; overflow: hidden;
        display: inline-flex; align-items: center; justify-content: center;
        margin-left: calc(-1 * var(--presence-facepile-overlap, 6px));
        border: var(--presence-facepile-border, 2px solid #fff);
        background: var(--presence-facepile-background, #8250df);
        color: var(--presence-facepile-color, #fff);
        font: var(--presence-facepile-font, 600 10px/1 system-ui, sans-serif); }
      .face:first-child { margin-left: 0; }
      .face img { width: 100%; height: 100%; object-fit: cover; }
      .more { background: var(--presence-facepile-more-background, #57606a); }`;
    const nodes = faces.map((viewer) => {
      const { name, avatar, initials, color } = face(viewer);
      const span = document.createElement("span");
      span.className = "face";
      span.dataset.user = viewer.user_id;
      span.title = name;
      if (avatar) {
        const img = document.createElement("img");
        img.src = avatar;
        img.alt = name;
        span.append(img);
      } else {
        span.textContent = initials;
        if (color) span.style.background = color;
      }
      return span;
    });
    if (more > 0) {
      const rest = document.createElement("span");
      rest.className = "face more";
      rest.textContent = `+${more}`;
      nodes.push(rest);
    }
    /** @type {ShadowRoot} */ (this.shadowRoot).replaceChildren(style, ...nodes);
  }
}

if (globalThis.customElements && !customElements.get("presence-badge")) {
  customElements.define("presence-badge", PresenceBadge);
}
if (globalThis.customElements && !customElements.get("presence-facepile")) {
  customElements.define("presence-facepile", PresenceFacepile);
}
