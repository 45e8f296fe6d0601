#!/usr/bin/env bash
# Screenshot a rendered report with headless Chromium, to check how it reads in a real browser.
#
#   reports/screenshot.sh [REPORT_DIR | index.html] [OUT.png] [HEIGHT_PX]
#
# Defaults: the sample report, $TMPDIR/isolab-report.png (not beside the report, so a screenshot
# is never committed by accident), 1280×4000 pixels. Needs Debian's
# `chromium` package. Nothing is fetched: the page is self-contained and Chromium's background
# networking (updates, sync, QUIC) is switched off.
set -euo pipefail

index=${1:-"$(dirname "$0")/sample/report"}
[ -d "$index" ] && index="$index/index.html"
out=${2:-"${TMPDIR:-/tmp}/isolab-report.png"}
height=${3:-4000}

browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
    echo "chromium not found: apt-get install -y chromium" >&2
    exit 1
fi

# A throw-away profile, removed on exit, so no state leaks between screenshots.
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

# Chromium refuses to run as root with its sandbox on.
sandbox=()
[ "$(id -u)" = 0 ] && sandbox=(--no-sandbox)

"$browser" --headless "${sandbox[@]}" --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars \
    --screenshot="$(realpath -m "$out")" --window-size="1280,$height" \
    "file://$(realpath "$index")" 2>/dev/null
echo "$out"
