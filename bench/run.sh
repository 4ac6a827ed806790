#!/usr/bin/env bash
# Run a benchmark in the benchmarks' own environment (bench/pyproject.toml + bench/uv.lock:
# the core by path, Dramatiq, taskiq, taskiq-redis, redis-py with hiredis). The environment is
# built on first use outside the clone, in a folder named by a hash of the lock
# (scripts/lib/envs.sh: sync_env), and reused while the lock is unchanged. run_local.sh and
# test.sh never build it.
#
#   ./bench/run.sh bench_peers.py --jobs 5000 --repeat 3
#   ./bench/run.sh bench_fleet.py --workers 10,100,500
#   ./bench/run.sh bench_engine.py
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/envs.sh"
ensure_uv
[ $# -ge 1 ] || { echo "usage: bench/run.sh SCRIPT.py [args...]" >&2; exit 2; }
script=$1; shift
[ -f "$REPO_ROOT/bench/$script" ] || { echo "no such benchmark: bench/$script" >&2; exit 2; }
check_disk 300
BENCH_ENV=$(sync_env bench) || exit 1
# One thread per library: the server, the submitter and the consumer share the cores.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1
exec "$BENCH_ENV/bin/python" "$REPO_ROOT/bench/$script" "$@"
