-- GET one item by id; ids are picked at random from the seeder's list.
--   BENCH_IDS_FILE     one id per line (written by compare.py's seeder)
--   BENCH_PATH_PREFIX  path up to the id, e.g. /api/v1/items/
--   BENCH_PATH_SUFFIX  optional text after the id
--   BENCH_AUTH         Authorization header value
local c = dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local prefix = c.env("BENCH_PATH_PREFIX")
local suffix = c.env("BENCH_PATH_SUFFIX", "")
local headers = {
  ["Authorization"] = c.env("BENCH_AUTH"),
  ["Accept"] = "application/json",
}
local ids = {}

setup = c.setup
done = c.done

function init(args)
  local f = assert(io.open(c.env("BENCH_IDS_FILE"), "r"))
  for line in f:lines() do
    if #line > 0 then ids[#ids + 1] = line end
  end
  f:close()
  assert(#ids > 0, "ids file is empty")
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

function request()
  local id = ids[math.random(#ids)]
  return wrk.format("GET", prefix .. id .. suffix, headers)
end
