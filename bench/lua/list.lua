-- GET one page of 20 items from the seeded collection.
--   BENCH_PATH  path + query of the list request
--   BENCH_AUTH  Authorization header value
local c = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

wrk.method = "GET"
wrk.path = c.env("BENCH_PATH")
wrk.headers["Authorization"] = c.env("BENCH_AUTH")
wrk.headers["Accept"] = "application/json"

setup = c.setup
done = c.done
