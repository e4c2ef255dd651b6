-- wrk script: GET random objects {prefix}-0 .. {prefix}-(count-1)
-- usage: wrk -s get.lua URL -- PREFIX COUNT
local prefix, count
function init(args)
  prefix = args[1]
  count = tonumber(args[2])
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end
function request()
  return wrk.format("GET", prefix .. "-" .. math.random(0, count - 1))
end
