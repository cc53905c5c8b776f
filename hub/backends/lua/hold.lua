-- A creation hold (ARGV: workspace, client, create_grace_ms), the workspace made known if it
-- is not (docs/protocol.md section 2, POST /v1/workspaces): a new claim counting nowhere, or
-- a grace claim turned into a hold; the released mark is cleared (a new version of it, which
-- the nodes holding the client's streams learn from the feed). Returns {seq, deadline|-1,
-- the mark's version} (the node that answered keeps it, to write it back: _lib.lua, write_marks).
ensure_workspace()  -- the store has it (redis/backend.py asked)
local client = ARGV[2]
index_claim(nil)
local claim = load_claim(client)
if not claim then
  claim = born(new_claim())  -- the ended claim's tombstone stays (set_streams.lua)
end
claim.r = 0
claim.rv = tick()
local deadline = -1
if claim.n == 0 then
  claim.h = 1
  deadline = now_ms() + tonumber(ARGV[3])
  timer(deadline, client)
end
save_claim(client, claim)
return {commit({r = {[client] = {0, claim.rv}}}), deadline, claim.rv}
