// Types of @presence-hub/client/elements: the custom elements, defined on import.
import type { HubConnection } from "./client.js";

/** <presence-badge session="S" [count="users"]> */
export class PresenceBadge extends HTMLElement {
  static connection: HubConnection | null;
  hub: HubConnection | null;
}

/** <presence-facepile session="S" [max="3"]> */
export class PresenceFacepile extends HTMLElement {
  hub: HubConnection | null;
}
