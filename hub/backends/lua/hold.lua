-- A creation hold (ARGV: workspace, client, create_grace_ms): a new claim counting nowhere, or
-- a grace claim turned into a hold; the released mark is cleared. Returns {seq, deadline|-1}.
require_workspace()
local client = ARGV[2]
local claim = load_claim(client) or new_claim()
claim.r = 0
local deadline = -1
if claim.n == 0 then
  claim.h = 1
  deadline = now_ms() + tonumber(ARGV[3])
  redis.call('ZADD', TIMERS, deadline, client)
end
save_claim(client, claim)
return {commit(), deadline}
