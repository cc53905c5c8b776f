-- Forget the workspace and all its claims (ARGV: workspace, close code); every node closes its
-- sockets of it.
redis.call('DEL', META, COUNTS, CLAIMS, TIMERS, STREAMS, NODES, USERS, PEOPLE, ARRIVE)
if HOOKS then redis.call('DEL', HOOKS) end  -- a deleted workspace sends nothing more
redis.call(PUBLISH, CHANNEL, cjson.encode({x = {k = '', code = tonumber(ARGV[2])}}))
return 1
