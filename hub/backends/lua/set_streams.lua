-- Set one node's streams here to exactly ARGV[3] (ARGV: workspace, node, cjson {client: n},
-- cjson {client: {s = session_id, u = user (absent: anonymous), p = profile JSON text}} for
-- claims to re-create, as the node last knew them, detach_grace_ms). A node re-asserting
-- after Redis lost its data, or a survivor clearing a dead node ({}), both come here. A client
-- retired here is never brought back: its streams are dropped and it is named in the answer,
-- so that the node closes its sockets. Returns {seq, earliest deadline armed|-1, retired}.
local node = ARGV[2]
local want = cjson.decode(ARGV[3])
if next(want) ~= nil then
  ensure_workspace()
elseif not known() then
  return {0, -1, {}}
end
local known_claims = cjson.decode(ARGV[4])
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
local function apply(client, target)
  local field = prefix .. client
  local delta = target - (have[client] or 0)
  if delta == 0 then return end
  if target == 0 then
    redis.call('HDEL', STREAMS, field)
  else
    redis.call('HSET', STREAMS, field, target)
  end
  local claim = load_claim(client)
  local profile = ''
  if not claim then
    if target == 0 then return end
    local was = known_claims[client] or {}
    claim = new_claim(was.s)
    bind(claim, was.u or '')
    if claim.u and redis.call('HEXISTS', PEOPLE, 'p\n' .. claim.u) == 0 then profile = was.p or '' end
  end
  local deadline = move_streams(client, claim, delta, now, grace)
  set_profile(claim, profile)
  if deadline and (earliest < 0 or deadline < earliest) then earliest = deadline end
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
return {commit(), earliest, retired}
