-- Replace a reservation by actual usage in every line, and record the usage: one round trip.
--
-- KEYS[1]     string: "settled" marker of this reservation id (makes settling idempotent)
-- KEYS, then per line i, three keys as in reserve.lua (settled buckets, pending, expiry),
--   at KEYS[1 + 3i - 2], KEYS[1 + 3i - 1], KEYS[1 + 3i]
-- KEYS[#KEYS - 3]  stream: the tenant's usage log (capped by length)
-- KEYS[#KEYS - 2]  hash: the tenant's rollup for the usage's hour (field "model|provider|what")
-- KEYS[#KEYS - 1]  sorted set: the hours that have a rollup (member and score = hour id)
-- KEYS[#KEYS]      string: present while some instance holds a request of the tenant; then
--                  the settlement is published (ARGV[#ARGV], the channel) to wake it
-- ARGV: reservation id, marker ttl (s; 0: no marker, for usage that reserved nothing), then per line 4 values: actual amount, current bucket,
--   oldest bucket in the window, keep (s: how long the settled buckets must live);
--   then the usage: has_usage (1|0), stream maxlen, json entry, rollup prefix "model|provider|",
--   input, output, cached, cost (nano-dollars), rollup keep (s), hour id.
-- Reply: 1 if settled now, 0 if it had been settled before (nothing changed).

local rid = ARGV[1]
local marker_ttl = tonumber(ARGV[2])
if marker_ttl > 0 and not redis.call('SET', KEYS[1], '1', 'NX', 'EX', marker_ttl) then
  return 0
end
local n = (#KEYS - 5) / 3
for i = 1, n do
  local settled, pending, expiry = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  local base = 2 + (i - 1) * 4
  local amount = tonumber(ARGV[base + 1])
  local bucket = tonumber(ARGV[base + 2])
  local oldest = tonumber(ARGV[base + 3])
  local held = redis.call('HGET', pending, rid)
  if held then
    local reserved = string.match(held, '^(%-?%d+):')
    redis.call('HINCRBY', pending, '_sum', -tonumber(reserved))
    redis.call('HDEL', pending, rid)
    redis.call('ZREM', expiry, rid)
  end
  -- usage counts from when it settles (when the upstream billed it), never from the earlier
  -- bucket it was reserved in: a long or background request must not leave a window early
  if amount ~= 0 then
    local keep = tonumber(ARGV[base + 4])
    redis.call('ZINCRBY', settled, amount, bucket)
    redis.call('EXPIRE', settled, keep)
    if tonumber(redis.call('HGET', pending, '_oldest')) == oldest then
      redis.call('HINCRBY', pending, '_settled', amount)
    else
      settled_total(settled, pending, oldest, true)  -- counts the amount just added
    end
    keep_at_least(pending, keep)
  end
end
local u = 2 + n * 4
if ARGV[u + 1] == '1' then
  redis.call('XADD', KEYS[#KEYS - 3], 'MAXLEN', ARGV[u + 2], '*', 'u', ARGV[u + 3])
  local rollup, prefix = KEYS[#KEYS - 2], ARGV[u + 4]
  redis.call('HINCRBY', rollup, prefix .. 'in', ARGV[u + 5])
  redis.call('HINCRBY', rollup, prefix .. 'out', ARGV[u + 6])
  redis.call('HINCRBY', rollup, prefix .. 'cached', ARGV[u + 7])
  redis.call('HINCRBY', rollup, prefix .. 'cost', ARGV[u + 8])
  redis.call('HINCRBY', rollup, prefix .. 'n', 1)
  redis.call('EXPIRE', rollup, tonumber(ARGV[u + 9]))
  redis.call('ZADD', KEYS[#KEYS - 1], ARGV[u + 10], ARGV[u + 10])
  redis.call('ZREMRANGEBYSCORE', KEYS[#KEYS - 1], '-inf', tonumber(ARGV[u + 10]) - 400 * 24)
end
if n > 0 and redis.call('EXISTS', KEYS[#KEYS]) == 1 then
  redis.call('PUBLISH', ARGV[#ARGV], '1')
end
return 1
