-- Move an attached client to a session (ARGV: workspace, client, session_id); the session
-- gets a new version. Returns {seq, the claim's session version}.
require_workspace()
local client, session = ARGV[2], ARGV[3]
local claim = load_claim(client)
if not claim or claim.n == 0 then
  error({err = 'HUB not_attached'})
end
-- A claim whose session was never set takes a version even for the session it has
-- (presence.py, set_session): what the client said wins over an older node's memory.
if claim.s ~= session or version(claim.sv) == 0 then
  claim.sv = tick()
  if claim.s ~= session then switch(client, claim, session) end
  save_claim(client, claim)
end
return {commit(), claim.sv or '0'}
