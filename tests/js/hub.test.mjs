// Unit tests of hub/static/hub.js (node --test): the pure functions. The connection's
// reconnect model is tested by model.test.mjs, on the vectors the Python client runs too.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  applyFrame,
  applyViewers,
  emptyPresence,
  facepile,
  initials,
} from "../../hub/static/hub.js";

test("frames apply by seq and converge", () => {
  let s = applyFrame(emptyPresence(), {
    type: "snapshot", seq: 5, online: 2, counts: { A: 2 }, users: { A: 1 }, online_users: 1,
  });
  assert.deepEqual(s, { seq: 5, online: 2, counts: { A: 2 }, users: { A: 1 }, onlineUsers: 1 });
  s = applyFrame(s, { type: "counts", seq: 6, counts: { A: 1, B: 1 }, users: { B: 1 } });
  assert.deepEqual(s, {
    seq: 6, online: 2, counts: { A: 1, B: 1 }, users: { A: 1, B: 1 }, onlineUsers: 1,
  });
  const same = applyFrame(s, { type: "counts", seq: 6, counts: { A: 9 } });
  assert.equal(same, s, "a frame at or below the current seq changes nothing");
  s = applyFrame(s, {
    type: "counts", seq: 8, counts: { A: 0 }, online: 1, users: { A: 0 }, online_users: 2,
  });
  assert.deepEqual(s, { seq: 8, online: 1, counts: { B: 1 }, users: { B: 1 }, onlineUsers: 2 });
  assert.equal(applyFrame(s, { type: "pong" }), s);
  // A v1 hub (no users fields) still works: people stay as they were.
  const v1 = applyFrame(emptyPresence(), { type: "snapshot", seq: 1, online: 1, counts: {} });
  assert.deepEqual(v1.users, {});
});

const ana = { user_id: "ana", profile: { name: "Ana Lima" }, clients: 1 };
const bo = { user_id: "bo", profile: null, clients: 1 };
const cy = { user_id: "cy", profile: { name: "Cy" }, clients: 1 };

test("viewers diffs apply: left go, updated change in place, joined go last", () => {
  let list = applyViewers(undefined, {
    type: "viewers", session_id: "S", total: 3, anonymous: 1, viewers: [ana, bo],
  });
  assert.deepEqual(list, { total: 3, anonymous: 1, viewers: [ana, bo] });
  const ana2 = { ...ana, clients: 2 };
  list = applyViewers(list, {
    type: "viewers_diff", session_id: "S", seq: 9, total: 3, anonymous: 1,
    joined: [cy], updated: [ana2], left: ["bo"],
  });
  assert.deepEqual(list, { total: 3, anonymous: 1, viewers: [ana2, cy] });
});

test("a facepile shows the first faces and +k for everyone else", () => {
  const list = { total: 5, anonymous: 2, viewers: [ana, bo, cy] };
  assert.deepEqual(facepile(list, 2), { faces: [ana, bo], more: 3 });
  assert.deepEqual(facepile(list, 3), { faces: [ana, bo, cy], more: 2 });
  assert.deepEqual(facepile({ total: 0, anonymous: 0, viewers: [] }, 3), { faces: [], more: 0 });
  assert.equal(initials(ana), "AL");
  assert.equal(initials(bo), "B");
  assert.equal(initials({ user_id: "x", profile: { name: "  émile zola " }, clients: 1 }), "ÉZ");
});
