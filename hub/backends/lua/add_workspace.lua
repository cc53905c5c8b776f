-- Make the workspace known (idempotent). Its seq starts at the Redis clock in microseconds, so
-- a workspace re-made after Redis lost its data continues above every seq it showed before.
ensure_workspace()
return 1
