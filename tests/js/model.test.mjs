// The reconnect model (docs/clients.md) held against hub.js: the scenarios of
// tests/vectors/client_model.json, the same ones the Python client runs, played by a scripted
// fake WebSocket (one list of steps per connection attempt). A browser cannot see the HTTP
// status of a refused handshake: it gets close 1006, which is what the fake gives.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { FINAL_CLOSE_CODES, HubConnection, backoffDelay } from "../../hub/static/hub.js";

const VECTORS = JSON.parse(
  readFileSync(new URL("../vectors/client_model.json", import.meta.url), "utf8"),
);
const OPTIONS = VECTORS.options;
const STEP_TIMEOUT_MS = 3000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

test("the final close codes are the model's", () => {
  assert.deepEqual([...FINAL_CLOSE_CODES].sort(), [...VECTORS.final_codes].sort());
  for (const code of VECTORS.retry_codes) assert.ok(!FINAL_CLOSE_CODES.has(code));
});

test("backoff is full jitter with the model's bounds", () => {
  const { base, max, cases } = VECTORS.backoff;
  for (const c of cases) {
    const got = backoffDelay(c.attempt, base * 1000, max * 1000, () => c.random);
    assert.ok(Math.abs(got - c.delay * 1000) < 1e-6, `attempt ${c.attempt}: ${got}`);
    assert.ok(Math.abs(backoffDelay(c.attempt, undefined, undefined, () => c.random) - got) < 1e-6);
  }
});

/** The vectors' token provider: token n is an unsigned JWT-shaped token carrying n. */
function tokens(ttlSeconds) {
  let made = 0;
  const b64 = (data) => Buffer.from(JSON.stringify(data)).toString("base64url");
  return () => {
    made += 1;
    return `${b64({ alg: "none" })}.${b64({ n: made, exp: Date.now() / 1000 + ttlSeconds })}.`;
  };
}

function tokenNumber(token) {
  try {
    return JSON.parse(Buffer.from(String(token).split(".")[1], "base64url").toString()).n;
  } catch {
    return null;
  }
}

function outcome(settled) {
  if (!settled) return "still pending";
  if (settled.ok) return `ack:${settled.value}`;
  const e = settled.error;
  if (e.code === "closed") return `closed:${e.closeCode}`;
  if (e.code === "connection_lost" || e.code === "timeout") return e.code;
  return `error:${e.code}`;
}

/** Plays one scenario; hub is set once the connection exists. */
class Script {
  constructor(scenario) {
    this.attempts = scenario.attempts;
    this.made = 0;
    this.hub = null;
    this.calls = new Map();
    this.failures = [];
    this.running = [];
  }

  steps(attempt) {
    return attempt < this.attempts.length ? this.attempts[attempt] : [{ handshake: 503 }];
  }

  call(step) {
    const entry = { settled: null };
    entry.promise = this.hub.setSession(step.session_id).then(
      (value) => (entry.settled = { ok: true, value }),
      (error) => (entry.settled = { ok: false, error }),
    );
    this.calls.set(step.call, entry);
  }

  socketClass() {
    const script = this;
    return class ScriptedSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.inbox = [];
        this.attempt = script.made++;
        script.running.push(script.play(this).catch((e) => script.failures.push(String(e))));
      }
      send(data) {
        if (this.readyState === 1) this.inbox.push(JSON.parse(data));
      }
      close() {}
    };
  }

  async play(socket) {
    await sleep(0); // the constructor returns first, as a real WebSocket's does
    const steps = [...this.steps(socket.attempt)];
    const end = (code, reason = "") => {
      socket.readyState = 3;
      socket.onclose({ code, reason });
    };
    while (steps.length && "call" in steps[0]) this.call(steps.shift());
    if (steps.length && "token" in steps[0]) {
      const want = steps.shift().token;
      const got = tokenNumber(new URL(socket.url).searchParams.get("token"));
      if (got !== want) this.failures.push(`attempt ${socket.attempt}: token ${got}, want ${want}`);
    }
    if (steps.length && "handshake" in steps[0]) return end(1006);
    socket.readyState = 1;
    let lastRef;
    for (const step of steps) {
      if ("snapshot" in step) {
        const frame = { type: "snapshot", workspace_id: "w", client_id: "c", ...step.snapshot };
        socket.onmessage({ data: JSON.stringify(frame) });
      } else if ("call" in step) {
        this.call(step);
      } else if ("recv" in step) {
        const deadline = Date.now() + STEP_TIMEOUT_MS;
        while (!socket.inbox.length && Date.now() < deadline) await sleep(2);
        const frame = socket.inbox.shift();
        const want = step.recv;
        const same = "token" in want
          ? tokenNumber(frame?.token) === want.token
          : frame?.session_id === want.session_id;
        if (!frame || frame.type !== want.type || !same) {
          this.failures.push(`attempt ${socket.attempt}: got ${JSON.stringify(frame)}`);
        } else if ("ref" in frame !== want.ref) {
          this.failures.push(`attempt ${socket.attempt}: ref in ${JSON.stringify(frame)}`);
        }
        lastRef = frame?.ref;
      } else if ("ack" in step) {
        socket.onmessage({ data: JSON.stringify({ type: "ack", ref: lastRef, seq: step.ack }) });
      } else if ("error" in step) {
        const frame = { type: "error", code: step.error, message: "refused", ref: lastRef };
        socket.onmessage({ data: JSON.stringify(frame) });
      } else if ("result" in step) {
        const entry = this.calls.get(step.result);
        await Promise.race([entry.promise, sleep(STEP_TIMEOUT_MS)]);
        const got = outcome(entry.settled);
        if (got !== step.is) this.failures.push(`call ${step.result}: ${got}, want ${step.is}`);
      } else if ("close" in step) {
        end(step.close, step.reason);
      } else if ("drop" in step) {
        end(1006);
      }
    }
  }
}

for (const scenario of VECTORS.scenarios) {
  test(`hub.js follows the model: ${scenario.name}`, async () => {
    const script = new Script(scenario);
    const closes = [];
    const hub = new HubConnection("http://h:1", {
      workspaceId: "w",
      clientId: "c",
      WebSocket: script.socketClass(),
      getToken: tokens(scenario.token_ttl ?? 3600),
      backoffBase: OPTIONS.backoff_base * 1000,
      backoffMax: OPTIONS.backoff_max * 1000,
      ackTimeout: OPTIONS.ack_timeout * 1000,
    });
    script.hub = hub;
    hub.addEventListener("closed", (e) => closes.push(e.detail.code));
    const want = scenario.expect;
    const deadline = Date.now() + 5000;
    while (script.made < want.attempts && Date.now() < deadline) await sleep(5);
    await Promise.all(script.running);
    await sleep(300); // room for an attempt that should not come
    await Promise.all(script.running);
    assert.deepEqual(script.failures, []);
    assert.equal(script.made, want.attempts);
    assert.equal(hub.attempts, want.attempts);
    assert.equal(hub.closeCode, want.final);
    assert.deepEqual(closes, want.final === null ? [] : [want.final]);
    if (want.final !== null) {
      await assert.rejects(hub.setSession("S9"), (e) => e.code === "closed");
    }
    hub.close();
  });
}
