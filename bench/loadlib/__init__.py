"""The load generator behind bench/load.py, in stages a reader can open in order.

    options   the command line: pure parsers for --mix, --threshold, sizes, address ranges, sandbox files
    wire      bytes in, values out: request heads, response heads, chunked bodies, WebSocket frames,
              DNS queries, and which error kind an answer is (pure)
    hist      latency histograms and the per-second interval every figure is summed from (pure)
    conn      trio sockets (plain or TLS) and a buffered response reader; OS, TLS and timeout errors
              become a `LoadError(kind)` here, once
    scenarios one coroutine per scenario (small, newconn, download, upload, ws, sse, churn), and DNS
    admin     the admin API client: register, look up and remove sandboxes
    driver    one worker process: the open-loop scheduler or the closed-loop users, the DNS sender,
              and the per-second flush to the parent
    report    totals, percentiles, thresholds, the live progress line, the Markdown and JSON report
              and the PNG plots
    ceiling   what one generator process can produce against nginx (bench/README.md quotes it)

Theory of operation. The parent (bench/load.py) registers sandboxes if asked, forks `--procs` worker
processes and gives them one start time. Each worker runs trio and records every outcome into the
`Interval` of the second it happened in; once a second it sends those intervals to the parent, which
merges them by second, prints the progress line, and at the end sums them into the report. A request
counts as *sent* when it was due (its intended send time in open-loop mode, its start in closed-loop
mode) and ends exactly once: *answered* or an error of one kind. So `sent = answered + errors` holds in
every second summed, and an error is never hidden in a latency figure.
"""
