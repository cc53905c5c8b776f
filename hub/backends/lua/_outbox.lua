-- Shared prelude of the outbox scripts (hub/backends/redis/scripts.py prepends it): one receiver's
-- view of the webhook outbox, a Redis Stream with one consumer group per receiver.
--
-- KEYS: 1 the outbox stream (hub:webhooks), 2 the count of events ever added (hub:webhooks:n),
--       3 per group: the 'n' and the stream id of the last entry it read (hub:webhooks:read)
-- ARGV: 1 the group (the receiver's URL), 2 the consumer (the node), then each script's own.
--
-- At most one batch of a group is in flight at a time: a batch is taken only when nothing of
-- the group is pending, or by taking over a pending batch whose node has not renewed it for
-- the takeover bound (XAUTOCLAIM). So entries are delivered in stream order, which is the
-- order the workspace scripts produced them in (seq order for each workspace).
local OUTBOX, MADE, READ = KEYS[1], KEYS[2], KEYS[3]
local G, C = ARGV[1], ARGV[2]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function id_ms(id)
  return tonumber(string.match(id, '^(%d+)'))
end

-- {depth, age in ms of the oldest event not delivered (0: none)} for this group: pending
-- entries, and the entries after the last one read (at most what the stream still holds).
local function backlog()
  local pending = redis.call('XPENDING', OUTBOX, G)
  local made = tonumber(redis.call('GET', MADE) or '0')
  local last_n = tonumber(redis.call('HGET', READ, G .. '\nn') or '0')
  local unread = math.max(0, math.min(made - last_n, redis.call('XLEN', OUTBOX) - pending[1]))
  local oldest = 0
  if pending[1] > 0 then
    oldest = id_ms(pending[2])
  else
    local last_id = redis.call('HGET', READ, G .. '\nid') or '0-0'
    local first = redis.call('XRANGE', OUTBOX, '(' .. last_id, '+', 'COUNT', 1)
    if first[1] then oldest = id_ms(first[1][1]) end
  end
  local age = 0
  if oldest > 0 then age = math.max(0, now_ms() - oldest) end
  return {pending[1] + unread, age}
end

-- {id, event JSON, ...} of stream entries
local function flat(entries)
  local out = {}
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    if fields then
      for i = 1, #fields, 2 do
        if fields[i] == 'e' then
          table.insert(out, entry[1])
          table.insert(out, fields[i + 1])
        end
      end
    end
  end
  return out
end

local function field(entry, name)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end
