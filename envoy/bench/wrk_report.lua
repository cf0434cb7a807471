-- wrk's done() hook for `make bench-envoy`: writes the run's totals, errors and
-- latency histogram (microseconds -> count) to the file named by $WRK_REPORT, so
-- that runs can be pooled. wrk has already applied its coordinated-omission
-- correction to this histogram; envoy/bench/bench_envoy.py undoes it.
function done(summary, latency, requests)
  local f = assert(io.open(os.getenv("WRK_REPORT"), "w"))
  local e = summary.errors
  f:write(string.format("requests %d\nduration_us %d\nbytes %d\n",
    summary.requests, summary.duration, summary.bytes))
  f:write(string.format("errors %d %d %d %d %d\n",
    e.connect, e.read, e.write, e.status, e.timeout))
  for i = 1, #latency do
    local value, count = latency(i)
    f:write(string.format("latency %d %d\n", value, count))
  end
  f:close()
end
