-- One request, over and over: the harness (bench/servers.py) names it in the environment.
--   BENCH_METHOD, BENCH_BODY_FILE (may be empty: no body), BENCH_HEADERS ("Name: value" lines)
--   BENCH_EXPECT   a plain substring every answer must contain (XML answers are HTTP 200
--                  even when they refuse, so the status code alone proves nothing)
--   BENCH_KEY      non-empty: every request carries an Idempotency-Key of its own
-- done() prints one line, "BENCH {json}", that the harness reads.

wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body_file = os.getenv("BENCH_BODY_FILE") or ""
if body_file ~= "" then
  local file = assert(io.open(body_file, "rb"))
  wrk.body = file:read("*a")
  file:close()
end
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  wrk.headers[name] = value
end
local expect = os.getenv("BENCH_EXPECT") or ""

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

bad = 0

if (os.getenv("BENCH_KEY") or "") ~= "" then
  -- Unique across threads and runs: the start time, the thread, a counter.
  local run = tostring(os.time())
  local sent = 0
  function request()
    sent = sent + 1
    wrk.headers["Idempotency-Key"] = string.format("bench-%s-%d-%d", run, thread_id, sent)
    return wrk.format()
  end
end

function response(status, headers, body)
  if status >= 300 or not body:find(expect, 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local unexpected = 0
  for _, thread in ipairs(threads) do
    unexpected = unexpected + thread:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"errors": %d, "unexpected": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout, unexpected))
end
