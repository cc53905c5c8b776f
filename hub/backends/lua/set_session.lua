-- Move an attached client to a session (ARGV: workspace, client, session_id). Returns seq.
require_workspace()
local client, session = ARGV[2], ARGV[3]
local claim = load_claim(client)
if not claim or claim.n == 0 then
  error({err = 'HUB not_attached'})
end
if claim.s ~= session then
  count(claim.s, -1, claim.u)
  count(session, 1, claim.u)
  claim.s = session
  save_claim(client, claim)
  change.sessions[client] = session
  change.any_session = true
end
return commit()
