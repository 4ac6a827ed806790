#!/usr/bin/env bash
# The seed's "Traditional Server" setup: everything the systemd services ai-backend and
# ai-worker (and ai-worker@RUNTIME) need, on this machine, from this clone. Safe to run again
# (idempotent).
#
#   ./scripts/setup_dev.sh           # as your user: environments + sample data; then prints
#                                    # the root steps (or run it with sudo to do them too)
#   sudo ./scripts/setup_dev.sh      # also /etc/trainyard/trainyard.env and the units
#   sudo systemctl start redis-server ai-backend ai-worker
#
#   WORKERS=sklearn,pytorch-2.1      # comma-separated runtimes to build environments for
#                                    # (default sklearn); start the others as ai-worker@RUNTIME
#   TRAINYARD_USER=name              # who the services run as (default: the clone's owner)
#   ./scripts/setup_dev.sh --render-units DIR [REPO]   # only write the rendered units to DIR
#
# What it does:
#   1. installs uv if missing (scripts/lib/envs.sh: ensure_uv)
#   2. backend/.venv:  uv sync --frozen (in backend/)
#      var/envs/RUNTIME for each runtime in WORKERS: the ai-worker environment of the
#      runtime's extra (scripts/lib/envs.sh: sync_env, kept under var/envs in the clone and
#      named by a hash of its pins), reached through the stable link var/envs/RUNTIME that
#      the units run
#   3. the sample data in ./data (python -m trainyard.sample_data; writes only what is missing)
#   4. as root: /etc/trainyard/trainyard.env from deploy/trainyard.env.example, if missing,
#      and /etc/trainyard/api-keys with one random API key, if missing (keys are on)
#   5. as root with systemd: /etc/systemd/system/ai-backend.service, ai-worker.service and
#      ai-worker@.service from deploy/systemd/ (@REPO@, @USER@, @GROUP@ filled in), then
#      daemon-reload
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/envs.sh"   # REPO_ROOT, ensure_uv, sync_env, ...
export UV_PYTHON_DOWNLOADS=never

WORKERS="${WORKERS:-sklearn}"
ENV_DIR=/etc/trainyard
ENV_FILE=$ENV_DIR/trainyard.env
KEYS_FILE=$ENV_DIR/api-keys
UNIT_DIR=/etc/systemd/system
UNITS=(ai-backend ai-worker ai-worker@)
# The services' worker environments: in the clone (readable by the service user wherever
# the clone is), apart from the ones under ~/.cache that run_local.sh and test.sh use.
SERVICE_ENVS=$REPO_ROOT/var/envs
# One file per runtime the workers can serve (deploy/systemd/runtimes/RUNTIME.env).
RUNTIME_DIR=$REPO_ROOT/deploy/systemd/runtimes

say() { echo "setup_dev: $*"; }

# render_unit NAME REPO USER GROUP: the unit text with its placeholders filled in.
render_unit() {
  sed -e "s|@REPO@|$2|g" -e "s|@USER@|$3|g" -e "s|@GROUP@|$4|g" \
      "$REPO_ROOT/deploy/systemd/$1.service"
}

service_user() {
  local user="${TRAINYARD_USER:-${SUDO_USER:-}}"
  [ -n "$user" ] || user=$(stat -c %U "$REPO_ROOT")
  echo "$user"
}

if [ "${1:-}" = "--render-units" ]; then
  out=${2:?usage: setup_dev.sh --render-units DIR [REPO]}
  repo=${3:-$REPO_ROOT}
  user=$(service_user)
  mkdir -p "$out"
  for unit in "${UNITS[@]}"; do
    render_unit "$unit" "$repo" "$user" "$(id -gn "$user")" >"$out/$unit.service"
  done
  exit 0
fi

[ "${1:-}" = "--user-steps" ] && WORKERS=${2:-$WORKERS}   # (the sudo re-run below)

# The runtimes in WORKERS, checked before anything is installed.
RUNTIMES=()
for runtime in ${WORKERS//,/ }; do
  if [ ! -f "$RUNTIME_DIR/$runtime.env" ]; then
    known=$(cd "$RUNTIME_DIR" && ls -- *.env | sed 's/\.env$//' | paste -sd, -)
    echo "setup_dev: WORKERS names an unknown runtime '$runtime'; known: $known" >&2
    exit 2
  fi
  RUNTIMES+=("$runtime")
done
[ ${#RUNTIMES[@]} -gt 0 ] || { echo "setup_dev: WORKERS is empty" >&2; exit 2; }

user_steps() {
  ensure_uv
  local need=1024
  case "$WORKERS" in
    *pytorch*) need=12000 ;;   # each torch environment is ~4.5 GB (CUDA wheels)
    *tensorflow*) need=3000 ;;
  esac
  TRAINYARD_ENV_ROOT="$SERVICE_ENVS" check_disk "$need"
  # The services run the clone's own environments, not the hashed ones under ~/.cache
  # that run_local.sh and test.sh use.
  unset UV_PROJECT_ENVIRONMENT VIRTUAL_ENV
  say "syncing backend/.venv"
  (cd "$REPO_ROOT/backend" && "$UV" sync --frozen --quiet)
  local runtime extra dir
  for runtime in "${RUNTIMES[@]}"; do
    extra=${runtime//[-.]/_}               # pytorch-2.1-gpu -> pytorch_2_1_gpu (the uv extra)
    say "syncing the $runtime environment (extra $extra) under var/envs"
    dir=$(TRAINYARD_ENV_ROOT="$SERVICE_ENVS" sync_env ai-worker "$extra")
    # The units run var/envs/RUNTIME/bin/python: point that name at the current build.
    ln -sfn "$(basename "$dir")" "$SERVICE_ENVS/$runtime"
  done
  say "sample data in $REPO_ROOT/data"
  "$REPO_ROOT/backend/.venv/bin/python" -m trainyard.sample_data --root "$REPO_ROOT/data"
}

if [ "${1:-}" = "--user-steps" ]; then
  user_steps
  exit 0
fi

USER_NAME=$(service_user)
GROUP_NAME=$(id -gn "$USER_NAME")

# 1-3: as the clone's owner, so that the environments and data/ stay theirs under sudo too.
if [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
  sudo -u "$SUDO_USER" -H "$REPO_ROOT/scripts/setup_dev.sh" --user-steps "$WORKERS"
else
  user_steps
fi

with_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# What to start: ai-worker serves the env file's WORKER_TYPE; every other runtime in
# WORKERS runs as an ai-worker@ instance.
start_hint() {
  local file=$ENV_FILE default others=() runtime
  [ -r "$file" ] || file=$REPO_ROOT/deploy/trainyard.env.example
  default=$(sed -n 's/^WORKER_TYPE=//p' "$file" | tail -n 1)
  for runtime in "${RUNTIMES[@]}"; do
    [ "$runtime" = "$default" ] || others+=("ai-worker@$runtime")
  done
  if [ ! -e "$SERVICE_ENVS/$default/bin/python" ]; then
    say "warning: ai-worker serves WORKER_TYPE=$default ($file), which has no environment" >&2
    say "  in var/envs: add it to WORKERS and rerun, or change WORKER_TYPE there" >&2
  fi
  echo "redis-server ai-backend ai-worker${others[*]:+ ${others[*]}}"
}

if [ "$(id -u)" -ne 0 ]; then
  say "not root: these steps need root; run 'sudo $0' to do them, or by hand:"
  echo "  sudo install -d -m 0755 $ENV_DIR"
  echo "  [ -e $ENV_FILE ] || sed 's|@REPO@|$REPO_ROOT|g' $REPO_ROOT/deploy/trainyard.env.example | sudo install -m 0640 -g $GROUP_NAME /dev/stdin $ENV_FILE"
  echo "  [ -e $KEYS_FILE ] || python3 -c 'import secrets; print(secrets.token_urlsafe(32))' | sudo install -m 0640 -g $GROUP_NAME /dev/stdin $KEYS_FILE"
  for unit in "${UNITS[@]}"; do
    echo "  sed -e 's|@REPO@|$REPO_ROOT|g' -e 's|@USER@|$USER_NAME|g' -e 's|@GROUP@|$GROUP_NAME|g' $REPO_ROOT/deploy/systemd/$unit.service | sudo install -m 0644 /dev/stdin $UNIT_DIR/$unit.service"
  done
  echo "  sudo systemctl daemon-reload"
  echo "  sudo systemctl start $(start_hint)"
  exit 0
fi

# 4: the environment file, only if missing (it is the operator's from then on).
install -d -m 0755 "$ENV_DIR"
if [ -e "$ENV_FILE" ]; then
  say "$ENV_FILE exists: kept"
else
  sed "s|@REPO@|$REPO_ROOT|g" "$REPO_ROOT/deploy/trainyard.env.example" >"$ENV_FILE.tmp"
  chown "root:$GROUP_NAME" "$ENV_FILE.tmp"
  chmod 0640 "$ENV_FILE.tmp"
  mv "$ENV_FILE.tmp" "$ENV_FILE"
  say "wrote $ENV_FILE (edit REDIS_URL and the rest there)"
fi
# The API key file the env file names (REQUIRE_API_KEYS=true: no key, no backend).
if [ -e "$KEYS_FILE" ]; then
  say "$KEYS_FILE exists: kept"
else
  python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$KEYS_FILE.tmp"
  chown "root:$GROUP_NAME" "$KEYS_FILE.tmp"
  chmod 0640 "$KEYS_FILE.tmp"
  mv "$KEYS_FILE.tmp" "$KEYS_FILE"
  say "wrote $KEYS_FILE with a new API key: clients send it as 'Authorization: Bearer <key>'"
fi

# 5: the units.
if [ "$USER_NAME" = root ]; then
  say "warning: the services will run as root; set TRAINYARD_USER to a dedicated user"
fi
if ! with_systemd; then
  say "no running systemd here: would install ${UNITS[*]/%/.service} into $UNIT_DIR as:"
  for unit in "${UNITS[@]}"; do
    echo "---- $UNIT_DIR/$unit.service"
    render_unit "$unit" "$REPO_ROOT" "$USER_NAME" "$GROUP_NAME"
  done
  exit 0
fi
changed=0
for unit in "${UNITS[@]}"; do
  target="$UNIT_DIR/$unit.service"
  if render_unit "$unit" "$REPO_ROOT" "$USER_NAME" "$GROUP_NAME" | cmp -s - "$target"; then
    say "$target up to date"
  else
    render_unit "$unit" "$REPO_ROOT" "$USER_NAME" "$GROUP_NAME" >"$target.tmp"
    chmod 0644 "$target.tmp"
    mv "$target.tmp" "$target"
    changed=1
    say "installed $target (runs as $USER_NAME)"
  fi
done
[ "$changed" -eq 1 ] && systemctl daemon-reload
hint=$(start_hint)
say "done. Start with: systemctl start $hint"
say "start at boot:   systemctl enable $hint"
