#!/usr/bin/env bash
# Print the path of this clone's environment for a project (and a runtime's extra), building
# or updating it first from the lock (scripts/lib/envs.sh: outside the clone, per clone and
# per hash of its pins). For the benchmarks and for running one tool by hand:
#
#   "$(./scripts/env.sh backend)/bin/python" bench/bench_serving.py
#   "$(./scripts/env.sh ai-worker sklearn)/bin/python" -m pytest ai-worker/tests -q
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/envs.sh"
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 PROJECT [EXTRA]   (backend, ai-worker sklearn, core, bench)" >&2; exit 2; }
ensure_uv
sync_env "$@"
