#!/usr/bin/env bash
# Start the whole system on this machine, in the foreground: embedded Valkey (unless
# REDIS_URL is set), the backend on :8000 and one worker per CPU runtime (scikit-learn,
# PyTorch 2.1, PyTorch 2.0, TensorFlow), so every example in the README runs. Ctrl-C stops it.
# The first run builds the runtime environments (~11 GB, mostly the CUDA builds of torch
# 2.0/2.1 that PyPI serves for Python 3.11); later runs reuse them.
#
#   ./scripts/run_local.sh                 # all CPU runtimes
#   WORKERS=sklearn ./scripts/run_local.sh # just scikit-learn: small and quick to set up
#   WORKERS=sklearn,pytorch-2.1-gpu ./scripts/run_local.sh   # on a machine with a GPU
#   REDIS_URL=redis://127.0.0.1:6379/0 ./scripts/run_local.sh
#   PORT=8080 ./scripts/run_local.sh
set -euo pipefail
source "$(dirname "$0")/lib/envs.sh"
ensure_uv
WORKERS="${WORKERS:-sklearn,pytorch-2.1,pytorch-2.0,tensorflow}"
case "$WORKERS" in *pytorch*) check_disk 12000 ;; *) check_disk 1024 ;; esac
# Several workers share this machine's cores: split them, or jobs oversubscribe the CPU.
n_workers=$(echo "$WORKERS" | tr ',' ' ' | wc -w)
threads=$(( $(nproc) / (n_workers > 0 ? n_workers : 1) ))
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( threads > 0 ? threads : 1 ))}"
echo "preparing environments (first run downloads packages)..."
BACKEND_ENV=$(sync_env backend)
args=(up --repo-root "$REPO_ROOT" --backend-python "$BACKEND_ENV/bin/python" --port "${PORT:-8000}")
for runtime in ${WORKERS//,/ }; do
  extra=${runtime//[-.]/_}               # pytorch-2.1-gpu -> pytorch_2_1_gpu (the uv extra)
  args+=(--worker "$runtime=$(sync_env ai-worker "$extra")/bin/python")
done
[ -n "${REDIS_URL:-}" ] && args+=(--redis-url "$REDIS_URL")
exec "$BACKEND_ENV/bin/python" -m trainyard.cli "${args[@]}"
