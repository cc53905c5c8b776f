// Unit tests of hub/static/hub.js (node --test): the pure functions. The connection's
// reconnect model is tested by model.test.mjs, on the vectors the Python client runs too.
import assert from "node:assert/strict";
import { test } from "node:test";

import { applyFrame, emptyPresence } from "../../hub/static/hub.js";

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
