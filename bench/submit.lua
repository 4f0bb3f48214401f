-- wrk script for bench/submit.py: JSON POSTs of appeals, every e-mail address unique
-- (per run, thread and request), so that each request is a new supporter.
--   wrk -t2 -c32 -d10s -s bench/submit.lua URL -- RUN_ID
-- Prints one JSON line at the end: requests, seconds, non-2xx answers, latency (ms).

local threads = {}
local counter = 0
local run = "run"
local id = 0

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  run = args[1] or "run"
  id = wrk.thread:get("id")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

local countries = { "GB", "DE", "FR", "ES", "US", "MX", "AR", "IT", "NL", "SE" }

function request()
  counter = counter + 1
  local body = string.format(
    '{"name": "Supporter %d-%d", "email": "w%s-%d-%d@example.org", "language": "%s", '
      .. '"country": "%s", "message": "Please act now.", "consent": true}',
    id, counter, run, id, counter, (counter % 2 == 0) and "en" or "es",
    countries[counter % #countries + 1]
  )
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "bad_status": %d, "socket_errors": %d, '
      .. '"p50_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f}\n',
    summary.requests, summary.duration / 1e6, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3
  ))
end
