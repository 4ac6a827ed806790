#!/usr/bin/env bash
# Run the whole test suite: lint and types, then the core (queue engine), backend (API),
# ai-worker (supervisor, runtimes), end-to-end and deployment-file suites, each in its own
# environment, all against real Redis-protocol servers they start themselves (the deploy
# suite needs none: it checks the Dockerfiles, compose, systemd and k8s files statically).
#
#   ./scripts/test.sh              # everything
#   ./scripts/test.sh core e2e     # some suites (lint core backend worker e2e deploy)
set -uo pipefail
source "$(dirname "$0")/lib/envs.sh"
ensure_uv
check_disk 2048

# Two cores: one thread per process, or every timing triples.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1

suites=("$@")
[ ${#suites[@]} -eq 0 ] && suites=(lint core backend worker e2e deploy)

echo "== preparing environments under $TRAINYARD_ENV_ROOT"
CORE_ENV=$(sync_env core) || exit 1
BACKEND_ENV=$(sync_env backend) || exit 1
WORKER_ENV=$(sync_env ai-worker sklearn) || exit 1
export TRAINYARD_BACKEND_PYTHON="$BACKEND_ENV/bin/python"
export TRAINYARD_WORKER_PYTHON="$WORKER_ENV/bin/python"

results="$(mktemp -d)"
failed=()

run_pytest() { # name env dir args...
  local name=$1 env=$2 dir=$3; shift 3
  echo "== $name tests"
  (cd "$REPO_ROOT/$dir" && "$env/bin/python" -m pytest -q -p no:cacheprovider \
      --junitxml="$results/$name.xml" "$@")
  local rc=$?
  # pytest exit 5 means it collected no tests: that is a failure here, not a pass.
  [ $rc -ne 0 ] && failed+=("$name (pytest exit $rc)")
}

lint() {
  echo "== lint and types"
  local rc=0
  "$BACKEND_ENV/bin/ruff" check "$REPO_ROOT/core" "$REPO_ROOT/backend" "$REPO_ROOT/ai-worker" \
      "$REPO_ROOT/scripts" "$REPO_ROOT/bench" "$REPO_ROOT/tests" || rc=1
  (cd "$REPO_ROOT/core" && "$CORE_ENV/bin/mypy" src) || rc=1
  (cd "$REPO_ROOT/backend" && "$BACKEND_ENV/bin/mypy" src) || rc=1
  (cd "$REPO_ROOT/ai-worker" && "$WORKER_ENV/bin/mypy" src) || rc=1
  [ $rc -ne 0 ] && failed+=("lint")
}

for suite in "${suites[@]}"; do
  case "$suite" in
    lint) lint ;;
    core) run_pytest core "$CORE_ENV" core tests ;;
    backend) run_pytest backend "$BACKEND_ENV" backend tests ;;
    worker) run_pytest worker "$WORKER_ENV" ai-worker tests ;;
    e2e) run_pytest e2e "$BACKEND_ENV" tests e2e ;;
    deploy) run_pytest deploy "$BACKEND_ENV" tests deploy ;;
    *) echo "unknown suite: $suite (lint core backend worker e2e deploy)" >&2; exit 2 ;;
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
