-- Fire the due holds, graces, tombstones and vacated timers (ARGV: workspace). Each fires
-- once, on whichever node runs this first. Holds and graces count nowhere, so nothing moves (an
-- expired claim leaves a tombstone); a vacated timer whose session (or workspace) is still at
-- 0 sends its vacated event, at the current seq, sessions first and the workspace last.
-- Returns the next deadline, or -1.
if not known() then return -1 end
local vacated, workspace = {}, false
for _, member in ipairs(redis.call('ZRANGEBYSCORE', TIMERS, '-inf', now_ms())) do
  local kind = string.sub(member, 1, 1)
  if kind == '\t' then
    redis.call('ZREM', TIMERS, member)
    local field = string.sub(member, 2)
    if redis.call('HGET', HOOKS, field) == 'v' then
      redis.call('HDEL', HOOKS, field)
      if field == '' then workspace = true else table.insert(vacated, field) end
    end
  elseif kind == '\r' then
    redis.call('ZREM', TIMERS, member)
    redis.call('HDEL', GONE, string.sub(member, 2))
  else
    local claim = load_claim(member)
    if claim and claim.n == 0 then
      remove_claim(member, claim, true)
    else
      redis.call('ZREM', TIMERS, member)
    end
  end
end
local s = seq()
for _, session in ipairs(vacated) do emit('session_vacated', session, s) end
if workspace then emit('workspace_vacated', nil, s) end
return next_deadline()
