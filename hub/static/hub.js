// presence hub: a dependency-free browser client (ES module, no build step).
//
//   import { connect } from "/static/hub.js";
//   const hub = connect("http://127.0.0.1:8000", { workspaceId });
//   hub.addEventListener("change", () => render(hub.counts, hub.online));
//   hub.setSession("S1");
//
// Frames are applied by seq with pure functions (applyFrame), so state converges whatever
// arrives late. The reconnect model is docs/clients.md, shared with the Python client and held
// to the same test vectors (tests/vectors/client_model.json): full-jitter exponential backoff,
// the current session said again after every reconnect, a stop for good on the close codes
// after which a retry cannot help, and no promise that waits without a bound.

/** @typedef {{ seq: number, online: number, counts: Record<string, number> }} Presence */

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

/** Close codes after which reconnecting cannot help (PROTOCOL.md section 4). */
export const FINAL_CLOSE_CODES = new Set([1000, 1008, 1009, 4400, 4401, 4403, 4404, 4410]);

/** @returns {Presence} */
export function emptyPresence() {
  return { seq: -1, online: 0, counts: {} };
}

/**
 * The presence after one server frame; the same object when the frame changes nothing.
 * @param {Presence} state
 * @param {any} frame a parsed server frame
 * @returns {Presence}
 */
export function applyFrame(state, frame) {
  if (frame.type === "snapshot") {
    return { seq: frame.seq, online: frame.online, counts: { ...frame.counts } };
  }
  if (frame.type !== "counts" || frame.seq <= state.seq) {
    return state;
  }
  const counts = { ...state.counts };
  for (const [session, n] of Object.entries(frame.counts)) {
    if (n > 0) counts[session] = n;
    else delete counts[session];
  }
  const online = typeof frame.online === "number" ? frame.online : state.online;
  return { seq: frame.seq, online, counts };
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
 * A live presence connection; dispatches "change" after every applied frame, "session" for
 * session records, and "closed" (detail: { code }) when it stops for good.
 */
export class HubConnection extends EventTarget {
  /**
   * @param {string} url the hub's base URL (http or https)
   * @param {{ workspaceId: string, clientId?: string, token?: string,
   *           WebSocket?: typeof WebSocket, backoffBase?: number, backoffMax?: number,
   *           ackTimeout?: number }} options (durations in milliseconds)
   */
  constructor(url, options) {
    super();
    this.url = url.replace(/\/$/, "");
    this.workspaceId = options.workspaceId;
    this.clientId = options.clientId ?? tabClientId();
    this.token = options.token;
    this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
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
    /** @type {Map<number, {resolve: (seq: number) => void, reject: (e: HubError) => void}>} */
    this.pending = new Map();
    /** @type {Set<() => void>} calls waiting for a live socket */
    this.waiting = new Set();
    /** @type {WebSocket | null} */
    this.socket = null;
    this.open();
  }

  /** @returns {Record<string, number>} */
  get counts() {
    return this.presence.counts;
  }

  get online() {
    return this.presence.online;
  }

  get socketUrl() {
    const base = this.url.replace(/^http/, "ws");
    const query = new URLSearchParams({ client_id: this.clientId });
    if (this.token) query.set("token", this.token);
    return `${base}/v1/workspaces/${encodeURIComponent(this.workspaceId)}/ws?${query}`;
  }

  open() {
    this.attempts += 1;
    const socket = new this.WebSocketImpl(this.socketUrl);
    this.socket = socket;
    socket.onmessage = (event) => this.receive(JSON.parse(event.data));
    socket.onclose = (event) => this.closed(event.code);
  }

  /** @param {any} frame */
  receive(frame) {
    if (frame.type === "snapshot") {
      this.attempt = 0;
      this.live = true;
      if (this.session && this.waiting.size === 0) {
        this.send({ type: "set_session", session_id: this.session });
      }
      for (const wake of [...this.waiting]) wake();
    }
    if (frame.type === "ack" || frame.type === "error") {
      const call = this.pending.get(frame.ref);
      if (call) {
        this.pending.delete(frame.ref);
        if (frame.type === "ack") call.resolve(frame.seq);
        else call.reject(new HubError(frame.code, frame.message ?? frame.code));
      }
      return;
    }
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

  /** @param {number} code */
  closed(code) {
    this.socket = null;
    this.live = false;
    const final = this.stopped || isFinal(code);
    const error = final
      ? new HubError("closed", `the hub closed the connection for good: ${code}`, code)
      : new HubError("connection_lost", "the socket dropped before the hub answered");
    for (const call of this.pending.values()) call.reject(error);
    this.pending.clear();
    if (final) {
      this.stopped = true;
      this.closeCode = code;
      for (const wake of [...this.waiting]) wake();
      this.dispatchEvent(new CustomEvent("closed", { detail: { code } }));
      return;
    }
    this.attempt += 1;
    const delay = backoffDelay(this.attempt, this.backoffBase, this.backoffMax);
    setTimeout(() => this.stopped || this.open(), delay);
  }

  /** @param {object} frame */
  send(frame) {
    if (this.socket && this.socket.readyState === 1) this.socket.send(JSON.stringify(frame));
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
    const result = new Promise((resolve, reject) => {
      let ref = 0;
      const timer = setTimeout(() => {
        this.waiting.delete(go);
        this.pending.delete(ref);
        reject(new HubError("timeout", `no answer from the hub within ${this.ackTimeout} ms`));
      }, this.ackTimeout);
      const settle = (fn) => (value) => {
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
        this.send({ type: "set_session", session_id: this.session, ref });
      };
      if (this.live || this.stopped) go();
      else this.waiting.add(go);
    });
    result.catch(() => {}); // a caller that does not await it sees no unhandled rejection
    return result;
  }

  close() {
    this.stopped = true;
    this.socket?.close(1000);
  }
}

/**
 * @param {string} url
 * @param {{ workspaceId: string, clientId?: string, token?: string }} options
 */
export function connect(url, options) {
  const connection = new HubConnection(url, options);
  PresenceBadge.connection ??= connection;
  return connection;
}

const HTMLElementBase = globalThis.HTMLElement ?? class {};

/**
 * <presence-badge session="S1">: "N viewing", hidden at 0. Styled with the custom properties
 * --presence-badge-background, --presence-badge-color and --presence-badge-radius.
 */
export class PresenceBadge extends HTMLElementBase {
  /** @type {HubConnection | null} the connection badges follow unless given their own */
  static connection = null;

  static observedAttributes = ["session"];

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
    const n = this.hub?.counts[this.getAttribute("session") ?? ""] ?? 0;
    this.hidden = n === 0;
    this.shadowRoot.innerHTML = `<style>
      :host { display: inline-block; font: 12px/1.6 system-ui, sans-serif;
        padding: 0 0.6em; border-radius: var(--presence-badge-radius, 1em);
        background: var(--presence-badge-background, #1f6feb);
        color: var(--presence-badge-color, #fff); }
      :host([hidden]) { display: none; }
    </style>${n} viewing`;
  }
}

if (globalThis.customElements && !customElements.get("presence-badge")) {
  customElements.define("presence-badge", PresenceBadge);
}
