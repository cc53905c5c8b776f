-- After an expiry sweep (KEYS[1] = hub:timers; ARGV: workspace, deadline swept, next or -1):
-- move the workspace's entry to its next deadline. If a timer was armed since (the entry
-- changed), keep that entry, only lowered to the next deadline when that is earlier.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local next_deadline = tonumber(ARGV[3])
if score and tonumber(score) == tonumber(ARGV[2]) then
  if next_deadline < 0 then
    redis.call('ZREM', KEYS[1], ARGV[1])
  else
    redis.call('ZADD', KEYS[1], next_deadline, ARGV[1])
  end
elseif next_deadline >= 0 then
  redis.call('ZADD', KEYS[1], 'LT', next_deadline, ARGV[1])
end
return 1
