-- Current use of each line: settled buckets still in the window plus live reservations, and
-- the oldest bucket that use sits in. Read-only, so a status page never changes what it
-- reports on.
--
-- KEYS, per line i: the three keys of reserve.lua (settled buckets, pending, the line's old
--   expiry set)
-- ARGV: now, then per line: the oldest bucket index still in the window
-- Reply: {used_1, oldest_1, .., used_n, oldest_n}; oldest is -1 when nothing counts (a live
--   reservation counts from its own bucket, or from the window's start when that has left)

local now = tonumber(ARGV[1])
local reply = {}
for i = 1, #KEYS / 3 do
  local settled, pending, line_expiry = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local oldest = tonumber(ARGV[1 + i])
  local sum = tonumber(redis.call('HGET', pending, '_sum') or '0')
  local gone = {}  -- held by an earlier version, expired: its line's own set says so
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', line_expiry, '-inf', now)) do
    gone[id] = true
  end
  local first = -1
  local flat = redis.call('ZRANGE', settled, 0, -1, 'WITHSCORES')
  for j = 1, #flat, 2 do
    local bucket = tonumber(flat[j])
    if bucket >= oldest and tonumber(flat[j + 1]) > 0 and (first < 0 or bucket < first) then
      first = bucket
    end
  end
  local holds = redis.call('HGETALL', pending)
  for j = 1, #holds, 2 do
    local id = holds[j]
    if string.sub(id, 1, 1) ~= '_' then
      local amount, bucket, ends = string.match(holds[j + 1], '^(%-?%d+):(%-?%d+)[^|]*|?(.*)$')
      amount, bucket = tonumber(amount), math.max(tonumber(bucket), oldest)
      if gone[id] or (ends ~= '' and tonumber(ends) <= now) then
        sum = sum - amount  -- expired, not yet ended by a reserve
      elseif amount > 0 and (first < 0 or bucket < first) then
        first = bucket
      end
    end
  end
  reply[2 * i - 1] = sum + settled_total(settled, pending, oldest, false)
  reply[2 * i] = first
end
return reply
