-- Renew this consumer's claim on its batch (ARGV: group, consumer, the batch's ids, oldest
-- first): kept while its last entry is pending here; lost once another node took it over or
-- acknowledged it. Only entries still in the stream are renewed: an XCLAIM of one the queue
-- bound trimmed away would drop it from the pending list, and a node taking the batch over
-- later counts it as dropped. Returns {1 kept | 0 lost, depth, oldest age ms}.
local ids = {}
for i = 3, #ARGV do table.insert(ids, ARGV[i]) end
local last = ids[#ids]
local kept = 0
local owner = redis.call('XPENDING', OUTBOX, G, last, last, 1)
if owner[1] and owner[1][2] == C then
  kept = 1
  local alive = {}
  for _, entry in ipairs(redis.call('XRANGE', OUTBOX, ids[1], last, 'COUNT', #ids)) do
    table.insert(alive, entry[1])
  end
  if #alive > 0 then
    table.insert(alive, 'JUSTID')  -- (unpack expands only in the last place)
    redis.call('XCLAIM', OUTBOX, G, C, 0, unpack(alive))
  end
end
local b = backlog()
return {kept, b[1], b[2]}
