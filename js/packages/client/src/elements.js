// presence hub: the custom elements <presence-badge> and <presence-facepile>, defined on import
// (where customElements exists). They follow the first connection that connect() made, or the
// one set as `PresenceBadge.connection` or on an element's `hub`.
import { HubConnection, face, facepile } from "./client.js";

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
