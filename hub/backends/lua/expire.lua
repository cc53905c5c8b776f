-- Fire the due holds and graces (ARGV: workspace). Each fires once, on whichever node runs
-- this first; they count nowhere, so nothing moves. Returns the next deadline, or -1.
if not known() then return -1 end
for _, client in ipairs(redis.call('ZRANGEBYSCORE', TIMERS, '-inf', now_ms())) do
  local claim = load_claim(client)
  if claim and claim.n == 0 then
    remove_claim(client, claim)
  else
    redis.call('ZREM', TIMERS, client)
  end
end
return next_deadline()
