# Shared by run_local.sh and test.sh (sourced, not run).
# Environments live outside the clone, one folder per hash of the files that pin them,
# and are reused whenever that hash matches (CI clones the repo afresh every run).

export UV_PYTHON_DOWNLOADS=never     # uv cannot download a Python here; use the machine's 3.11
export UV_PYTHON="${UV_PYTHON:-3.11}"
TRAINYARD_ENV_ROOT="${TRAINYARD_ENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/trainyard/envs}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

ensure_uv() {
  if command -v uv >/dev/null 2>&1; then UV=uv; return; fi
  local tools
  tools="$(dirname "$TRAINYARD_ENV_ROOT")/tools"
  UV="$tools/bin/uv"
  [ -x "$UV" ] && return
  echo "uv not found: installing uv 0.13.8 into $tools" >&2
  mkdir -p "$tools"
  # pip's --target puts the uv binary in $tools/bin; it needs no venv module (Debian's
  # python3 may lack ensurepip).
  python3 -m pip install --quiet --disable-pip-version-check --target "$tools" "uv==0.13.8" \
    || { echo "could not install uv: install it (https://docs.astral.sh/uv/) and rerun" >&2; exit 1; }
  [ -x "$UV" ] || { echo "uv was installed but $UV is missing" >&2; exit 1; }
}

check_disk() { # free MiB needed
  local need_mb=$1 free_mb
  mkdir -p "$TRAINYARD_ENV_ROOT"
  free_mb=$(df -Pm "$TRAINYARD_ENV_ROOT" | awk 'NR==2 {print $4}')
  if [ "$free_mb" -lt "$need_mb" ]; then
    echo "only ${free_mb} MiB free under $TRAINYARD_ENV_ROOT; need ${need_mb} MiB" >&2
    exit 1
  fi
}

# env_path PROJECT [EXTRA]: the folder for a project's environment, named by a hash of the
# exact packages the lock resolves for that extra (so editing one runtime's pins, or anything
# else in pyproject.toml, leaves the other runtimes' multi-GB environments alone).
env_path() {
  local project=$1 extra=${2:-} hash
  local args=(export --frozen --no-hashes --no-header --project "$REPO_ROOT/$project")
  [ -n "$extra" ] && args+=(--extra "$extra")
  hash=$( { "$UV" "${args[@]}" 2>/dev/null; cat "$REPO_ROOT/core/pyproject.toml"; } \
          | sha256sum | cut -c1-16)
  echo "$TRAINYARD_ENV_ROOT/$project-${extra:-none}-$hash"
}

# sync_env PROJECT [EXTRA]: create or update that environment from the lock; prints its path.
sync_env() {
  local project=$1 extra=${2:-} dir
  dir=$(env_path "$project" "$extra")
  local args=(sync --frozen --project "$REPO_ROOT/$project" --quiet)
  [ -n "$extra" ] && args+=(--extra "$extra")
  UV_PROJECT_ENVIRONMENT="$dir" "$UV" "${args[@]}" >&2 || return 1
  # Environments of older pins of the same project and extra only take disk space.
  for old in "${dir%-*}"-*; do
    [ "$old" != "$dir" ] && [ -d "$old" ] && rm -rf "$old"
  done
  echo "$dir"
}
