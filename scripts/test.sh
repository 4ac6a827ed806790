#!/usr/bin/env bash
# Run the whole test suite: lint and types, then the core (queue engine), backend (API),
# ai-worker (supervisor, scikit-learn), runtimes (every seed runtime in its own environment:
# PyTorch 2.0 and 2.1, TensorFlow, and the GPU variants' start-up checks), end-to-end,
# browser (the dashboard in Debian's headless chromium, installed here if missing),
# fault-injection (kill -9, SIGTERM, server and backend restarts, expired leases, with real
# processes) and deployment-file suites, all against real Redis-protocol servers they start
# themselves (the deploy suite checks the Dockerfiles, compose, systemd and k8s files and
# the Redis settings file statically; its Grafana check starts an embedded Valkey to render
# the metrics the dashboard queries).
#
#   ./scripts/test.sh                      # everything
#   ./scripts/test.sh core e2e             # some suites (lint core backend worker runtimes e2e
#                                          # browser faults deploy)
#   ./scripts/test.sh runtime:pytorch-2.1  # one runtime's environment
set -uo pipefail
source "$(dirname "$0")/lib/envs.sh"
ensure_uv
# The six runtime environments take ~11 GB (the CUDA builds of torch 2.0/2.1 ~4.5 GB each)
# plus uv's download cache on a first run.
check_disk 16000

# Two cores: one thread per process, or every timing triples.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TF_CPP_MIN_LOG_LEVEL=2 PYTHONDONTWRITEBYTECODE=1

suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=(lint core backend worker runtimes e2e browser faults deploy)
RUNTIMES=(pytorch-2.0 pytorch-2.1 tensorflow pytorch-2.0-gpu pytorch-2.1-gpu)

echo "== preparing environments under $TRAINYARD_ENV_ROOT"
CORE_ENV=$(sync_env core) || exit 1
BACKEND_ENV=$(sync_env backend) || exit 1
WORKER_ENV=$(sync_env ai-worker sklearn) || exit 1
declare -A RUNTIME_ENV
for runtime in "${RUNTIMES[@]}"; do
  started=$SECONDS
  RUNTIME_ENV[$runtime]=$(sync_env ai-worker "${runtime//[-.]/_}") || exit 1
  echo "   $runtime ready ($((SECONDS - started)) s)"
done
export TRAINYARD_BACKEND_PYTHON="$BACKEND_ENV/bin/python"
export TRAINYARD_WORKER_PYTHON="$WORKER_ENV/bin/python"
# The end-to-end suite starts one worker per CPU runtime through `trainyard up`.
export TRAINYARD_RUNTIME_PYTHONS="sklearn=$WORKER_ENV/bin/python"
for runtime in pytorch-2.0 pytorch-2.1 tensorflow; do
  TRAINYARD_RUNTIME_PYTHONS+=",$runtime=${RUNTIME_ENV[$runtime]}/bin/python"
done
export TRAINYARD_RUNTIME_PYTHONS

results="$(mktemp -d)"
failed=()

run_pytest() { # name env dir args...
  local name=$1 env=$2 dir=$3; shift 3
  echo "== $name tests"
  (cd "$REPO_ROOT/$dir" && "$env/bin/python" -m pytest -q -p no:cacheprovider \
      --durations=5 --junitxml="$results/$name.xml" "$@")
  local rc=$?
  # pytest exit 5 means it collected no tests: that is a failure here, not a pass.
  [ $rc -ne 0 ] && failed+=("$name (pytest exit $rc)")
}

# ensure_chromium: the browser suite drives Debian's chromium package (Playwright's own
# browser download is not reachable); install it from the OS packages where it is missing.
ensure_chromium() {
  command -v chromium >/dev/null 2>&1 && return 0
  echo "   installing Debian's chromium (apt-get)"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo=(sudo -n)
  fi
  { "${sudo[@]}" apt-get update -qq && \
      DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium; } >&2
  command -v chromium >/dev/null 2>&1 && return 0
  echo "the browser suite needs Debian's chromium: install it with" \
       "'sudo apt-get install chromium' (it could not be installed here)" >&2
  return 1
}

lint() {
  echo "== lint and types"
  local rc=0
  "$BACKEND_ENV/bin/ruff" check "$REPO_ROOT/core" "$REPO_ROOT/backend" "$REPO_ROOT/ai-worker" \
      "$REPO_ROOT/scripts" "$REPO_ROOT/bench" "$REPO_ROOT/tests" || rc=1
  (cd "$REPO_ROOT/core" && "$CORE_ENV/bin/mypy" src) || rc=1
  (cd "$REPO_ROOT/backend" && "$BACKEND_ENV/bin/mypy" src) || rc=1
  # Each framework's modules are type-checked against that framework's own stubs.
  (cd "$REPO_ROOT/ai-worker" && "$WORKER_ENV/bin/mypy" src \
      --exclude 'runtimes/(torch_|tensorflow_|imagedata|textdata)') || rc=1
  (cd "$REPO_ROOT/ai-worker" && "${RUNTIME_ENV[pytorch-2.1]}/bin/mypy" \
      src/trainyard_worker/runtimes/{torch_*,imagedata,textdata}.py) || rc=1
  (cd "$REPO_ROOT/ai-worker" && "${RUNTIME_ENV[tensorflow]}/bin/mypy" \
      src/trainyard_worker/runtimes/tensorflow_runtime.py) || rc=1
  [ $rc -ne 0 ] && failed+=("lint")
}

# runtime_tests RUNTIME: that runtime's tests in its own environment, which must provide
# its framework (TRAINYARD_REQUIRE_RUNTIME turns a missing import into a failure).
runtime_tests() {
  local runtime=$1 files
  case "$runtime" in
    pytorch-2.0|pytorch-2.1)
      files=(tests/test_torch_text.py tests/test_torch_vision.py tests/test_runtime_jobs.py
             tests/test_hostile_models.py tests/test_forkserver_torch.py) ;;
    tensorflow) files=(tests/test_tensorflow_runtime.py tests/test_runtime_jobs.py
                       tests/test_hostile_models.py) ;;
    *-gpu) files=(tests/test_gpu_runtime.py) ;;
    *) echo "unknown runtime: $runtime" >&2; exit 2 ;;
  esac
  TRAINYARD_REQUIRE_RUNTIME=$runtime run_pytest "runtime-$runtime" "${RUNTIME_ENV[$runtime]}" \
    ai-worker "${files[@]}"
}

for suite in "${suites[@]}"; do
  case "$suite" in
    lint) lint ;;
    core) run_pytest core "$CORE_ENV" core tests ;;
    backend) run_pytest backend "$BACKEND_ENV" backend tests ;;
    worker) TRAINYARD_REQUIRE_RUNTIME=sklearn run_pytest worker "$WORKER_ENV" ai-worker tests ;;
    runtimes) for runtime in "${RUNTIMES[@]}"; do runtime_tests "$runtime"; done ;;
    runtime:*) runtime_tests "${suite#runtime:}" ;;
    e2e) run_pytest e2e "$BACKEND_ENV" tests e2e ;;
    browser) if ensure_chromium; then run_pytest browser "$BACKEND_ENV" tests browser
             else failed+=("browser (no chromium)"); fi ;;
    faults) run_pytest faults "$BACKEND_ENV" tests faults ;;
    deploy) run_pytest deploy "$BACKEND_ENV" tests deploy ;;
    *) echo "unknown suite: $suite (lint core backend worker runtimes runtime:NAME e2e" \
          "browser faults deploy)" >&2; exit 2 ;;
  esac
done

"$CORE_ENV/bin/python" - "$results" <<'PY'
import sys, pathlib, xml.etree.ElementTree as ET
passed = failed = skipped = 0
for f in pathlib.Path(sys.argv[1]).glob("*.xml"):
    for s in ET.parse(f).getroot().iter("testsuite"):
        t, fl, e, sk = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        passed += t - fl - e - sk; failed += fl + e; skipped += sk
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY

if [ ${#failed[@]} -ne 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "all suites passed"
