// @presence-hub/react rendered on a server: no window, WebSocket, document or storage may be
// touched (each throws here while rendering), and every component renders its empty state.
import assert from "node:assert/strict";
import { test } from "node:test";

import { createElement as h } from "react";
import { renderToString } from "react-dom/server";

import {
  Facepile, PresenceBadge, PresenceProvider, useHubConnection, usePresence, useSession, useViewers,
} from "@presence-hub/react";

const FORBIDDEN = ["window", "document", "WebSocket", "sessionStorage", "localStorage", "EventSource"];

function Status() {
  const { clients, users, online, onlineUsers, seq, status } = usePresence("S1");
  const all = usePresence();
  const list = useViewers("S1", { limit: 5 });
  useSession("S1");
  const hub = useHubConnection();
  return h("p", null, `${status} ${clients}/${users}/${online}/${onlineUsers}/${seq} ${all.clients} ${list.total} ${hub}`);
}

test("renderToString touches no browser global and renders the empty state", () => {
  const touched = [];
  for (const name of FORBIDDEN) {
    Object.defineProperty(globalThis, name, {
      configurable: true,
      get() {
        touched.push(name);
        throw new Error(`${name} touched while rendering on a server`);
      },
    });
  }
  let html;
  try {
    html = renderToString(
      h(PresenceProvider, { url: "http://hub.test", workspaceId: "w", userId: "ana", profile: { name: "Ana" } },
        h(Status),
        h(PresenceBadge, { session: "S1" }),
        h(PresenceBadge, { session: "S1", count: "users" }),
        h(Facepile, { session: "S1", max: 2 })),
    );
  } finally {
    for (const name of FORBIDDEN) delete globalThis[name];
  }
  assert.deepEqual(touched, []);
  assert.equal(html, "<p>connecting 0/0/0/0/-1 0 0 null</p>");
});

test("a hook outside a provider says so", () => {
  assert.throws(() => renderToString(h(PresenceBadge, { session: "S1" })), /PresenceProvider/);
});
