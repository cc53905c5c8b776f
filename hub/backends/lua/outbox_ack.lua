-- The batch was delivered (ARGV: group, consumer, the batch's ids): acknowledge it, then trim
-- what every group has acknowledged. Returns {depth, oldest age ms}.
local ids = {}
for i = 3, #ARGV do table.insert(ids, ARGV[i]) end
redis.call('XACK', OUTBOX, G, unpack(ids))
-- The stream keeps what some group still needs: its first pending entry, or what follows
-- the last entry it read.
local keep = nil
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
for _, group in ipairs(redis.call('XINFO', 'GROUPS', OUTBOX)) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local need
  if tonumber(info['pending']) > 0 then
    need = redis.call('XPENDING', OUTBOX, info['name'])[2]
  else
    local ms, sq = string.match(info['last-delivered-id'], '^(%d+)-(%d+)$')
    need = ms .. '-' .. string.format('%.0f', tonumber(sq) + 1)
  end
  if not keep or older(need, keep) then keep = need end
end
if keep then redis.call('XTRIM', OUTBOX, 'MINID', keep) end
local b = backlog()
return {b[1], b[2]}
