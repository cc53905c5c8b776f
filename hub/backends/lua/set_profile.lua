-- The client's user takes a profile (ARGV: workspace, client, profile JSON text): an update
-- of the user wherever it is listed; no count moves, so seq does not either. Returns seq.
require_workspace()
local claim = load_claim(ARGV[2])
if not claim or claim.n == 0 then
  error({err = 'HUB not_attached'})
end
set_profile(claim, ARGV[3])
return commit()
