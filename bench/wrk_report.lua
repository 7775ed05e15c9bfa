-- wrk script: POSTs a JSON body with a Bearer key; prints one parseable line when done.
--   wrk -t1 -c16 -d8s --latency -s bench/wrk_report.lua URL -- BODY_FILE SECRET
-- The body's "#00000000" marker becomes the request's sequence number ("#%08d"), so no two
-- requests carry the same bytes. Latencies are in microseconds (wrk's own histogram), which
-- is printed whole so that runs can be pooled.

local head, tail
local sequence = 0

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local body = file:read("*a")
   file:close()
   local at = assert(body:find("#00000000", 1, true), "the body has no #00000000 marker")
   head, tail = body:sub(1, at - 1), body:sub(at + 9)
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. args[2]
end

function request()
   sequence = sequence + 1
   return wrk.format(nil, nil, nil, head .. string.format("#%08d", sequence % 100000000) .. tail)
end

function done(summary, latency, requests)
   local e = summary.errors
   local histogram = {}
   for i = 1, #latency do  -- the non-empty buckets of wrk's 1-us histogram: [us, count]
      local value, count = latency(i)
      histogram[i] = string.format("[%d, %d]", value, count)
   end
   io.write(string.format(
      'WRK_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, ' ..
      '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
      '"p50_us": %d, "p99_us": %d, "histogram": [%s]}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
      e.timeout, latency:percentile(50), latency:percentile(99), table.concat(histogram, ", ")))
end
