-- wrk script for bench_unsubscribe.py: each thread POSTs its own share of the tokens, each once,
-- as a mailbox provider does (RFC 8058, multipart/form-data), and reports a JSON summary.
-- Usage: wrk -t T -c C -d D -s bench_unsubscribe.lua URL -- PATHS_FILE T ANSWERED_FILE PATTERN [PAUSE_MS]
-- PAUSE_MS (optional): each connection waits about that long (0.5-1.5 times, at random)
-- before each request, which offers a steady rate of C * 1000 / PAUSE_MS requests a second.
-- PATTERN (a Lua pattern with one capture) picks what names the unsubscribe in a 200 answer;
-- the captures go to ANSWERED_FILE, one a line, so the caller can check each in the database.

local threads = {}
local boundary = "----wipbench7MA4YWxkTrZu0gW"
local body = "--" .. boundary .. "\r\n"
  .. 'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
  .. "One-Click\r\n--" .. boundary .. "--\r\n"
local headers = {["Content-Type"] = "multipart/form-data; boundary=" .. boundary,
                 ["User-Agent"] = "bench-mail-provider/1.0"}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  paths = {}
  local share, every, index = thread_number - 1, tonumber(args[2]), 0
  for line in io.lines(args[1]) do
    if index % every == share then paths[#paths + 1] = line end
    index = index + 1
  end
  issued, answered_200, answered_other, redirects = 0, 0, 0, 0
  answered_file, pattern, answered = args[3], args[4], {}
  pause_ms = tonumber(args[5] or "0")
end

function delay()
  if pause_ms > 0 then return pause_ms * (0.5 + math.random()) end
  return 0
end

function request()
  -- wrk calls request() once per thread before connecting and never sends that one
  if not primed then
    primed = true
    return wrk.format("GET", "/healthz")
  end
  issued = issued + 1
  -- past the last token a path repeats (harmless: an unsubscribe is idempotent); the report says so
  return wrk.format("POST", paths[((issued - 1) % #paths) + 1], headers, body)
end

function response(status, response_headers, response_body)
  if status == 200 then
    answered_200 = answered_200 + 1
    answered[#answered + 1] = response_body:match(pattern) or "?"
  else
    answered_other = answered_other + 1
    if status >= 300 and status < 400 then redirects = redirects + 1 end
  end
end

function done(summary, latency, requests)
  local issued_list, ok, other, redirected = {}, 0, 0, 0
  -- done() runs in wrk's main Lua state, which never sees the arguments: ask a thread
  local file = assert(io.open(threads[1]:get("answered_file"), "w"))
  for _, thread in ipairs(threads) do
    issued_list[#issued_list + 1] = tostring(thread:get("issued"))
    ok = ok + thread:get("answered_200")
    other = other + thread:get("answered_other")
    redirected = redirected + thread:get("redirects")
    for _, name in ipairs(thread:get("answered")) do file:write(name, "\n") end
  end
  file:close()
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
      .. '"socket_errors": %d, "timeouts": %d, "answered_200": %d, "answered_other": %d, '
      .. '"redirects": %d, "issued": [%s]}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect + e.read + e.write, e.timeout, ok, other, redirected, table.concat(issued_list, ", ")))
end
