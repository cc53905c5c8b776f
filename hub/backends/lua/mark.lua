-- Write back the marks this node acknowledged (ARGV: workspace, cjson {client: {s, sv, r,
-- rv}}): per client a released mark r at version rv (a release: 1; a create's hold: 0) and a
-- session s at version sv (a set_session, on a socket or over REST), a version of '0' for a
-- kind it has none of. The node keeps them for TOMB_MS and writes them back at each of its
-- re-assertions, since Redis may have lost them (restarted empty) while the node holding the
-- client's stream never heard of them (its feed was cut), or no node holds a stream that
-- heard. Newer wins, and only over a claim born before the mark (_lib.lua, marked): a claim
-- made anew after it (born later) keeps its own. The tombstone keeps the marks too, for a
-- node whose memory of a claim born before them re-asserts later. Returns {seq, earliest
-- deadline armed|-1}.
require_workspace()
local msg = {r = {}}
local earliest = -1
local function armed(deadline)
  if deadline and (earliest < 0 or deadline < earliest) then earliest = deadline end
end
local gone = now_ms() + TOMB_MS
for client, m in pairs(cjson.decode(ARGV[2])) do
  local mark = {}
  if version(m.rv) > 0 then mark.mr, mark.mv = tonumber(m.r), m.rv end
  if version(m.sv) > 0 then mark.ms, mark.msv = m.s, m.sv end
  local claim = load_claim(client)
  if claim and marked(client, claim, claim, mark) then
    msg.r[client] = {claim.r, claim.rv}
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
if next(msg.r) == nil then msg.r = nil end
return {commit(msg), earliest}
