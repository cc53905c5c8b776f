-- Move an attached client to a session (ARGV: workspace, client, session_id); the session
-- gets a new version. Returns {seq, the claim's session version}.
require_workspace()
local client, session = ARGV[2], ARGV[3]
local claim = load_claim(client)
if not claim or claim.n == 0 then
  error({err = 'HUB not_attached'})
end
if claim.s ~= session then
  claim.sv = tick()
  switch(client, claim, session)
  save_claim(client, claim)
end
return {commit(), claim.sv or '0'}
