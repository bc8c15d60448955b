#!/usr/bin/env bash
# Render a psla report.html in headless Chromium and save a PNG of it, to see that it renders.
#   scripts/report_screenshot.sh REPORT.html [OUT.png] [WIDTH] [HEIGHT]
# Needs Debian's chromium package (`apt-get install chromium`). Chromium runs with no network access
# of its own (the report loads nothing) and a throwaway profile.
set -euo pipefail
report=${1:?usage: scripts/report_screenshot.sh REPORT.html [OUT.png] [WIDTH] [HEIGHT]}
out=${2:-${report%.html}.png}
width=${3:-1200}
height=${4:-4000}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found: apt-get install chromium" >&2; exit 1; }
[ -f "$report" ] || { echo "$report: no such file" >&2; exit 1; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size="$width,$height" --screenshot="$(realpath -m "$out")" "file://$(realpath "$report")" 2>/dev/null
echo "wrote $out (${width}x${height})"
