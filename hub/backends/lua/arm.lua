-- A timer was armed in a workspace (KEYS[1] = hub:timers; ARGV: workspace, deadline).
index_timer(KEYS[1], ARGV[1], tonumber(ARGV[2]))
return 1
