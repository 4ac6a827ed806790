#!/usr/bin/env bash
# Refresh the dashboard's vendored third-party files from the npm registry. The dashboard
# fetches nothing at run time: uPlot (MIT) is shipped in the backend package, pinned here.
#
#   ./scripts/vendor_ui.sh              # re-vendor the pinned version
#   UPLOT_VERSION=1.6.33 ./scripts/vendor_ui.sh   # try another (then update the pin below)
#
# Needs npm (only this script does; running the dashboard needs no Node.js).
set -euo pipefail
UPLOT_VERSION="${UPLOT_VERSION:-1.6.32}"
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$REPO_ROOT/backend/src/trainyard_api/ui/vendor/uplot"

command -v npm >/dev/null || { echo "vendor_ui.sh needs npm" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# npm pack downloads the published tarball exactly as the registry serves it (no install,
# no scripts run).
(cd "$tmp" && npm pack --silent "uplot@$UPLOT_VERSION" >/dev/null)
tar -xzf "$tmp"/uplot-"$UPLOT_VERSION".tgz -C "$tmp"
pkg="$tmp/package"
got="$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$pkg/package.json" | head -1)"
[ "$got" = "$UPLOT_VERSION" ] || { echo "npm served uplot $got, not $UPLOT_VERSION" >&2; exit 1; }

mkdir -p "$DEST"
cp "$pkg/dist/uPlot.iife.min.js" "$pkg/dist/uPlot.min.css" "$pkg/LICENSE" "$DEST/"
echo "$UPLOT_VERSION" > "$DEST/VERSION"
# Checksums let the tests prove the shipped files are the ones this version published.
(cd "$DEST" && sha256sum uPlot.iife.min.js uPlot.min.css LICENSE > SHA256SUMS)
echo "vendored uplot $UPLOT_VERSION into ${DEST#"$REPO_ROOT"/}"
