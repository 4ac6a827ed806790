#!/usr/bin/env bash
# Start the whole system on this machine, in the foreground: embedded Valkey (unless
# REDIS_URL is set), the backend on :8000 and a scikit-learn worker. Ctrl-C stops it all.
#
#   ./scripts/run_local.sh                 # WORKERS=sklearn by default
#   REDIS_URL=redis://127.0.0.1:6379/0 ./scripts/run_local.sh
#   PORT=8080 ./scripts/run_local.sh
set -euo pipefail
source "$(dirname "$0")/lib/envs.sh"
ensure_uv
check_disk 1024

WORKERS="${WORKERS:-sklearn}"
echo "preparing environments (first run downloads packages)..."
BACKEND_ENV=$(sync_env backend)
args=(up --repo-root "$REPO_ROOT" --backend-python "$BACKEND_ENV/bin/python" --port "${PORT:-8000}")
for runtime in ${WORKERS//,/ }; do
  extra=${runtime//[-.]/_}               # pytorch-2.1-gpu -> pytorch_2_1_gpu (the uv extra)
  args+=(--worker "$runtime=$(sync_env ai-worker "$extra")/bin/python")
done
[ -n "${REDIS_URL:-}" ] && args+=(--redis-url "$REDIS_URL")
exec "$BACKEND_ENV/bin/python" -m trainyard.cli "${args[@]}"
