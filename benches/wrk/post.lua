-- POST an OpenAI chat completion; used by benches/load.py.
-- Environment (read by every wrk thread):
--   BENCH_BODY  JSON request body (default: a 16-token non-stream gpt-4o-mini request)
--   BENCH_AUTH  bearer secret; sent as "Authorization: Bearer <secret>" when set
-- done() prints one machine-readable line: "BENCH_JSON {...}" (latencies in microseconds).

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
  or '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth ~= nil and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
