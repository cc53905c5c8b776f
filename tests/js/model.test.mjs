// The reconnect model (docs/clients.md) held against hub.js: the scenarios of
// tests/vectors/client_model.json, the same ones the Python client runs, played by a scripted
// fake WebSocket (one list of steps per connection attempt). A browser cannot see the HTTP
// status of a refused handshake: it gets close 1006, which is what the fake gives.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it, test } from "node:test";

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

  /** The connection under test (workspace "w", client "c"), on this script's sockets, with the
   * model's backoff and any other options. */
  connect(options) {
    this.hub = new HubConnection("http://h:1", {
      workspaceId: "w",
      clientId: "c",
      WebSocket: this.socketClass(),
      backoffBase: OPTIONS.backoff_base * 1000,
      backoffMax: OPTIONS.backoff_max * 1000,
      ...options,
    });
    return this.hub;
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

// The scenarios run side by side: each plays its own fake sockets against its own connection,
// and most of each one's time is the wait for an attempt that should not come.
describe("hub.js follows the model", { concurrency: true }, () => {
  for (const scenario of VECTORS.scenarios) {
    it(scenario.name, async () => {
      const script = new Script(scenario);
      const closes = [];
      const hub = script.connect({
        transport: "websocket", // the reconnect model; the fallback has scenarios of its own
        getToken: tokens(scenario.token_ttl ?? 3600),
        ackTimeout: OPTIONS.ack_timeout * 1000,
      });
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
});

// -- the fallback to the event stream (VECTORS.fallback) ------------------------------------

/** A scripted EventSource: opens, gives a snapshot, and answers nothing else. */
class FakeEventSource {
  static made = [];
  constructor(url) {
    this.url = url;
    this.listeners = {};
    this.closed = false;
    FakeEventSource.made.push(this);
    setTimeout(() => this.emit("snapshot", { type: "snapshot", seq: 1, online: 1, counts: {} }), 0);
  }
  addEventListener(type, fn) {
    (this.listeners[type] ??= []).push(fn);
  }
  emit(type, data) {
    if (!this.closed) for (const fn of this.listeners[type] ?? []) fn({ data: JSON.stringify(data) });
  }
  close() {
    this.closed = true;
  }
}

class MemoryStorage {
  constructor() {
    this.items = new Map();
  }
  getItem(key) {
    return this.items.get(key) ?? null;
  }
  setItem(key, value) {
    this.items.set(key, String(value));
  }
}

for (const scenario of VECTORS.fallback.scenarios) {
  test(`hub.js falls back as the model says: ${scenario.name}`, async () => {
    const script = new Script({ attempts: scenario.websocket });
    FakeEventSource.made = [];
    const storage = new MemoryStorage();
    if (scenario.remembered_for !== undefined) {
      storage.setItem("presence-hub.sse-until", Date.now() + scenario.remembered_for * 1000);
    }
    const transports = [];
    const hub = script.connect({ EventSource: FakeEventSource, storage });
    hub.addEventListener("transport", (e) => transports.push(e.detail.transport));
    const want = scenario.expect;
    const deadline = Date.now() + 3000;
    while (hub.status !== "open" && hub.status !== "closed" && Date.now() < deadline) await sleep(5);
    await Promise.all(script.running);
    await sleep(100);
    assert.deepEqual(script.failures, []);
    assert.equal(hub.transport, want.transport);
    assert.equal(script.made, want.websocket_attempts);
    assert.equal(FakeEventSource.made.length > 0, want.transport === "sse");
    const until = Number(storage.getItem("presence-hub.sse-until"));
    assert.equal(until > Date.now(), want.remembered);
    if (want.remembered && scenario.remembered_for === undefined) {
      const remembered = until - Date.now();
      assert.ok(Math.abs(remembered - VECTORS.fallback.remember_seconds * 1000) < 5000, remembered);
      assert.deepEqual(transports, ["sse"]);
    }
    if (want.transport === "sse") {
      assert.match(FakeEventSource.made.at(-1).url, /^http:\/\/h:1\/v1\/workspaces\/w\/events\?client_id=c/);
    }
    hub.close();
  });
}

test("over the event stream, setSession, setProfile and watch keep their promises (REST)", async () => {
  FakeEventSource.made = [];
  const requests = [];
  const fetch = async (url, init) => {
    requests.push({ url, method: init?.method, body: init?.body && JSON.parse(init.body) });
    if (url.endsWith("/profile") && init.body.length > 20) {
      return { ok: false, json: async () => ({ error: "invalid_profile", message: "too big" }) };
    }
    return { ok: true, json: async () => ({ seq: 7 }) };
  };
  const hub = new HubConnection("http://h:1", {
    workspaceId: "w", clientId: "c", transport: "sse", EventSource: FakeEventSource, fetch, storage: null,
  });
  assert.equal(hub.transport, "sse");
  assert.equal(await hub.setSession("S1"), 7);
  assert.deepEqual(requests.at(-1), {
    url: "http://h:1/v1/workspaces/w/current-session?client_id=c", method: "POST", body: { session_id: "S1" },
  });
  assert.equal(await hub.setProfile({ name: "Ada" }), 7);
  assert.equal(requests.at(-1).url, "http://h:1/v1/workspaces/w/clients/c/profile");
  await assert.rejects(hub.setProfile({ name: "x".repeat(30) }), (e) => e.code === "invalid_profile");
  // A watch opens a new stream that names the session; its viewers event answers the promise.
  const watching = hub.watch("S1");
  await sleep(5);
  const source = FakeEventSource.made.at(-1);
  assert.equal(FakeEventSource.made.length, 2);
  assert.match(source.url, /watch=S1/);
  await sleep(5);
  source.emit("viewers", { type: "viewers", session_id: "S1", seq: 2, total: 1, anonymous: 1, viewers: [] });
  assert.deepEqual(await watching, { total: 1, anonymous: 1, viewers: [] });
  // The stream's close event stops it as the socket's close code would.
  source.emit("close", { code: 4410, reason: "client retired" });
  assert.equal(hub.status, "closed");
  assert.equal(hub.closeCode, 4410);
});

test("the hour over, an event stream gives way to a WebSocket", async () => {
  FakeEventSource.made = [];
  const script = new Script({ attempts: [[{ snapshot: { seq: 2, online: 1, counts: {} } }]] });
  const storage = new MemoryStorage();
  storage.setItem("presence-hub.sse-until", Date.now() + 150);
  const transports = [];
  const hub = new HubConnection("http://h:1", {
    workspaceId: "w", clientId: "c", WebSocket: script.socketClass(), EventSource: FakeEventSource,
    storage, backoffBase: 5, backoffMax: 20,
  });
  script.hub = hub;
  hub.addEventListener("transport", (e) => transports.push(e.detail.transport));
  assert.equal(hub.transport, "sse");
  const deadline = Date.now() + 3000;
  while (hub.transport !== "websocket" || hub.status !== "open") {
    assert.ok(Date.now() < deadline, `still ${hub.transport} ${hub.status}`);
    await sleep(10);
  }
  assert.deepEqual(transports, ["websocket"]);
  assert.ok(FakeEventSource.made[0].closed);
  assert.equal(script.made, 1);
  hub.close();
});
