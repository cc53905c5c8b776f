-- Write back a released mark that this node acknowledged (ARGV: workspace, client, released
-- 0|1, its version): a release (1) or a create's hold (0), kept by the node for TOMB_MS and
-- written back at each of its re-assertions, since Redis may have lost it (restarted empty)
-- while the node holding the client's stream never heard of it (its feed was cut). Newer
-- wins, and only over a claim born before the mark (_lib.lua, marked): a claim made anew
-- after it (born later) keeps its own. The tombstone keeps the mark too, for a node whose
-- memory of a claim born before it re-asserts later.
-- Returns {seq, earliest deadline armed|-1}.
require_workspace()
local client, mark = ARGV[2], {mr = tonumber(ARGV[3]), mv = ARGV[4]}
local claim = load_claim(client)
local msg, deadline = nil, false
if claim and marked(client, claim, claim, mark) then
  msg = {r = {[client] = {claim.r, claim.rv}}}
  if claim.r == 1 and claim.n == 0 then
    deadline = remove_claim(client, claim, true)  -- released without a stream: ended now
  else
    save_claim(client, claim)
  end
end
local raw = redis.call('HGET', GONE, client)
local tomb = raw and cjson.decode(raw) or {s = '', sv = '0', r = 0, rv = '0'}
if version(tomb.mv) < version(mark.mv) then
  tomb.mr, tomb.mv = mark.mr, mark.mv
  redis.call('HSET', GONE, client, cjson.encode(tomb))
  local gone = now_ms() + TOMB_MS
  timer(gone, '\r' .. client)
  if not deadline then deadline = gone end
end
return {commit(msg), deadline or -1}
