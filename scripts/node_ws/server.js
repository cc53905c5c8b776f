// The benchmark's Node `ws` peer: the workload of scripts/baseline_server.py on the `ws`
// library, the server users would pick in Node. Every socket of a URL path is in one room; a
// set_session bumps the room's seq, answers an ack and schedules a counts frame, encoded once
// into one Buffer per push and sent to every socket of the room. Frames are coalesced with
// the hub's rule (the first change after a quiet period goes out on the next loop turn, later
// ones wait for the window), so every server delivers the same frames.
//
//   node scripts/node_ws/server.js --port 8100 [--window 0.05]
"use strict";
const http = require("http");
const { WebSocketServer } = require("ws");

const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : fallback;
};
const port = Number(arg("--port"));
const windowMs = Number(arg("--window", "0.05")) * 1000;
const rooms = new Map();
const TEXT = { binary: false }; // a Buffer is sent as a binary frame unless told

function room(path) {
  let r = rooms.get(path);
  if (!r) {
    r = { sockets: new Set(), seq: 0, sessions: new Map(), pending: {}, timer: null, lastFlush: -Infinity };
    rooms.set(path, r);
  }
  return r;
}

function flush(r) {
  r.timer = null;
  r.lastFlush = performance.now();
  const frame = Buffer.from(JSON.stringify({ type: "counts", seq: r.seq, counts: r.pending }));
  r.pending = {};
  for (const ws of r.sockets) ws.send(frame, TEXT);
}

function changed(r, session) {
  r.seq += 1;
  let n = 0;
  for (const s of r.sessions.values()) if (s === session) n += 1;
  r.pending[session] = n;
  if (r.timer === null) {
    const wait = r.lastFlush + windowMs - performance.now();
    r.timer = wait <= 0 ? setImmediate(flush, r) : setTimeout(flush, wait, r);
  }
}

const server = http.createServer((req, res) => {
  res.writeHead(426, { "Content-Type": "text/plain" });
  res.end("Upgrade Required");
});
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 64 * 1024 });
wss.on("connection", (ws, req) => {
  const r = room(req.url.split("?")[0]);
  r.sockets.add(ws);
  ws.send(JSON.stringify({ type: "snapshot", seq: r.seq, online: r.sockets.size }));
  ws.on("message", (data) => {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (msg.type === "set_session") {
      r.sessions.set(ws, msg.session_id);
      changed(r, msg.session_id);
      if ("ref" in msg) ws.send(JSON.stringify({ type: "ack", ref: msg.ref, seq: r.seq }));
    }
  });
  ws.on("close", () => {
    r.sockets.delete(ws);
    r.sessions.delete(ws);
  });
  ws.on("error", () => {});
});
server.listen(port, "127.0.0.1", 4096, () => console.log("ready"));
process.on("SIGTERM", () => process.exit(0));
