-- Release (ARGV: workspace, client): removed now without streams (its tombstone keeps the
-- mark), else marked, and removed at its last close. The mark is versioned, and the nodes
-- holding the client's streams learn it from the feed. Returns {seq, deadline armed|-1}.
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
  return {commit({r = {[client] = {1, claim.rv}}}), deadline or -1}
end
return {seq(), -1}
