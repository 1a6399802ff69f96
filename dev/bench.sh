#!/usr/bin/env bash
# `make bench`: syncd vs the at-least-once peer, the naive baseline, the raw ceiling and the
# stack's CPU ceiling on the local stack (bench/run.py). Sizes: BENCH_ORDERS (orders per
# throughput run; default: calibrated to BENCH_SECONDS), BENCH_LATENCY_MS (50),
# BENCH_SLOW_LATENCY_MS (500, a real platform), BENCH_NAIVE_ORDERS, BENCH_NAIVE_SECONDS,
# BENCH_FRESH_RATE, BENCH_FRESH_SECONDS, BENCH_BACKLOG_EVENTS (default 1000000), BENCH_BACKLOG_SECONDS, BENCH_DECODE_EVENTS,
# BENCH_TIMEOUT. Results: bench/results.json (BENCH_OUT) and a table on stdout.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec .venv/bin/python bench/run.py "$@"
