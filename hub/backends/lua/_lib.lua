-- Shared prelude of every workspace script (hub/backends/redis/scripts.py prepends it).
--
-- KEYS (all one workspace, one hash tag, so every script also runs on a Redis Cluster):
--   1 meta    HASH   seq, online, idle (attached claims with session ""), online_users,
--                    idle_users (distinct users of session ""), arr (the arrival counter),
--                    ver (the claim clock: the last version given, see hub/presence.py)
--   2 counts  HASH   session_id -> attached claims viewing it (only n > 0, never "")
--   3 claims  HASH   client_id -> cjson {s = session_id, n = streams, r = released, h = held,
--                    b = 1 once bound to its user by its first stream, u = user (absent:
--                    anonymous), sv, rv = versions of s and r (absent: 0)}
--   4 timers  ZSET   client_id -> deadline (Redis time, ms) of a hold or a grace; '\r'<client>
--                    -> when its tombstone (12) goes
--   5 streams HASH   "<node>|<client_id>" -> streams of that client held by that node;
--                    "#<node>" -> the node's generation: a write it made under an older one
--                    arrived late (after the node gave up on it) and is refused (fenced)
--   6 nodes   SET    nodes that hold streams here
--   7 retired HASH   client_id -> until when (Redis time, ms) it is retired (see retire.lua)
--   8 users   HASH   session_id -> distinct users viewing it (only n > 0, never "")
--   9 people  HASH   'v\n'<user> -> cjson {session_id: [claims of the user viewing it, arrival]}
--                    (its attached claims), 'm\n'<user> -> its claims in any state,
--                    'p\n'<user> -> its profile (JSON text)
--  10 arrive  ZSET   '<session>\n<arrival, 15 digits>\n<user>' (score 0): the identified
--                    viewers of each session in arrival order, read by ZRANGEBYLEX
--  11 hooks   HASH   webhooks (docs/protocol.md section 10): session_id (or '' for the workspace) ->
--                    'o' occupied, 'v' vacating (its vacated timer is the member
--                    '\t'<session_id> of timers); used while scripts.py sets VACATED_MS >= 0
--  12 gone    HASH   client_id -> cjson {s, sv, r, rv, cb, mr, mv, ms, msv}: the last state of
--                    a claim that ended, for TOMB_MS (a re-assertion merges it:
--                    hub/presence.py, Versions), and the marks written back by write_marks: a
--                    released mark mr at version mv, a session ms at version msv
-- Outside a Redis Cluster (one Redis, or Sentinel's), keys outside the workspace follow, so
-- that one script does what would otherwise take more round trips:
--  13 outbox  STREAM the webhook events for every receiver (hub:webhooks; one consumer group
--                    each; used with webhooks on, which needs one Redis)
--  14 made    STRING how many events were ever added to the outbox (their 'n' field)
--  15 index   ZSET   hub:timers: every timer armed here is indexed in the same script
--  and, for attach.lua and hold.lua, the client's:
--  16 retired STRING hub:retired:<client> (set by a retire before it looks for claims)
--  17 spaces  SET    hub:client:<client>, the workspaces it has claims in (read by a retire)
--  18 nodesp  SET    hub:node:<node>:spaces, the workspaces the node has streams in
-- On a Cluster they are absent (nil here): redis/backend.py indexes and arms around the script.
-- ARGV[1] is the workspace id; the change feed is the channel "hub:{<workspace id>}:ch", in
-- the same slot. scripts.py puts `local PUBLISH = 'PUBLISH'` before this prelude, or 'SPUBLISH'
-- (sharded pub/sub) on a Redis Cluster.
local META, COUNTS, CLAIMS, TIMERS, STREAMS, NODES, RETIRED = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local USERS, PEOPLE, ARRIVE = KEYS[8], KEYS[9], KEYS[10]
local HOOKS, GONE, OUTBOX, MADE, INDEX = KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15]
local CLIENT_RETIRED, CLIENT_SPACES, NODE_SPACES = KEYS[16], KEYS[17], KEYS[18]
local W = ARGV[1]
local CHANNEL = 'hub:{' .. W .. '}:ch'

local now_ms = clock_ms  -- (_index.lua)

-- Integers as exact decimal text (cjson and tostring keep 14 digits only).
local function int(x)
  return string.format('%.0f', x)
end

-- Arm a timer of this workspace (a member of TIMERS), indexed cluster-wide in the same script
-- where the index is one of this script's keys (else redis/timers.py arms it after).
local function timer(deadline, member)
  redis.call('ZADD', TIMERS, deadline, member)
  if INDEX then index_timer(INDEX, W, deadline) end
end

-- A claim made outside a Cluster is indexed for retire (and its node's streams for a
-- survivor) in the same script, after a last look at the client's retirement.
local function index_claim(node)
  if not CLIENT_SPACES then return end
  if redis.call('EXISTS', CLIENT_RETIRED) == 1 then
    error({err = 'HUB retired'})
  end
  redis.call('SADD', CLIENT_SPACES, W)
  if node then redis.call('SADD', NODE_SPACES, W) end
end

local function known()
  return redis.call('EXISTS', META) == 1
end

local function require_workspace()
  if not known() then
    error({err = 'HUB workspace_not_found'})
  end
end

local function load_claim(client)
  local raw = redis.call('HGET', CLAIMS, client)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function new_claim(session)
  return {s = session or '', n = 0, r = 0, h = 1}
end

-- Versions are decimal text in a claim's JSON (cjson keeps 14 digits of a number only, and a
-- version starts at the Redis clock in microseconds: 16 digits); absent is 0.
local function version(x)
  return tonumber(x or '0')
end

-- The next version of the workspace's claim clock (see hub/presence.py, Versions), as text.
local function tick()
  return int(redis.call('HINCRBY', META, 'ver', 1))
end

-- What a node learns of a claim it holds: {session, its version, released 0|1, its version,
-- birth} (hub/presence.py, Versions: the birth tells which claim it is).
local function state(claim)
  return {claim.s, claim.sv or '0', claim.r, claim.rv or '0', claim.cb or '0'}
end

-- A claim made by a join or a hold: born at the next tick (hub/presence.py, _born).
local function born(claim)
  claim.cb = tick()
  return claim
end

-- Whether a write of `node` made under generation `gen` is stale: the node has since written
-- under a newer one (it gave up on this write, which arrived late). A current or newer
-- generation is recorded. gen < 0: a write that is never fenced (a survivor clearing a node).
local function stale(node, gen)
  if gen < 0 then return false end
  local field = '#' .. node
  local have = tonumber(redis.call('HGET', STREAMS, field) or '-1')
  if gen < have then return true end
  if gen > have then redis.call('HSET', STREAMS, field, int(gen)) end
  return false
end

local function save_claim(client, claim)
  redis.call('HSET', CLAIMS, client, cjson.encode(claim))
end

-- A claim's user is fixed by its first stream ('' : anonymous).
local function bind(claim, user)
  claim.b = 1
  if user ~= '' then
    claim.u = user
    redis.call('HINCRBY', PEOPLE, 'm\n' .. user, 1)
  end
end

-- End a claim. With tomb, its last state stays in GONE for TOMB_MS (a retired client's does
-- not: it never comes back); returns the tombstone's deadline, or false.
local function remove_claim(client, claim, tomb)
  redis.call('HDEL', CLAIMS, client)
  redis.call('ZREM', TIMERS, client)
  if claim.u and redis.call('HINCRBY', PEOPLE, 'm\n' .. claim.u, -1) <= 0 then
    -- the user's last claim here: its profile goes with it
    redis.call('HDEL', PEOPLE, 'm\n' .. claim.u, 'p\n' .. claim.u)
  end
  if not tomb then return false end
  local st = state(claim)
  local last = {s = st[1], sv = st[2], r = st[3], rv = st[4], cb = st[5]}
  local raw = redis.call('HGET', GONE, client)
  if raw then  -- the marks written back (write_marks) stay with the tombstone
    local before = cjson.decode(raw)
    last.mr, last.mv, last.ms, last.msv = before.mr, before.mv, before.ms, before.msv
  end
  redis.call('HSET', GONE, client, cjson.encode(last))
  local deadline = now_ms() + TOMB_MS
  timer(deadline, '\r' .. client)
  return deadline
end

-- One change: count moves collected here become one feed message and one seq.
local change = {counts = {}, users = {}, moved = false, sessions = {}, any_session = false, touched = {}}
local before = redis.call('HMGET', META, 'online', 'online_users')
change.online_before = tonumber(before[1] or '0')
change.online = change.online_before
change.online_users_before = tonumber(before[2] or '0')
change.online_users = change.online_users_before

local function arrival_member(session, arrival, user)
  return session .. '\n' .. string.format('%015d', arrival) .. '\n' .. user
end

-- Move one claim of a named user; whether the user entered or left the session.
local function person(session, delta, user)
  local field = 'v\n' .. user
  local raw = redis.call('HGET', PEOPLE, field)
  local present = raw and cjson.decode(raw) or {}
  local was_online = next(present) ~= nil
  local entry = present[session]
  local k = (entry and entry[1] or 0) + delta
  local moved = false
  if not entry and k > 0 then
    local arrival = redis.call('HINCRBY', META, 'arr', 1)
    present[session] = {k, arrival}
    redis.call('ZADD', ARRIVE, 0, arrival_member(session, arrival, user))
    moved = true
  elseif entry and k <= 0 then
    redis.call('ZREM', ARRIVE, arrival_member(session, entry[2], user))
    present[session] = nil
    moved = true
  elseif entry then
    entry[1] = k
  end
  local online = next(present) ~= nil
  if online then
    redis.call('HSET', PEOPLE, field, cjson.encode(present))
  else
    redis.call('HDEL', PEOPLE, field)
  end
  if online and not was_online then change.online_users = change.online_users + 1 end
  if was_online and not online then change.online_users = change.online_users - 1 end
  return moved
end

-- One attached claim (of user; nil: anonymous, a user of its own) enters (+1) or leaves (-1)
-- a session.
local function count(session, delta, user)
  change.online = change.online + delta
  local entered = true
  if user then
    entered = person(session, delta, user)
  else
    change.online_users = change.online_users + delta
  end
  if session == '' then
    redis.call('HINCRBY', META, 'idle', delta)
    if entered then redis.call('HINCRBY', META, 'idle_users', delta) end
    change.touched[''] = true
    return
  end
  local n = redis.call('HINCRBY', COUNTS, session, delta)
  if n <= 0 then redis.call('HDEL', COUNTS, session) end
  change.counts[session] = n
  change.moved = true
  if entered then
    local u = redis.call('HINCRBY', USERS, session, delta)
    if u <= 0 then redis.call('HDEL', USERS, session) end
    change.users[session] = u
  end
end

-- The claim's user takes a profile (JSON text); the sessions listing the user are touched.
local function set_profile(claim, profile)
  if not claim.u or profile == '' then return end
  local field = 'p\n' .. claim.u
  if redis.call('HGET', PEOPLE, field) == profile then return end
  redis.call('HSET', PEOPLE, field, profile)
  local raw = redis.call('HGET', PEOPLE, 'v\n' .. claim.u)
  for session, _ in pairs(raw and cjson.decode(raw) or {}) do change.touched[session] = true end
end

local function seq()
  return tonumber(redis.call('HGET', META, 'seq') or '0')
end

-- Webhooks: the rules of hub/occupancy.py, on the final values of this change.
-- Append one event to the outbox (its id is the same whoever delivers it, however often).
local function emit(name, session, s)
  local n = redis.call('INCR', MADE)
  local key = W .. '\n' .. int(s) .. '\n' .. name .. '\n' .. (session or '')
  local event = '{"id":"' .. string.sub(redis.sha1hex(key), 1, 32) .. '","name":"' .. name ..
    '","workspace_id":' .. cjson.encode(W) .. ',"seq":' .. int(s) .. ',"time_ms":' .. int(now_ms())
  if session then event = event .. ',"session_id":' .. cjson.encode(session) end
  redis.call('XADD', OUTBOX, 'MAXLEN', HOOK_MAX, '*', 'n', n, 'e', event .. '}')
end

-- One session ('' : the workspace) whose count is now n.
local function occupancy(field, n, s)
  local state = redis.call('HGET', HOOKS, field)
  if n > 0 then
    if state == 'v' then  -- a return within the delay: nothing is sent
      redis.call('HSET', HOOKS, field, 'o')
      redis.call('ZREM', TIMERS, '\t' .. field)
    elseif not state then
      redis.call('HSET', HOOKS, field, 'o')
      if field == '' then emit('workspace_occupied', nil, s) else emit('session_occupied', field, s) end
    end
  elseif state == 'o' then
    redis.call('HSET', HOOKS, field, 'v')
    local deadline = now_ms() + VACATED_MS
    timer(deadline, '\t' .. field)
  end
end

local function occupancies(s)
  if change.online ~= change.online_before then occupancy('', change.online, s) end
  local sessions = {}
  for session, _ in pairs(change.counts) do table.insert(sessions, session) end
  table.sort(sessions)
  for _, session in ipairs(sessions) do occupancy(session, change.counts[session], s) end
end

-- Publish what moved (if anything) with the new seq; returns the workspace seq.
local function commit(extra)
  -- online_users may move alone (see hub/presence.py, _Change.diff)
  local moved = change.moved or change.online ~= change.online_before or
    change.online_users ~= change.online_users_before
  local msg = extra or {}
  local s = seq()
  if moved and known() then
    redis.call('HSET', META, 'online', change.online, 'online_users', change.online_users)
    s = redis.call('HINCRBY', META, 'seq', 1)
    msg.q = int(s)
    msg.c = change.counts
    if change.online ~= change.online_before then msg.o = change.online end
    if next(change.users) ~= nil then msg.u = change.users end
    if change.online_users ~= change.online_users_before then msg.ou = change.online_users end
    if VACATED_MS >= 0 then occupancies(s) end
  end
  if change.any_session then msg.s = change.sessions end
  local touched = {}
  for session, _ in pairs(change.touched) do table.insert(touched, session) end
  if #touched > 0 then msg.t = touched end
  if next(msg) ~= nil then
    redis.call(PUBLISH, CHANNEL, cjson.encode(msg))
  end
  return s
end

-- Change a claim's streams by delta (the node's own count is kept by the caller). The first
-- stream makes it count (and cancels its timer); the last one ends it (released: its
-- tombstone's timer) or starts its grace. Returns the deadline armed, or false.
local function move_streams(client, claim, delta, now, grace_ms)
  local before = claim.n
  claim.n = before + delta
  if claim.n < 0 then claim.n = 0 end
  if before == 0 and claim.n > 0 then
    redis.call('ZREM', TIMERS, client)
    count(claim.s, 1, claim.u)
  elseif before > 0 and claim.n == 0 then
    count(claim.s, -1, claim.u)
    if claim.r == 1 then
      return remove_claim(client, claim, true)
    end
    claim.h = 0
    local deadline = now + grace_ms
    timer(deadline, client)
    save_claim(client, claim)
    return deadline
  end
  save_claim(client, claim)
  return false
end

-- Move a claim to another session (its count moves only while it is attached).
local function switch(client, claim, session)
  if claim.n > 0 then
    count(claim.s, -1, claim.u)
    count(session, 1, claim.u)
  end
  claim.s = session
  change.sessions[client] = {session, claim.sv or '0'}
  change.any_session = true
end

-- Take from `known` ({s, sv, r, rv}, versions as numbers) each field whose version is newer
-- than the claim's (hub/presence.py, Versions); the clock never falls behind what it merged.
local function merge(client, claim, known)
  local sv, rv = version(known.sv), version(known.rv)
  local changed = false
  if sv > version(claim.sv) then
    claim.sv = int(sv)
    if (known.s or '') ~= claim.s then switch(client, claim, known.s or '') end
    changed = true
  end
  if rv > version(claim.rv) then
    claim.r, claim.rv = tonumber(known.r or 0), int(rv)
    changed = true
  end
  local cb = version(known.cb)
  if cb > 0 and (version(claim.cb) == 0 or cb < version(claim.cb)) then
    claim.cb = int(cb)  -- it continues that older claim
    changed = true
  end
  local ver = tonumber(redis.call('HGET', META, 'ver') or '0')
  local top = math.max(sv, rv, cb)
  if top > ver then redis.call('HSET', META, 'ver', int(top)) end
  return changed
end

-- Whether a node's memory is of the claim a tombstone ended (or an older one): born no later
-- (presence.py, _predates); a memory with no birth tells nothing.
local function predates(memory, tomb)
  local cb = version(memory.cb)
  return cb > 0 and cb <= version(tomb.cb)
end

-- The marks written back by the node that acknowledged them (write_marks), kept in the
-- tombstone: a released mark mr (0|1) at version mv, a session ms at version msv. Each merges
-- into a claim (newer wins) only through a state born before it (`seen`: the claim itself,
-- or a node's memory of it), since every claim made anew after the mark is born later.
-- Returns whether it changed.
local function marked(client, claim, seen, tomb)
  local cb = version(seen.cb)
  if cb == 0 then return false end
  local known = {}
  if tomb.mv and cb < version(tomb.mv) then known.r, known.rv = tomb.mr, tomb.mv end
  if tomb.msv and cb < version(tomb.msv) then known.s, known.sv = tomb.ms, tomb.msv end
  if not known.rv and not known.sv then return false end
  return merge(client, claim, known)
end

-- What of a tombstone outlives the claim it is merged into: its marks (write_marks).
local function marks_of(tomb)
  if not tomb.mv and not tomb.msv then return nil end
  return {s = '', sv = '0', r = 0, rv = '0', mr = tomb.mr, mv = tomb.mv, ms = tomb.ms, msv = tomb.msv}
end

-- Write back the marks a node acknowledged ({client: {s, sv, r, rv}}, decoded): per client a
-- released mark r at version rv (a release: 1; a create's hold: 0) and a session s at version
-- sv (a set_session, on a socket or over REST), a version of '0' for a kind it has none of.
-- The node keeps them for TOMB_MS and writes them back with its streams at each re-assertion
-- (set_streams.lua), since Redis may have lost them (restarted empty) while the node holding
-- the client's stream never heard of them (its feed was cut), or no node holds a stream that
-- heard. Newer wins, and only over a claim born before the mark (marked): a claim made anew
-- after it (born later) keeps its own. The tombstone keeps the marks too, for a node whose
-- memory of a claim born before them re-asserts later. Returns {client: {r, rv}} of the
-- claims whose released mark it set (for the feed), and the earliest deadline it armed or
-- false.
local function write_marks(marks)
  local told, earliest = {}, false
  local function armed(deadline)
    if deadline and (not earliest or deadline < earliest) then earliest = deadline end
  end
  local gone = now_ms() + TOMB_MS
  for client, m in pairs(marks) do
    local mark = {}
    if version(m.rv) > 0 then mark.mr, mark.mv = tonumber(m.r), m.rv end
    if version(m.sv) > 0 then mark.ms, mark.msv = m.s, m.sv end
    local claim = load_claim(client)
    if claim and marked(client, claim, claim, mark) then
      told[client] = {claim.r, claim.rv or '0'}  -- a claim never released has no rv
      if claim.r == 1 and claim.n == 0 then
        armed(remove_claim(client, claim, true))  -- released without a stream: ended now
      else
        save_claim(client, claim)
      end
    end
    local raw = redis.call('HGET', GONE, client)
    local tomb = raw and cjson.decode(raw) or {s = '', sv = '0', r = 0, rv = '0'}
    local newer = false
    if mark.mv and version(tomb.mv) < version(mark.mv) then
      tomb.mr, tomb.mv, newer = mark.mr, mark.mv, true
    end
    if mark.msv and version(tomb.msv) < version(mark.msv) then
      tomb.ms, tomb.msv, newer = mark.ms, mark.msv, true
    end
    if newer then
      redis.call('HSET', GONE, client, cjson.encode(tomb))
      timer(gone, '\r' .. client)
      armed(gone)
    end
  end
  return told, earliest
end

-- The earliest timer of this workspace, or -1.
local function next_deadline()
  local first = redis.call('ZRANGE', TIMERS, 0, 0, 'WITHSCORES')
  if first[2] then return tonumber(first[2]) end
  return -1
end

-- Create the workspace's records if missing (seq from the clock, see add_workspace.lua).
local function ensure_workspace()
  if known() then return end
  local t = redis.call('TIME')
  local clock = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('HSET', META, 'seq', clock, 'ver', clock, 'online', 0, 'idle', 0, 'online_users', 0, 'idle_users', 0)
  change.online_before = 0
  change.online = 0
  change.online_users_before = 0
  change.online_users = 0
end

-- Whether a client was retired here and still is (its claims may not come back).
local function is_retired(client, now)
  local untl = redis.call('HGET', RETIRED, client)
  if not untl then return false end
  if tonumber(untl) > now then return true end
  redis.call('HDEL', RETIRED, client)
  return false
end

-- The workspace's presence: {seq, online, flat counts, online_users, flat users}.
local function snapshot()
  local meta = redis.call('HMGET', META, 'seq', 'online', 'online_users')
  return {meta[1], tonumber(meta[2]), redis.call('HGETALL', COUNTS), tonumber(meta[3] or '0'), redis.call('HGETALL', USERS)}
end

-- The write's deadline: redis/backend.py appends 'D:<ms, Redis time>' to the ARGV of every call it
-- answers for, the moment past which it has told the client "unavailable" (its timeout). A
-- call that reaches Redis later (it sat in a stalled link, a paused Redis, a kernel buffer)
-- would overwrite what was acknowledged since, through another node, with a write the client
-- was told had failed: it is refused, and nothing of it is done. Calls without one (the
-- sweep's, add_workspace's) carry no deadline.
do
  local last = ARGV[#ARGV]
  if type(last) == 'string' and string.sub(last, 1, 2) == 'D:' then
    table.remove(ARGV)
    if now_ms() > tonumber(string.sub(last, 3)) then
      return redis.error_reply('HUB late')
    end
  end
end
