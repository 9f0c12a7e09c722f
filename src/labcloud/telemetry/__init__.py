"""Telemetry: Prometheus metrics (:mod:`.metrics` counted in this process, :mod:`.gauges` read from the
database at scrape time), the per-request middleware that counts requests and names them with a request id
(:mod:`.asgi`), and the log formats (:mod:`.logs`)."""
