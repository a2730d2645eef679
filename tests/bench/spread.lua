-- Spreads requests over every agent host listed in $HOSTS (one address per line).
local hosts = {}
for line in io.lines(os.getenv("HOSTS")) do
  hosts[#hosts + 1] = line .. ".bench.test"
end
local i = 0
request = function()
  i = i % #hosts + 1
  return wrk.format("GET", "/", { Host = hosts[i] })
end
