// @presence-hub/react in a DOM (happy-dom) against the fake hub: one socket under StrictMode,
// counted watches, the most recent useSession winning, and re-renders only where a value moved.
import { window } from "./dom.mjs";

import assert from "node:assert/strict";
import { test } from "node:test";

import { Profiler, StrictMode, act, createElement as h, useState } from "react";
import { createRoot, hydrateRoot } from "react-dom/client";
import { renderToString } from "react-dom/server";

import { FakeHub } from "@presence-hub/client/testing";
import {
  Facepile, PresenceBadge, PresenceProvider, usePresence, useSession, useViewers,
} from "@presence-hub/react";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Renders `tree` under StrictMode in a fresh root; returns the root and its container. */
async function mount(tree) {
  const container = window.document.createElement("div");
  window.document.body.append(container);
  const root = createRoot(container);
  await act(async () => root.render(h(StrictMode, null, tree)));
  return { root, container };
}

async function settle(fake) {
  await act(async () => {
    await fake.flush();
    await sleep(1);
    await fake.flush();
  });
}

function provider(fake, children, props = {}) {
  return h(PresenceProvider, {
    url: "http://hub.test", workspaceId: "w", WebSocket: fake.WebSocket, closeDelay: 30, ...props,
  }, children);
}

test("StrictMode's double mount opens one socket; unmounting closes it after the delay", async () => {
  const fake = new FakeHub();
  const { root, container } = await mount(provider(fake, [
    h(PresenceBadge, { key: 1, session: "S1" }),
    h(Facepile, { key: 2, session: "S1" }),
  ]));
  await settle(fake);
  assert.equal(fake.opened, 1, "one socket for the tab");
  assert.equal(fake.sockets.size, 1);
  assert.equal(fake.sentOf("watch").length, 1);
  assert.match([...fake.sockets][0].query.client_id, /^[0-9a-f-]{36}$/, "a client id per tab");
  fake.set({ counts: { S1: 2 } });
  fake.viewers("S1", [
    { user_id: "ana", profile: { name: "Ana Lima", color: "#8250df" }, clients: 1 },
    { user_id: "bo", profile: { name: "<b>Bo</b>", avatar: "javascript:alert(1)" }, clients: 1 },
  ], { anonymous: 2 });
  await settle(fake);
  assert.equal(container.querySelector(".presence-badge").textContent, "2 viewing");
  const faces = [...container.querySelectorAll(".presence-face")].map((f) => f.textContent);
  assert.deepEqual(faces, ["AL", "<", "+2"], "text only: no markup, no javascript: avatar");
  assert.equal(container.querySelector('[data-user="bo"]').title, "<b>Bo</b>");
  assert.equal(container.querySelector("b, img"), null);
  await act(async () => root.unmount());
  assert.equal(fake.sockets.size, 1, "still open within the delay");
  await sleep(60);
  await fake.flush();
  assert.equal(fake.sockets.size, 0, "closed after the last release");
});

test("a provider replaced by another closes its socket after the delay", async () => {
  const fake = new FakeHub();
  function Toggle() {
    const [key, setKey] = useState(0);
    globalThis.remount = () => setKey((k) => k + 1);
    return h("div", { key }, provider(fake, h(PresenceBadge, { session: "S1" })));
  }
  const { root } = await mount(h(Toggle));
  await settle(fake);
  // A provider of its own per key: the new one opens, the old one closes after its delay.
  await act(async () => globalThis.remount());
  await settle(fake);
  await sleep(60);
  await settle(fake);
  assert.equal(fake.opened, 2);
  assert.equal(fake.sockets.size, 1);
  await act(async () => root.unmount());
  await sleep(60);
  await fake.flush();
  assert.equal(fake.sockets.size, 0);
});

test("watches are counted per session: the last unmount unwatches", async () => {
  const fake = new FakeHub();
  function Piles({ n }) {
    return Array.from({ length: n }, (_, i) => h(Facepile, { key: i, session: "S1" }));
  }
  let setN;
  function App() {
    const [n, set] = useState(3);
    setN = set;
    return provider(fake, h(Piles, { n }));
  }
  const { root } = await mount(h(App));
  await settle(fake);
  assert.equal(fake.sentOf("watch").length, 1);
  await act(async () => setN(1));
  await settle(fake);
  assert.equal(fake.sentOf("unwatch").length, 0);
  await act(async () => setN(0));
  await settle(fake);
  assert.deepEqual(fake.sentOf("unwatch").map((f) => f.session_id), ["S1"]);
  await act(async () => root.unmount());
});

test("useSession: the most recently mounted caller wins; the last unmount says none", async () => {
  const fake = new FakeHub();
  function View({ id }) {
    useSession(id);
    return null;
  }
  let setViews;
  function App() {
    const [views, set] = useState(["S1"]);
    setViews = set;
    return provider(fake, views.map((id) => h(View, { key: id, id })));
  }
  const { root } = await mount(h(App));
  await settle(fake);
  await act(async () => setViews(["S1", "S2"]));
  await settle(fake);
  await act(async () => setViews(["S1"]));
  await settle(fake);
  await act(async () => setViews([]));
  await settle(fake);
  assert.deepEqual(fake.sentOf("set_session").map((f) => f.session_id), ["S1", "S2", "S1", ""]);
  await act(async () => root.unmount());
});

test("a counts frame re-renders only the badges whose value changed (100 sessions)", async () => {
  const fake = new FakeHub();
  const ids = Array.from({ length: 100 }, (_, i) => `S${i}`);
  const renders = new Map(ids.map((id) => [id, 0]));
  const count = (id) => renders.set(id, renders.get(id) + 1);
  let statusRenders = 0;
  function Online() {
    statusRenders += 1;
    return h("p", null, usePresence().status);
  }
  const list = ids.map((id) => h(Profiler, { key: id, id, onRender: () => count(id) },
    h(PresenceBadge, { session: id })));
  const { root, container } = await mount(provider(fake, [h(Online, { key: "o" }), ...list]));
  await settle(fake);
  fake.set({ counts: Object.fromEntries(ids.map((id, i) => [id, 1 + (i % 3)])) });
  await settle(fake);
  assert.equal(container.querySelectorAll(".presence-badge").length, 100);
  const before = new Map(renders);
  const statusBefore = statusRenders;
  const frames = [
    { counts: { S3: 7 } },
    { counts: { S10: 5, S50: 9 }, online: 4 },
    { counts: { S0: 1 } }, // the same value: no render at all
    { counts: { S99: 0, S98: 5, S7: 3 } },
  ];
  const perFrame = [];
  for (const frame of frames) {
    const start = new Map(renders);
    fake.set(frame);
    await settle(fake);
    perFrame.push(ids.filter((id) => renders.get(id) !== start.get(id)).length);
  }
  // StrictMode renders twice in development; what matters is which badges rendered.
  assert.deepEqual(perFrame, [1, 2, 0, 3]);
  const changed = ids.filter((id) => renders.get(id) !== before.get(id));
  assert.deepEqual(changed.sort(), ["S10", "S3", "S50", "S7", "S98", "S99"].sort());
  assert.equal(statusRenders, statusBefore, "a component that reads status only did not render");
  console.log(`re-renders per counts frame in a list of 100 badges: ${JSON.stringify(perFrame)} ` +
    `for frames changing ${JSON.stringify(frames.map((f) => Object.keys(f.counts).length))} sessions`);
  await act(async () => root.unmount());
});

test("usePresence tracks what the component reads; status follows the socket", async () => {
  const fake = new FakeHub();
  const seen = [];
  function Probe() {
    const p = usePresence("S1");
    seen.push(`${p.status}:${p.clients}`);
    return null;
  }
  const { root } = await mount(provider(fake, h(Probe), { clientId: "c" }));
  await settle(fake);
  fake.set({ counts: { S1: 1 } });
  await settle(fake);
  fake.set({ counts: { S2: 4 }, online: 3 }); // nothing Probe reads
  await settle(fake);
  fake.drop();
  await settle(fake);
  const distinct = seen.filter((s, i) => s !== seen[i - 1]);
  assert.deepEqual(distinct.slice(0, 4), ["connecting:0", "open:0", "open:1", "reconnecting:1"]);
  await act(async () => root.unmount());
});

test("the profile is said on connect, and a changed one is sent", async () => {
  const fake = new FakeHub();
  let setName;
  function App() {
    const [name, set] = useState("Ana");
    setName = set;
    return provider(fake, null, { userId: "ana", profile: { name } });
  }
  const { root } = await mount(h(App));
  await settle(fake);
  assert.deepEqual(fake.sentOf("set_profile"), [{ type: "set_profile", profile: { name: "Ana" } }]);
  assert.equal([...fake.sockets][0].query.user_id, "ana");
  await act(async () => setName("Ana Lima"));
  await settle(fake);
  assert.deepEqual(fake.sentOf("set_profile").map((f) => f.profile.name), ["Ana", "Ana Lima"]);
  assert.equal(fake.opened, 1, "a profile change keeps the socket");
  await act(async () => root.unmount());
});

test("server HTML hydrates, then connects and goes live", async () => {
  const fake = new FakeHub();
  function Page() {
    const { status } = usePresence();
    useSession("S1");
    return h("main", null, h("p", null, status), h(PresenceBadge, { session: "S1" }));
  }
  const tree = h(StrictMode, null, provider(fake, h(Page)));
  const container = window.document.createElement("div");
  container.innerHTML = renderToString(tree);
  assert.equal(container.innerHTML, "<main><p>connecting</p></main>");
  assert.equal(fake.opened, 0, "rendering on the server opened nothing");
  window.document.body.append(container);
  const errors = [];
  let root;
  await act(async () => {
    root = hydrateRoot(container, tree, { onRecoverableError: (e) => errors.push(e) });
  });
  fake.set({ counts: { S1: 1 } });
  await settle(fake);
  assert.deepEqual(errors, [], "no hydration mismatch");
  assert.equal(fake.opened, 1);
  assert.equal(container.querySelector("p").textContent, "open");
  assert.equal(container.querySelector(".presence-badge").textContent, "1 viewing");
  assert.deepEqual(fake.sentOf("set_session").map((f) => f.session_id), ["S1"]);
  await act(async () => root.unmount());
});
