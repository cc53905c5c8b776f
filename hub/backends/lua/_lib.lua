-- Shared prelude of every workspace script (hub/backends/redis.py prepends it).
--
-- KEYS (all one workspace, one hash tag, so every script also runs on a Redis Cluster):
--   1 meta    HASH   seq, online, idle (attached claims with session "")
--   2 counts  HASH   session_id -> attached claims viewing it (only n > 0, never "")
--   3 claims  HASH   client_id -> cjson {s = session_id, n = streams, r = released, h = held}
--   4 timers  ZSET   client_id -> deadline (Redis time, ms) of a hold or a grace
--   5 streams HASH   "<node>|<client_id>" -> streams of that client held by that node
--   6 nodes   SET    nodes that hold streams here
--   7 retired HASH   client_id -> until when (Redis time, ms) it is retired (see retire.lua)
-- ARGV[1] is the workspace id; the change feed is the channel "hub:{<workspace id>}:ch", in
-- the same slot. redis.py puts `local PUBLISH = 'PUBLISH'` before this prelude, or 'SPUBLISH'
-- (sharded pub/sub) on a Redis Cluster.
local META, COUNTS, CLAIMS, TIMERS, STREAMS, NODES, RETIRED = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local W = ARGV[1]
local CHANNEL = 'hub:{' .. W .. '}:ch'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as exact decimal text (cjson and tostring keep 14 digits only).
local function int(x)
  return string.format('%.0f', x)
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

local function save_claim(client, claim)
  redis.call('HSET', CLAIMS, client, cjson.encode(claim))
end

local function remove_claim(client)
  redis.call('HDEL', CLAIMS, client)
  redis.call('ZREM', TIMERS, client)
end

-- One change: count moves collected here become one feed message and one seq.
local change = {counts = {}, moved = false, sessions = {}, any_session = false}
change.online_before = tonumber(redis.call('HGET', META, 'online') or '0')
change.online = change.online_before

local function count(session, delta)
  change.online = change.online + delta
  if session == '' then
    redis.call('HINCRBY', META, 'idle', delta)
    return
  end
  local n = redis.call('HINCRBY', COUNTS, session, delta)
  if n <= 0 then redis.call('HDEL', COUNTS, session) end
  change.counts[session] = n
  change.moved = true
end

local function seq()
  return tonumber(redis.call('HGET', META, 'seq') or '0')
end

-- Publish what moved (if anything) with the new seq; returns the workspace seq.
local function commit(extra)
  local moved = change.moved or change.online ~= change.online_before
  local msg = extra or {}
  local s = seq()
  if moved and known() then
    redis.call('HSET', META, 'online', change.online)
    s = redis.call('HINCRBY', META, 'seq', 1)
    msg.q = int(s)
    msg.c = change.counts
    if change.online ~= change.online_before then msg.o = change.online end
  end
  if change.any_session then msg.s = change.sessions end
  if next(msg) ~= nil then
    redis.call(PUBLISH, CHANNEL, cjson.encode(msg))
  end
  return s
end

-- Change a claim's streams by delta (the node's own count is kept by the caller). The first
-- stream makes it count (and cancels its timer); the last one ends it (released) or starts
-- its grace. Returns the deadline armed, or false.
local function move_streams(client, claim, delta, now, grace_ms)
  local before = claim.n
  claim.n = before + delta
  if claim.n < 0 then claim.n = 0 end
  if before == 0 and claim.n > 0 then
    redis.call('ZREM', TIMERS, client)
    count(claim.s, 1)
  elseif before > 0 and claim.n == 0 then
    count(claim.s, -1)
    if claim.r == 1 then
      remove_claim(client)
      return false
    end
    claim.h = 0
    local deadline = now + grace_ms
    redis.call('ZADD', TIMERS, deadline, client)
    save_claim(client, claim)
    return deadline
  end
  save_claim(client, claim)
  return false
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
  redis.call('HSET', META, 'seq', t[1] .. string.format('%06d', tonumber(t[2])), 'online', 0, 'idle', 0)
  change.online_before = 0
  change.online = 0
end

-- Whether a client was retired here and still is (its claims may not come back).
local function is_retired(client, now)
  local untl = redis.call('HGET', RETIRED, client)
  if not untl then return false end
  if tonumber(untl) > now then return true end
  redis.call('HDEL', RETIRED, client)
  return false
end

-- The workspace's presence: {seq, online, flat counts}.
local function snapshot()
  local meta = redis.call('HMGET', META, 'seq', 'online')
  return {meta[1], tonumber(meta[2]), redis.call('HGETALL', COUNTS)}
end
