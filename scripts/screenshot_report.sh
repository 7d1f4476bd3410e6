#!/usr/bin/env bash
# Render reports/index.html in headless Chromium (no server: file://) and save a full-page PNG,
# to check by eye that the report renders.  Needs Debian's chromium: `apt-get install chromium`.
#   bash scripts/screenshot_report.sh [reports/index.html] [reports/screenshot.png]
set -euo pipefail
page=$(realpath "${1:-reports/index.html}")
out=$(realpath -m "${2:-reports/screenshot.png}")
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "screenshot_report: chromium not found — fix: apt-get install chromium" >&2; exit 2; }
[ -f "$page" ] || { echo "screenshot_report: $page missing — fix: run \`dvc repro\` first" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1200,"${HEIGHT:-6000}" \
  --screenshot="$out" "file://$page" 2>/dev/null
echo "wrote $out"
