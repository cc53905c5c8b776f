// @presence-hub/react: React bindings of the presence hub's client.
//
// One <PresenceProvider> holds one HubConnection for everything below it. The connection is
// opened by the provider's effect (never while rendering, so server rendering touches no
// window, WebSocket or storage) and counted: an effect that ends and starts again at once, as
// StrictMode's double mount does, keeps the same socket; the last release closes it after
// `closeDelay`. Hooks read the connection through useSyncExternalStore, and a component
// re-renders only when a value it has read changed.
import {
  createContext,
  createElement,
  useContext,
  useEffect,
  useRef,
  useState,
  useSyncExternalStore,
} from "react";
import { HubConnection, emptyPresence, face, facepile } from "@presence-hub/client";

const EMPTY_PRESENCE = emptyPresence();
/** @type {import("@presence-hub/client").ViewerList} */
const EMPTY_LIST = Object.freeze({ total: 0, anonymous: 0, viewers: [] });
const FIELDS = ["clients", "users", "online", "onlineUsers", "seq", "status"];

/**
 * @typedef {import("@presence-hub/client").ViewerList} ViewerList
 * @typedef {{ clients: number, users: number, online: number, onlineUsers: number, seq: number,
 *             status: import("@presence-hub/client").Status }} Values
 * @typedef {{ url: string, workspaceId: string, token?: string, userId?: string,
 *             clientId?: string, WebSocket?: typeof WebSocket,
 *             getToken?: () => string | Promise<string> }} Options
 */

/** What a provider shares with its hooks: the connection (once its effect ran) and intents. */
class PresenceStore {
  constructor() {
    /** @type {HubConnection | null} */
    this.hub = null;
    this.key = "";
    this.users = 0;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this.timer = undefined;
    /** @type {Set<() => void>} */
    this.listeners = new Set();
    /** @type {{ sessionId: string }[]} useSession callers, most recently mounted last */
    this.claims = [];
    this.queued = false;
    /** @type {Map<string, {count: number, limit: number}>} useViewers callers per session */
    this.watches = new Map();
    /** @type {Record<string, any> | null} */
    this.profile = null;
    /** @type {Options["getToken"]} the provider's latest */
    this.getToken = undefined;
    this.emit = () => {
      for (const listener of this.listeners) listener();
    };
    /** @param {() => void} listener */
    this.subscribe = (listener) => {
      this.listeners.add(listener);
      return () => this.listeners.delete(listener);
    };
  }

  /** @param {Options} options @param {string} key */
  retain(options, key) {
    this.users += 1;
    clearTimeout(this.timer);
    if (this.hub && this.key !== key) this.stop();
    if (this.hub) return;
    const { getToken } = options;
    this.key = key;
    this.hub = new HubConnection(options.url, {
      ...options,
      profile: this.profile ?? undefined,
      getToken: getToken && (() => /** @type {NonNullable<Options["getToken"]>} */ (this.getToken)()),
    });
    for (const type of ["change", "status", "viewers"]) this.hub.addEventListener(type, this.emit);
    for (const [sessionId, { limit }] of this.watches) this.hub.watch(sessionId, limit);
    this.applySession();
    this.emit();
  }

  /** @param {number} delay */
  release(delay) {
    if ((this.users -= 1) > 0) return;
    this.timer = setTimeout(() => this.users === 0 && this.stop(), delay);
  }

  stop() {
    const hub = this.hub;
    if (!hub) return;
    for (const type of ["change", "status", "viewers"]) hub.removeEventListener(type, this.emit);
    this.hub = null;
    hub.close();
    this.emit();
  }

  /** @param {Record<string, any> | undefined} profile */
  setProfile(profile) {
    this.profile = profile ?? null;
    if (this.hub && profile && JSON.stringify(profile) !== JSON.stringify(this.hub.profile)) {
      this.hub.setProfile(profile);
    }
  }

  /** A useSession caller mounted: it wins until it unmounts. @param {string} sessionId */
  view(sessionId) {
    const claim = { sessionId };
    this.claims.push(claim);
    this.scheduleSession();
    return () => {
      this.claims.splice(this.claims.indexOf(claim), 1);
      this.scheduleSession();
    };
  }

  /** After the effects of one commit, say the winning session once (none: ""). */
  scheduleSession() {
    if (this.queued) return;
    this.queued = true;
    queueMicrotask(() => {
      this.queued = false;
      this.applySession();
    });
  }

  applySession() {
    const sessionId = this.claims.at(-1)?.sessionId ?? "";
    if (this.hub && this.hub.session !== sessionId) this.hub.setSession(sessionId);
  }

  /** @param {string} sessionId @param {number} limit */
  watch(sessionId, limit) {
    let watch = this.watches.get(sessionId);
    if (watch) watch.count += 1;
    else {
      watch = { count: 1, limit };
      this.watches.set(sessionId, watch);
      this.hub?.watch(sessionId, limit);
    }
    return () => {
      if ((watch.count -= 1) > 0) return;
      this.watches.delete(sessionId);
      this.hub?.unwatch(sessionId);
    };
  }

  /** @param {string | null | undefined} sessionId @returns {Values} */
  read(sessionId) {
    const p = this.hub?.presence ?? EMPTY_PRESENCE;
    const all = sessionId === undefined || sessionId === null;
    return {
      clients: all ? p.online : (p.counts[sessionId] ?? 0),
      users: all ? p.onlineUsers : (p.users[sessionId] ?? 0),
      online: p.online,
      onlineUsers: p.onlineUsers,
      seq: p.seq,
      status: this.hub?.status ?? "connecting",
    };
  }
}

const Context = createContext(/** @type {PresenceStore | null} */ (null));

function useStore() {
  const store = useContext(Context);
  if (!store) throw new Error("presence hooks need a <PresenceProvider> above them");
  return store;
}

/**
 * One connection to a hub's workspace for everything below it.
 * @param {{ url: string, workspaceId: string, token?: string, getToken?: () => string | Promise<string>,
 *           userId?: string, profile?: Record<string, any>, clientId?: string,
 *           WebSocket?: typeof WebSocket, closeDelay?: number, children?: any }} props
 */
export function PresenceProvider(props) {
  const { url, workspaceId, token, getToken, userId, profile, clientId, WebSocket } = props;
  const closeDelay = props.closeDelay ?? 1000;
  const [store] = useState(() => new PresenceStore());
  const key = [url, workspaceId, token, userId, clientId, !getToken].join("\n");
  useEffect(() => {
    store.getToken = getToken;
  });
  // Before the connection's effect, so that a new connection says the profile on connect.
  const profileJson = profile ? JSON.stringify(profile) : "";
  useEffect(() => store.setProfile(profile), [store, profileJson]);
  useEffect(() => {
    store.retain({ url, workspaceId, token, getToken, userId, clientId, WebSocket }, key);
    return () => store.release(closeDelay);
  }, [store, key]);
  return createElement(Context.Provider, { value: store }, props.children);
}

/** The provider's connection (null before its effect ran, and on the server). */
export function useHubConnection() {
  const store = useStore();
  return useSyncExternalStore(store.subscribe, () => store.hub, () => null);
}

/**
 * This tab views `sessionId` while the calling component is mounted; the most recently
 * mounted caller wins, and when the last one unmounts the tab views "". A null or undefined
 * id claims nothing.
 * @param {string | null | undefined} sessionId
 */
export function useSession(sessionId) {
  const store = useStore();
  useEffect(() => {
    if (sessionId !== null && sessionId !== undefined) return store.view(sessionId);
  }, [store, sessionId]);
}

const SERVER_PRESENCE = Object.freeze({
  clients: 0, users: 0, online: 0, onlineUsers: 0, seq: -1, status: "connecting",
});

/**
 * `{clients, users, online, onlineUsers, seq, status}` for a session (the workspace's when
 * omitted: clients = online). The component re-renders only when a field it read changed.
 * @param {string | null} [sessionId]
 * @returns {Values}
 */
export function usePresence(sessionId) {
  const store = useStore();
  const cache = useRef(/** @type {any} */ (null));
  const getSnapshot = () => {
    const values = store.read(sessionId);
    /** @type {{ sessionId: any, values: Values, used: Set<keyof Values>, view: Values } | null} */
    const last = cache.current;
    if (last && last.sessionId === sessionId && [...last.used].every((k) => last.values[k] === values[k])) {
      last.values = values; // fields the component never read may move without a render
      return last.view;
    }
    const next = { sessionId, values, used: new Set(last?.used), view: /** @type {Values} */ ({}) };
    for (const field of /** @type {(keyof Values)[]} */ (FIELDS)) {
      Object.defineProperty(next.view, field, {
        enumerable: true,
        get() {
          next.used.add(field);
          return next.values[field];
        },
      });
    }
    cache.current = next;
    return next.view;
  };
  return useSyncExternalStore(store.subscribe, getSnapshot, () => SERVER_PRESENCE);
}

/**
 * Who views a session: `{total, anonymous, viewers}`, watched while the component is mounted
 * (counted per session: the last unmount unwatches). `limit` (1..1000, default 100) is the
 * first caller's.
 * @param {string | null | undefined} sessionId
 * @param {{ limit?: number }} [options]
 */
export function useViewers(sessionId, options) {
  const store = useStore();
  const limit = options?.limit ?? 100;
  const on = sessionId !== null && sessionId !== undefined;
  useEffect(() => (on ? store.watch(sessionId, limit) : undefined), [store, sessionId, limit]);
  const get = () => (on && store.hub?.viewers(sessionId)) || EMPTY_LIST;
  return useSyncExternalStore(store.subscribe, get, () => EMPTY_LIST);
}

const BADGE = {
  display: "inline-block",
  font: "12px/1.6 system-ui, sans-serif",
  padding: "0 0.6em",
  borderRadius: "var(--presence-badge-radius, 1em)",
  background: "var(--presence-badge-background, #1f6feb)",
  color: "var(--presence-badge-color, #fff)",
};

/**
 * "N viewing" for a session, nothing at 0: clients, or people with count="users".
 * @param {{ session: string, count?: "clients" | "users", className?: string, style?: object }} props
 */
export function PresenceBadge({ session, count, className, style }) {
  const presence = usePresence(session);
  const n = count === "users" ? presence.users : presence.clients;
  if (!n) return null;
  const classes = className ? `presence-badge ${className}` : "presence-badge";
  return createElement("span", { className: classes, style: { ...BADGE, ...style } }, `${n} viewing`);
}

const PILE = { display: "inline-flex", alignItems: "center" };
const FACE = {
  boxSizing: "border-box",
  width: "var(--presence-facepile-size, 24px)",
  height: "var(--presence-facepile-size, 24px)",
  borderRadius: "50%",
  overflow: "hidden",
  display: "inline-flex",
  alignItems: "center",
  justifyContent: "center",
  border: "var(--presence-facepile-border, 2px solid #fff)",
  background: "var(--presence-facepile-background, #8250df)",
  color: "var(--presence-facepile-color, #fff)",
  font: "var(--presence-facepile-font, 600 10px/1 system-ui, sans-serif)",
};
const OVERLAP = "calc(-1 * var(--presence-facepile-overlap, 6px))";
const IMG = { width: "100%", height: "100%", objectFit: "cover" };

/**
 * The faces of who views a session (avatar, else initials on the profile's colour), earliest
 * arrival first, then "+k" for everyone else; nothing when nobody is there. Text only: a
 * profile never becomes HTML.
 * @param {{ session: string, max?: number, className?: string, style?: object }} props
 */
export function Facepile({ session, max, className, style }) {
  const list = useViewers(session);
  if (list.total === 0) return null;
  const { faces, more } = facepile(list, max ?? 3);
  /**
   * @param {string} key @param {number} i @param {string | undefined} title
   * @param {string | null} background @param {any} content @param {string} [extra]
   */
  const span = (key, i, title, background, content, extra) =>
    createElement(
      "span",
      {
        key,
        className: `presence-face${extra ?? ""}`,
        "data-user": extra ? undefined : key,
        title,
        style: { ...FACE, marginLeft: i ? OVERLAP : 0, ...(background && { background }) },
      },
      content,
    );
  const children = faces.map((viewer, i) => {
    const f = face(viewer);
    const content = f.avatar ? createElement("img", { src: f.avatar, alt: f.name, style: IMG }) : f.initials;
    return span(viewer.user_id, i, f.name, f.color, content);
  });
  if (more > 0) {
    const background = "var(--presence-facepile-more-background, #57606a)";
    children.push(span("+", faces.length, undefined, background, `+${more}`, " presence-more"));
  }
  const classes = className ? `presence-facepile ${className}` : "presence-facepile";
  return createElement("span", { className: classes, style: { ...PILE, ...style } }, children);
}
