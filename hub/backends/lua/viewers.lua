-- Who views a session (ARGV: workspace, session_id, limit): {seq, total users, identified
-- users, flat {user, clients, profile JSON or ''} of the first `limit` by arrival}.
require_workspace()
local session, limit = ARGV[2], tonumber(ARGV[3])
local total
if session == '' then
  total = redis.call('HGET', META, 'idle_users')
else
  total = redis.call('HGET', USERS, session)
end
local lo, hi = '[' .. session .. '\n', '(' .. session .. '\011'
local named = redis.call('ZLEXCOUNT', ARRIVE, lo, hi)
local out = {}
for _, member in ipairs(redis.call('ZRANGEBYLEX', ARRIVE, lo, hi, 'LIMIT', 0, limit)) do
  local user = string.sub(member, #session + 18)
  local present = cjson.decode(redis.call('HGET', PEOPLE, 'v\n' .. user))
  table.insert(out, user)
  table.insert(out, present[session][1])
  table.insert(out, redis.call('HGET', PEOPLE, 'p\n' .. user) or '')
end
return {seq(), tonumber(total or '0'), named, out}
