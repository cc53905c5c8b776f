-- The workspace's presence (ARGV: workspace): {seq, online, flat counts, online_users,
-- flat users}.
require_workspace()
return snapshot()
