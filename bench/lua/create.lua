-- POST one new item (authenticated) with a JSON body; every request has a
-- distinct title/url/metadata.
--   BENCH_PATH   create path, e.g. /api/v1/collections/<id>/items
--   BENCH_EXTRA  optional extra JSON members appended to the body, starting
--                with a comma (PocketBase: ,"collection_ref":"write")
--   BENCH_AUTH   Authorization header value
local c = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local path = c.env("BENCH_PATH")
local extra = c.env("BENCH_EXTRA", "")
local headers = {
  ["Authorization"] = c.env("BENCH_AUTH"),
  ["Content-Type"] = "application/json",
  ["Accept"] = "application/json",
}
local body_text = "Load-test item created by wrk. Lorem ipsum dolor sit amet, " ..
  "consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore."
local n = 0
local run = os.time()

setup = c.setup
done = c.done

function request()
  n = n + 1
  local body = string.format(
    '{"title":"wrk item %d-%d-%d","body":"%s","source_url":"https://example.com/wrk/%d/%d",' ..
    '"tags":["bench","wrk","t%d"],"metadata":{"n":%d,"thread":%d,"origin":"wrk"}%s}',
    run, tid or 0, n, body_text, tid or 0, n, n % 10, n, tid or 0, extra)
  return wrk.format("POST", path, headers, body)
end
