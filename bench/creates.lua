-- wrk script for bench.throughput: the same request again and again, counting the answers.
-- With BODY (the name of a file holding a JSON resource or Bundle) each request POSTs it to the
-- URL given to wrk (e.g. http://127.0.0.1:8080/fhir/Patient); without, each request is a GET.
-- Answers other than the status EXPECT (default 201) are counted as UNEXPECTED, socket errors
-- and timeouts (requests without an answer) as SOCKET_ERRORS. When done it prints these as
-- `NAME value` lines for bench/throughput.py, with latency percentiles in microseconds.
local expect = tonumber(os.getenv("EXPECT") or "201")
local body_file = os.getenv("BODY")

wrk.headers["Accept"] = "application/fhir+json"
if body_file then
  local file = assert(io.open(body_file, "rb"))
  wrk.method = "POST"
  wrk.body = file:read("*a")
  wrk.headers["Content-Type"] = "application/fhir+json"
  file:close()
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  unexpected = 0
end

function response(status, headers, body)
  if status ~= expect then
    unexpected = unexpected + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("unexpected")
  end
  local e = summary.errors
  io.write(string.format("UNEXPECTED %d\n", total))
  io.write(string.format("SOCKET_ERRORS %d\n", e.connect + e.read + e.write + e.timeout))
  for _, p in ipairs({50, 95, 99}) do
    io.write(string.format("P%d %d\n", p, latency:percentile(p)))
  end
  io.write(string.format("REQUESTS %d\nSECONDS %f\n", summary.requests, summary.duration / 1e6))
end
