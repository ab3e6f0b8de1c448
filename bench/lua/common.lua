-- Shared helpers for the wrk scripts in this folder. Loaded with dofile()
-- from each script, so the scripts work from any working directory as long
-- as BENCH_LUA_DIR points here (compare.py sets it).
--
-- Environment:
--   BENCH_AUTH   full Authorization header value, e.g. "Bearer eyJ..."

local M = {}

function M.env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then
    if default == nil then
      error("missing environment variable " .. name)
    end
    return default
  end
  return v
end

-- Thread numbering: setup() runs in the main Lua state once per thread.
local next_id = 0
function M.setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
end

-- One machine-readable line, parsed by compare.py. Latencies are in
-- microseconds (wrk's unit).
function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
    '"errors_status":%d,"errors_timeout":%d,' ..
    '"lat_mean_us":%.1f,"lat_stdev_us":%.1f,"lat_min_us":%d,"lat_max_us":%d,' ..
    '"p50_us":%d,"p75_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end

return M
