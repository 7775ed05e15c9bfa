-- True (1) for the first caller of a key until a time, so an alert fires once per window.
--
-- KEYS[1]  string: holds the time (s since the epoch) until which the mark stands
-- ARGV: now, until, keep (s: Redis-side expiry, only for cleaning up)
-- Reply: 1 if marked now, 0 if an unexpired mark was there.
-- "until" is compared with the caller's clock, not Redis's, so tests and backends agree.

local held = redis.call('GET', KEYS[1])
if held and tonumber(held) > tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
