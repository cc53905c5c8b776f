// @presence-hub/client: what the package adds to the served client (status, token provider,
// close) and its fake hub. The reconnect model and the pure functions are tested on the
// served build, hub/static/hub.js, by tests/js (the same source, joined by build_static.py).
import assert from "node:assert/strict";
import { test } from "node:test";

import { HubConnection, connect, face } from "@presence-hub/client";
import { FakeHub } from "@presence-hub/client/testing";

test("status goes connecting, open, reconnecting, open, closed; close() ends at once", async () => {
  const fake = new FakeHub();
  const hub = new HubConnection("http://hub.test", {
    workspaceId: "w", clientId: "c", WebSocket: fake.WebSocket, backoffBase: 1, backoffMax: 2,
  });
  const seen = [hub.status];
  hub.addEventListener("status", (e) => seen.push(e.detail.status));
  await fake.flush();
  fake.drop();
  await fake.flush();
  while (hub.status !== "open") await new Promise((r) => setTimeout(r, 2));
  await fake.flush();
  const pending = hub.setSession("S1");
  hub.close();
  await assert.rejects(pending, (e) => e.code === "closed" || typeof e.code === "string");
  assert.deepEqual(seen, ["connecting", "open", "reconnecting", "open", "closed"]);
  assert.equal(fake.opened, 2);
  await fake.flush();
  assert.equal(fake.sockets.size, 0);
});

test("a token provider is asked before every attempt", async () => {
  const fake = new FakeHub();
  let n = 0;
  const hub = new HubConnection("http://hub.test", {
    workspaceId: "w", clientId: "c", WebSocket: fake.WebSocket, backoffBase: 1, backoffMax: 2,
    getToken: async () => `t${++n}`,
  });
  while (fake.opened < 1) await new Promise((r) => setTimeout(r, 1));
  await fake.flush();
  fake.drop();
  while (fake.opened < 2) await new Promise((r) => setTimeout(r, 1));
  await fake.flush();
  assert.deepEqual([...fake.sockets].map((s) => s.query.token), ["t2"]);
  hub.close();
});

test("the fake hub answers like a hub and pushes what a test sets", async () => {
  const fake = new FakeHub();
  const hub = connect("http://hub.test", { workspaceId: "w", clientId: "c", WebSocket: fake.WebSocket });
  assert.equal(HubConnection.first, hub);
  const seq = hub.setSession("S1");
  await fake.flush();
  assert.equal(await seq, 1);
  assert.deepEqual(fake.sentOf("set_session"), [{ type: "set_session", session_id: "S1", ref: 1 }]);
  fake.set({ counts: { S1: 2 }, users: { S1: 1 }, online: 2, onlineUsers: 1 });
  await fake.flush();
  assert.deepEqual(hub.presence, { seq: 2, online: 2, counts: { S1: 2 }, users: { S1: 1 }, onlineUsers: 1 });
  const ana = { user_id: "ana", profile: { name: "Ana Lima", color: "#8250df" }, clients: 1 };
  fake.viewers("S1", [ana], { anonymous: 1 });
  const list = hub.watch("S1");
  await fake.flush();
  assert.deepEqual(await list, { total: 2, anonymous: 1, viewers: [ana] });
  fake.viewers("S1", [], { anonymous: 1 });
  await fake.flush();
  assert.deepEqual(hub.viewers("S1"), { total: 1, anonymous: 1, viewers: [] });
  fake.set({ counts: { S1: 0 } });
  await fake.flush();
  assert.deepEqual(hub.counts, {});
  hub.close();
});

test("a face is drawn from text only", () => {
  const evil = { user_id: "x<b>", profile: { name: "<img src=x>", avatar: "javascript:alert(1)", color: "red;background:url(x)" }, clients: 1 };
  assert.deepEqual(face(evil), { name: "<img src=x>", avatar: null, initials: "<S", color: null });
  const ana = { user_id: "ana", profile: { name: "Ana Lima", avatar: "https://e.test/a.png", color: "hsl(10, 50%, 40%)" }, clients: 1 };
  assert.deepEqual(face(ana), { name: "Ana Lima", avatar: "https://e.test/a.png", initials: "AL", color: "hsl(10, 50%, 40%)" });
});
