// Unit tests of hub/static/hub.js (node --test): the pure functions, and a connection driven
// by a fake WebSocket.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  HubConnection,
  applyFrame,
  backoffDelay,
  emptyPresence,
  isFinal,
} from "../../hub/static/hub.js";

test("frames apply by seq and converge", () => {
  let s = applyFrame(emptyPresence(), { type: "snapshot", seq: 5, online: 2, counts: { A: 2 } });
  assert.deepEqual(s, { seq: 5, online: 2, counts: { A: 2 } });
  s = applyFrame(s, { type: "counts", seq: 6, counts: { A: 1, B: 1 } });
  assert.deepEqual(s, { seq: 6, online: 2, counts: { A: 1, B: 1 } });
  const same = applyFrame(s, { type: "counts", seq: 6, counts: { A: 9 } });
  assert.equal(same, s, "a frame at or below the current seq changes nothing");
  s = applyFrame(s, { type: "counts", seq: 8, counts: { A: 0 }, online: 1 });
  assert.deepEqual(s, { seq: 8, online: 1, counts: { B: 1 } });
  assert.equal(applyFrame(s, { type: "pong" }), s);
});

test("full-jitter backoff stays under its cap", () => {
  assert.equal(backoffDelay(1, 250, 15000, () => 0.999) < 500, true);
  assert.equal(backoffDelay(10, 250, 15000, () => 0.999) < 15000, true);
  assert.equal(backoffDelay(3, 250, 15000, () => 0), 0);
});

test("final close codes", () => {
  for (const code of [1000, 1008, 1009, 4400, 4401, 4403, 4404, 4410]) assert.ok(isFinal(code));
  for (const code of [1001, 1006, 1011, 1012, 1013, 4408, 4409, 4429]) assert.ok(!isFinal(code));
});

class FakeSocket {
  static made = [];
  constructor(url) {
    this.url = url;
    this.sent = [];
    this.readyState = 1;
    FakeSocket.made.push(this);
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close() {}
  frame(frame) {
    this.onmessage({ data: JSON.stringify(frame) });
  }
}

test("a connection reconnects, says its session again, and stops on a final code", async () => {
  FakeSocket.made = [];
  const changes = [];
  const hub = new HubConnection("http://h:1", {
    workspaceId: "w1",
    clientId: "c1",
    token: "t",
    WebSocket: FakeSocket,
  });
  hub.addEventListener("change", (e) => changes.push(e.detail));
  const first = FakeSocket.made[0];
  assert.equal(first.url, "ws://h:1/v1/workspaces/w1/ws?client_id=c1&token=t");
  first.frame({ type: "snapshot", seq: 1, online: 1, counts: {} });
  hub.setSession("S1");
  assert.deepEqual(first.sent, [{ type: "set_session", session_id: "S1" }]);
  first.frame({ type: "counts", seq: 2, counts: { S1: 1 } });
  assert.deepEqual(hub.counts, { S1: 1 });
  first.onclose({ code: 1012 }); // server restart: reconnect
  await new Promise((r) => setTimeout(r, 700));
  const second = FakeSocket.made[1];
  assert.ok(second, "reconnected");
  second.frame({ type: "snapshot", seq: 1, online: 1, counts: {} });
  assert.deepEqual(second.sent, [{ type: "set_session", session_id: "S1" }]);
  const closed = new Promise((r) => hub.addEventListener("closed", (e) => r(e.detail.code)));
  second.onclose({ code: 4404 });
  assert.equal(await closed, 4404);
  await new Promise((r) => setTimeout(r, 700));
  assert.equal(FakeSocket.made.length, 2, "no reconnect after a final code");
  assert.ok(changes.length >= 3);
});
