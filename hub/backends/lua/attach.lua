-- One more stream (ARGV: workspace, client, node, user or '' for anonymous, profile JSON or
-- '', the node's generation); the first one makes the claim count. Refused: a claim bound to
-- another user (forbidden), a client retired here (retired), a write the node gave up on
-- that arrived late (stale, see _lib.lua's stale()). Returns {session_id, its version,
-- released, its version, birth, seq, online, flat counts, online_users, flat users}: the
-- claim as the node should remember it, and the snapshot that includes this change.
require_workspace()
local client, node, user = ARGV[2], ARGV[3], ARGV[4]
if stale(node, tonumber(ARGV[6])) then
  error({err = 'HUB stale'})
end
if is_retired(client, now_ms()) then
  error({err = 'HUB retired'})
end
index_claim(node)
local claim = load_claim(client)
if not claim then
  claim = born(new_claim())  -- versions 0; the ended claim's tombstone stays (set_streams.lua)
end
if claim.b == 1 and (claim.u or '') ~= user then
  error({err = 'HUB forbidden'})
end
if claim.b ~= 1 then bind(claim, user) end
redis.call('HINCRBY', STREAMS, node .. '|' .. client, 1)
redis.call('SADD', NODES, node)
move_streams(client, claim, 1, 0, 0)
set_profile(claim, ARGV[5])
commit()
local snap = snapshot()
local st = state(claim)
return {st[1], st[2], st[3], st[4], st[5], snap[1], snap[2], snap[3], snap[4], snap[5]}
