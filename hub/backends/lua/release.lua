-- Release (ARGV: workspace, client): removed now without streams (its tombstone keeps the
-- mark), else marked, and removed at its last close; without a claim, the tombstone is marked. The mark is versioned, and the nodes
-- holding the client's streams learn it from the feed. Returns {seq, deadline armed|-1, the
-- mark's version} (the node that answered keeps it, to write it back: _lib.lua, write_marks).
require_workspace()
local client = ARGV[2]
local claim = load_claim(client)
local deadline = false
if claim then
  claim.r = 1
  claim.rv = tick()
  if claim.n > 0 then
    save_claim(client, claim)
  else
    deadline = remove_claim(client, claim, true)
  end
  return {commit({r = {[client] = {1, claim.rv}}}), deadline or -1, claim.rv}
end
-- No claim: Redis may have lost it while a node still holds a stream of the client (it has not
-- re-asserted yet). The tombstone keeps the mark, so that the re-assertion merges it (an
-- acknowledged release is never forgotten); a join that makes a new claim drops it.
local raw = redis.call('HGET', GONE, client)
local tomb = raw and cjson.decode(raw) or {s = '', sv = '0', r = 0, rv = '0'}
tomb.r, tomb.rv = 1, tick()
tomb.cb = tomb.rv  -- born at the mark: any claim born before it may be the lost one
redis.call('HSET', GONE, client, cjson.encode(tomb))
deadline = now_ms() + TOMB_MS
timer(deadline, '\r' .. client)
return {seq(), deadline, tomb.rv}
