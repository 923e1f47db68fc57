"""Prometheus metrics: what happens is counted where it happens (`recorded`, shared across
processes through prometheus_client's multiprocess files, `multiproc`), and what *is*
(jobs by state, queue depths, slots, rates, cost) is read at scrape time from Postgres
and Redis (`snapshot`), so that every process's /metrics shows the same truth."""
