-- Replace a reservation by actual usage in every line, and record the usage: one round trip.
--
-- KEYS[1]     string: "settled" marker of this reservation id (makes settling idempotent)
-- KEYS, then per line i, three keys as in reserve.lua (settled buckets, pending, the line's
--   old expiry set), at KEYS[1 + 3i - 2], KEYS[1 + 3i - 1], KEYS[1 + 3i]
-- KEYS[#KEYS - 6]  sorted set: the tenant's reservations by expiry
-- KEYS[#KEYS - 5]  stream: the tenant's usage log (capped by length)
-- KEYS[#KEYS - 4]  hash: the tenant's rollup for the usage's hour (field "model|provider|what")
-- KEYS[#KEYS - 3]  sorted set: the hours that have a rollup (member and score = hour id)
-- KEYS[#KEYS - 2]  hash: the tenant's end users for the usage's day (field: the end user, ""
--                  for those past the cap together; value "cost:input:output:requests")
-- KEYS[#KEYS - 1]  sorted set: the days that have end users (member and score = day id)
-- KEYS[#KEYS]      string: present while some instance holds a request of the tenant; then
--                  the settlement is published (ARGV[#ARGV], the channel) to wake it
-- ARGV: reservation id, marker ttl (s; 0: no marker, for usage that reserved nothing); the
--   number of windows the lines meet, then per window 3 values: current bucket, oldest bucket
--   in the window, keep (s: how long the settled buckets must live); then per line 2 values:
--   actual amount, its window (1-based);
--   then the usage: has_usage (1|0), stream maxlen, json entry, rollup prefix "model|provider|",
--   input, output, cached, cost (nano-dollars), rollup keep (s), hour id; then the end user
--   ("" for none), day id, the most end users with a row of their own per day, days kept.
-- Reply: 1 if settled now, 0 if it had been settled before (nothing changed).

-- Adds one request to an end user's row of the day: a row of their own while the day has fewer
-- than `most` end users, else the row of those past the cap (field "").
local function add_end_user(day, end_user, most, cost, input, output, keep)
  local field = end_user
  if redis.call('HEXISTS', day, field) == 0 then
    local named = redis.call('HLEN', day) - redis.call('HEXISTS', day, '')
    if named >= most then field = '' end
  end
  local c, i, o, r = 0, 0, 0, 0
  local row = redis.call('HGET', day, field)
  if row then
    c, i, o, r = string.match(row, '^(%d+):(%d+):(%d+):(%d+)$')
  end
  redis.call('HSET', day, field, string.format('%.0f:%.0f:%.0f:%.0f', tonumber(c) + tonumber(cost),
             tonumber(i) + tonumber(input), tonumber(o) + tonumber(output), tonumber(r) + 1))
  redis.call('EXPIRE', day, keep)
end

local rid = ARGV[1]
local marker_ttl = tonumber(ARGV[2])
if marker_ttl > 0 and not redis.call('SET', KEYS[1], '1', 'NX', 'EX', marker_ttl) then
  return 0
end
local n = (#KEYS - 8) / 3
local windows = {}
for k = 1, tonumber(ARGV[3]) do
  local at = 3 + (k - 1) * 3
  windows[k] = {tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])}
end
local first_line = 3 + #windows * 3
for i = 1, n do
  local settled, pending = KEYS[3 * i - 1], KEYS[3 * i]
  local base = first_line + (i - 1) * 2
  local amount = tonumber(ARGV[base + 1])
  local window = windows[tonumber(ARGV[base + 2])]
  local bucket, oldest, keep = window[1], window[2], window[3]
  local state = redis.call('HMGET', pending, rid, '_sum', '_settled', '_oldest')
  local sum = nil
  if state[1] then
    sum = int(tonumber(state[2] or '0') - tonumber(string.match(state[1], '^(%-?%d+):')))
    redis.call('HDEL', pending, rid)
  end
  -- usage counts from when it settles (when the upstream billed it), never from the earlier
  -- bucket it was reserved in: a long or background request must not leave a window early
  if amount ~= 0 then
    redis.call('ZINCRBY', settled, amount, bucket)
    redis.call('EXPIRE', settled, keep)
    if state[3] and tonumber(state[4]) == oldest then
      local total = int(tonumber(state[3]) + amount)
      if sum then
        redis.call('HSET', pending, '_sum', sum, '_settled', total)
      else
        redis.call('HSET', pending, '_settled', total)
      end
    else
      if sum then redis.call('HSET', pending, '_sum', sum) end
      settled_total(settled, pending, oldest, true)  -- counts the amount just added
    end
    keep_at_least(pending, keep)
  elseif sum then
    redis.call('HSET', pending, '_sum', sum)
  end
end
if marker_ttl > 0 and n > 0 then
  redis.call('ZREM', KEYS[#KEYS - 6], hold_member(rid, 3, n))
end
local u = first_line + n * 2
if ARGV[u + 1] == '1' then
  redis.call('XADD', KEYS[#KEYS - 5], 'MAXLEN', ARGV[u + 2], '*', 'u', ARGV[u + 3])
  local rollup, prefix = KEYS[#KEYS - 4], ARGV[u + 4]
  redis.call('HINCRBY', rollup, prefix .. 'in', ARGV[u + 5])
  redis.call('HINCRBY', rollup, prefix .. 'out', ARGV[u + 6])
  redis.call('HINCRBY', rollup, prefix .. 'cached', ARGV[u + 7])
  redis.call('HINCRBY', rollup, prefix .. 'cost', ARGV[u + 8])
  redis.call('HINCRBY', rollup, prefix .. 'n', 1)
  redis.call('EXPIRE', rollup, tonumber(ARGV[u + 9]))
  local days_kept = tonumber(ARGV[u + 14])
  -- the indexes of hours and days are trimmed when they gain one: not on every settlement
  if redis.call('ZADD', KEYS[#KEYS - 3], ARGV[u + 10], ARGV[u + 10]) == 1 then
    local oldest_hour = tonumber(ARGV[u + 10]) - days_kept * 24
    redis.call('ZREMRANGEBYSCORE', KEYS[#KEYS - 3], '-inf', oldest_hour)
  end
  if ARGV[u + 11] ~= '' then
    add_end_user(KEYS[#KEYS - 2], ARGV[u + 11], tonumber(ARGV[u + 13]), ARGV[u + 8], ARGV[u + 5],
                 ARGV[u + 6], days_kept * 86400)
    if redis.call('ZADD', KEYS[#KEYS - 1], ARGV[u + 12], ARGV[u + 12]) == 1 then
      redis.call('ZREMRANGEBYSCORE', KEYS[#KEYS - 1], '-inf', tonumber(ARGV[u + 12]) - days_kept)
    end
  end
end
if n > 0 and redis.call('EXISTS', KEYS[#KEYS]) == 1 then
  redis.call('PUBLISH', ARGV[#ARGV], '1')
end
return 1
