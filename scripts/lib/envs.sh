# Shared by run_local.sh and test.sh (sourced, not run).
# Environments live outside the clone, one folder per clone and per hash of the files that
# pin them, and are reused whenever that hash matches. Per clone, because each environment
# installs the clone's own packages (trainyard, trainyard_api, trainyard_worker) in editable
# mode: a shared one would follow whichever clone synced it last, and break when that clone
# is deleted. uv links packages from its cache, so a second clone's 5 GB PyTorch
# environment takes about 2 s and no extra disk when the cache is on the same filesystem
# (uv copies otherwise; set UV_CACHE_DIR beside TRAINYARD_ENV_ROOT then).

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

# CLONE_KEY: this clone, as a short hash of its path (an environment records the path too).
CLONE_KEY=$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-8)

# env_path PROJECT [EXTRA]: the folder for a project's environment in this clone, named by a
# hash of the exact packages the lock resolves for that extra (so editing one runtime's pins,
# or anything else in pyproject.toml, leaves the other runtimes' multi-GB environments alone).
env_path() {
  local project=$1 extra=${2:-} hash
  local args=(export --frozen --no-hashes --no-header --project "$REPO_ROOT/$project")
  [ -n "$extra" ] && args+=(--extra "$extra")
  hash=$( { "$UV" "${args[@]}" 2>/dev/null; cat "$REPO_ROOT/core/pyproject.toml"; } \
          | sha256sum | cut -c1-16)
  echo "$TRAINYARD_ENV_ROOT/$project-${extra:-none}-$CLONE_KEY-$hash"
}

# prune_envs DIR: remove the environments of DIR's project and extra that nothing uses any
# more: this clone's older pins and those of clones that no longer exist. Other live clones'
# environments stay, and so do folders without a clone file (the shared environments of the
# layout before per-clone ones, which a run may still be using: delete those by hand).
prune_envs() {
  local dir=$1 base old owner
  base=$(basename "$dir")
  base=${base%-*}          # drop the pin hash
  base=${base%-*}          # drop the clone key
  for old in "$TRAINYARD_ENV_ROOT/$base"-*; do
    [ "$old" = "$dir" ] || [ ! -d "$old" ] && continue
    owner=$(cat "$old/.trainyard-clone" 2>/dev/null || true)
    [ -z "$owner" ] && continue
    if [ "$owner" = "$REPO_ROOT" ] || [ ! -d "$owner" ]; then
      rm -rf "$old"
    fi
  done
}

# sync_env PROJECT [EXTRA]: create or update that environment from the lock; prints its path.
sync_env() {
  local project=$1 extra=${2:-} dir
  dir=$(env_path "$project" "$extra")
  local args=(sync --frozen --project "$REPO_ROOT/$project" --quiet)
  [ -n "$extra" ] && args+=(--extra "$extra")
  UV_PROJECT_ENVIRONMENT="$dir" "$UV" "${args[@]}" >&2 || return 1
  printf '%s\n' "$REPO_ROOT" > "$dir/.trainyard-clone"
  prune_envs "$dir"
  echo "$dir"
}
