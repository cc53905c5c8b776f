-- One more stream (ARGV: workspace, client, node); the first one makes the claim count.
-- Returns {session_id of the claim, seq, online, flat counts}: the snapshot that includes it.
require_workspace()
local client, node = ARGV[2], ARGV[3]
local claim = load_claim(client) or new_claim()
redis.call('HINCRBY', STREAMS, node .. '|' .. client, 1)
redis.call('SADD', NODES, node)
move_streams(client, claim, 1, 0, 0)
commit()
local snap = snapshot()
return {claim.s, snap[1], snap[2], snap[3]}
