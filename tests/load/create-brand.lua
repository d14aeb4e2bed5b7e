-- wrk script: POST /workflows/create-brand/runs with a new brand each time.
--   wrk -t2 -c32 -d15s --latency -s tests/load/create-brand.lua http://127.0.0.1:8080
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"input": {"name": "Brand %d-%d"}}', math.random(1, 1e9), counter)
  return wrk.format(nil, "/workflows/create-brand/runs", nil, body)
end
local errors = 0
response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("non-200 responses: %d\n", summary.errors.status))
  for _, p in pairs({ 50, 90, 99 }) do
    io.write(string.format("p%d: %.2f ms\n", p, latency:percentile(p) / 1000))
  end
end
