#!/usr/bin/env bash
# Run Docker Compose with whichever front end this machine has: `docker compose` (the
# plugin, Docker 20.10+ / Desktop 4+) or the legacy `docker-compose`. Every argument is
# passed through, from the repository root (where docker-compose.yml is).
#
#   ./scripts/docker-compose.sh up -d                    # redis, backend, the CPU workers
#   ./scripts/docker-compose.sh up -d redis backend ai-worker-sklearn
#   ./scripts/docker-compose.sh up -d redis backend ai-worker-pytorch-2.1-gpu   # needs a GPU
#   ./scripts/docker-compose.sh --profile gpu up -d      # the GPU workers too
#   ./scripts/docker-compose.sh logs -f ai-worker-pytorch-2.1
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  exec docker compose "$@"
elif command -v docker-compose >/dev/null 2>&1; then
  exec docker-compose "$@"
else
  cat >&2 <<'MSG'
error: neither `docker compose` nor `docker-compose` was found.
Install Docker Engine with the Compose plugin (https://docs.docker.com/compose/install/),
or run Trainyard without Docker: ./scripts/run_local.sh
MSG
  exit 127
fi
