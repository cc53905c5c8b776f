-- The workspace's presence (ARGV: workspace): {seq, online, flat counts}.
require_workspace()
return snapshot()
