-- The next batch for this consumer (ARGV: group, consumer, count, takeover bound in ms):
-- new entries when nothing of the group is pending; else the pending ones, when their node
-- has not renewed them for the bound (it died or stalled); else nothing (another node is
-- delivering). Returns {flat {id, event JSON, ...}, dropped, depth, oldest age ms}; dropped:
-- entries the bound trimmed away before this group read them.
local count, bound = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.pcall('XGROUP', 'CREATE', OUTBOX, G, '0', 'MKSTREAM')  -- after Redis lost its data
local taken, dropped = {}, 0
local pending = redis.call('XPENDING', OUTBOX, G)
if pending[1] > 0 then
  -- Take over only from the oldest pending entry on (a batch is renewed as a whole, so it
  -- is idle as a whole: never a later part of it before an earlier one).
  local oldest = redis.call('XPENDING', OUTBOX, G, 'IDLE', bound, '-', '+', 1)
  if oldest[1] and oldest[1][1] == pending[2] then
    local claimed = redis.call('XAUTOCLAIM', OUTBOX, G, C, bound, '0-0', 'COUNT', count)
    taken = claimed[2]
    if claimed[3] then dropped = #claimed[3] end  -- trimmed while pending
  end
else
  local read = redis.call('XREADGROUP', 'GROUP', G, C, 'COUNT', count, 'STREAMS', OUTBOX, '>')
  if read and read[1] then taken = read[1][2] end
  if #taken > 0 then
    local last_n = tonumber(redis.call('HGET', READ, G .. '\nn') or '0')
    local first_n = tonumber(field(taken[1], 'n') or '0')
    if last_n > 0 and first_n > last_n + 1 then dropped = first_n - last_n - 1 end
    local last = taken[#taken]
    redis.call('HSET', READ, G .. '\nn', field(last, 'n') or '0', G .. '\nid', last[1])
  end
end
local b = backlog()
return {flat(taken), dropped, b[1], b[2]}
