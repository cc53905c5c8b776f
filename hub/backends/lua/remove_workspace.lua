-- Forget the workspace and all its claims (ARGV: workspace, close code); every node closes its
-- sockets of it.
-- (HOOKS too: a deleted workspace sends no more webhook events.)
redis.call('DEL', META, COUNTS, CLAIMS, TIMERS, STREAMS, NODES, USERS, PEOPLE, ARRIVE, HOOKS, GONE)
redis.call(PUBLISH, CHANNEL, cjson.encode({x = {k = '', code = tonumber(ARGV[2])}}))
return 1
