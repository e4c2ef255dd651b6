-- wrk script: GET objects {prefix}-0 .. {prefix}-(count-1) with Zipf-distributed popularity
-- (rank r is asked for in proportion to 1 / r^s); ranks are spread over the objects by a
-- fixed permutation, so the hot objects are not the first ones written.
-- usage: wrk -s zipf.lua URL -- PREFIX COUNT S [recent|spread]
-- recent: rank r is object count - r (the r-th newest of objects written in index order).
local prefix, count, cdf, recent
function init(args)
  prefix = args[1]
  count = tonumber(args[2])
  local s = tonumber(args[3])
  recent = (args[4] or "recent") == "recent"
  cdf = {}
  local total = 0
  for r = 1, count do
    total = total + 1 / r ^ s
    cdf[r] = total
  end
  for r = 1, count do
    cdf[r] = cdf[r] / total
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
function request()
  local u = math.random()
  local lo, hi = 1, count
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  local i
  if recent then
    i = count - lo
  else
    -- 7919 is prime: a permutation of 0..count-1 whenever count is not a multiple of it.
    i = ((lo - 1) * 7919) % count
  end
  return wrk.format("GET", prefix .. "-" .. i)
end
