-- Set one node's streams here to exactly ARGV[3] and merge what the node remembers of the
-- claims it names (hub/presence.py, set_streams and Versions). ARGV: workspace, node, cjson
-- {client: n}, cjson {client: {s, sv, r, rv, cb = birth, u = user (absent: anonymous), p =
-- profile JSON text}} (the node's memory of each), detach_grace_ms, the node's generation
-- (-1: a survivor clearing a node taken for dead, never fenced), cjson {client: {s, sv, r,
-- rv}}: the marks the node keeps, written back first (_lib.lua, write_marks; {} for a
-- survivor). A node re-asserting after
-- Redis lost its data or after it was cleared, and a survivor clearing a dead node ({}), both
-- come here. A claim found gone comes back from its tombstone and the node's memory, the newer
-- of the two for each field; a claim still there takes from the memory only what is newer. A
-- client retired here is never brought back: its streams are dropped and it is named in the
-- answer, so that the node closes its sockets. Returns {seq, earliest deadline armed|-1,
-- retired, flat {client, session, its version, released, its version, birth} of every claim
-- named that stands}, or {-1} when the node's generation is stale.
local node = ARGV[2]
local want = cjson.decode(ARGV[3])
local marks = cjson.decode(ARGV[7])
if next(want) ~= nil then
  ensure_workspace()
elseif next(marks) ~= nil then
  require_workspace()  -- the node asks the store, and makes it known, when Redis forgot it
elseif not known() then
  return {0, -1, {}, {}}
end
if stale(node, tonumber(ARGV[6])) then return {-1} end
local memory = cjson.decode(ARGV[4])
local grace = tonumber(ARGV[5])
local prefix = node .. '|'
local have = {}
local flat = redis.call('HGETALL', STREAMS)
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, #prefix) == prefix then
    have[string.sub(flat[i], #prefix + 1)] = tonumber(flat[i + 1])
  end
end
local now = now_ms()
local earliest = -1
local function armed(deadline)
  if deadline and (earliest < 0 or deadline < earliest) then earliest = deadline end
end
local told, marked_until = write_marks(marks)
armed(marked_until)
local function apply(client, target)
  local field = prefix .. client
  local delta = target - (have[client] or 0)
  local claim = load_claim(client)
  local recalled = memory[client] or {}
  local profile = ''
  if not claim then
    if target == 0 then
      if delta ~= 0 then redis.call('HDEL', STREAMS, field) end
      return
    end
    claim = new_claim()
    delta = target  -- whatever the node's count said, the claim is made with them all
    bind(claim, recalled.u or '')
    local tomb = redis.call('HGET', GONE, client)
    if tomb then
      tomb = cjson.decode(tomb)
      merge(client, claim, tomb)
      marked(client, claim, recalled, tomb)
      local kept = marks_of(tomb)
      if kept then  -- the marks stay, for another node's memory of a claim born before them
        redis.call('HSET', GONE, client, cjson.encode(kept))
      else
        redis.call('HDEL', GONE, client)
        redis.call('ZREM', TIMERS, '\r' .. client)
      end
    end
    if claim.u and redis.call('HEXISTS', PEOPLE, 'p\n' .. claim.u) == 0 then
      profile = recalled.p or ''
    end
  elseif target > 0 then
    -- A memory of the claim that ended before this one was made: what the node missed before
    -- that end comes back from its tombstone first (presence.py, _predates).
    local tomb = redis.call('HGET', GONE, client)
    if tomb then
      tomb = cjson.decode(tomb)
      local changed = predates(recalled, tomb) and merge(client, claim, tomb)
      -- and the marks written back by the node that acknowledged them (write_marks), on the
      -- same rule
      if marked(client, claim, recalled, tomb) or changed then
        save_claim(client, claim)
      end
    end
  end
  local merged = target > 0 and merge(client, claim, recalled)
  if delta == 0 then
    if merged then save_claim(client, claim) end
    return
  end
  if target == 0 then
    redis.call('HDEL', STREAMS, field)
  else
    redis.call('HSET', STREAMS, field, target)
  end
  armed(move_streams(client, claim, delta, now, grace))
  set_profile(claim, profile)
end
local retired = {}
for client, target in pairs(want) do
  if is_retired(client, now) then
    table.insert(retired, client)
    want[client] = nil
  end
end
for client, target in pairs(want) do apply(client, tonumber(target)) end
for client, _ in pairs(have) do
  if want[client] == nil then apply(client, 0) end
end
if next(want) ~= nil then
  redis.call('SADD', NODES, node)
else
  redis.call('SREM', NODES, node)
end
local states = {}
for client, _ in pairs(want) do
  local claim = load_claim(client)
  if claim then
    local st = state(claim)
    table.insert(states, client)
    for _, v in ipairs(st) do table.insert(states, v) end
  end
end
return {commit(next(told) ~= nil and {r = told} or nil), earliest, retired, states}
