-- Release (ARGV: workspace, client): removed now without streams, else at its last close.
require_workspace()
local client = ARGV[2]
local claim = load_claim(client)
if claim then
  if claim.n > 0 then
    claim.r = 1
    save_claim(client, claim)
  else
    remove_claim(client, claim)
  end
end
return seq()
