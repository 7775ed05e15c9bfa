-- Current use of each line: settled buckets still in the window plus live reservations.
-- Read-only, so a status page never changes what it reports on.
--
-- KEYS, per line i: the three keys of reserve.lua (settled buckets, pending, expiry)
-- ARGV: now, then per line: the oldest bucket index still in the window
-- Reply: {used_1, .., used_n}

local now = tonumber(ARGV[1])
local reply = {}
for i = 1, #KEYS / 3 do
  local settled, pending, expiry = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local oldest = tonumber(ARGV[1 + i])
  local sum = tonumber(redis.call('HGET', pending, '_sum') or '0')
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now)) do
    local held = redis.call('HGET', pending, id)
    if held then sum = sum - tonumber(string.match(held, '^(%-?%d+)')) end
  end
  reply[i] = sum + settled_total(settled, pending, oldest, false)
end
return reply
