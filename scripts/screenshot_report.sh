#!/usr/bin/env bash
# Render a report page in headless Chromium (Debian: apt-get install chromium) to a PNG, and fail
# when the page logs a JavaScript error or an uncaught exception to the console.
#
#   scripts/screenshot_report.sh REPORT.html OUT.png [WIDTH] [HEIGHT]
#
# HEIGHT is the height of the captured window (the page's top HEIGHT pixels); default 1400x4000.
# The console check loads the page a second time with --dump-dom and Chromium's logging on stderr.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 REPORT.html OUT.png [WIDTH] [HEIGHT]" >&2
  exit 2
fi
page=$(realpath "$1")
out=$(realpath -m "$2")
width=${3:-1400}
height=${4:-4000}
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [ -z "$browser" ]; then
  echo "error: no chromium found; install it (Debian: apt-get install chromium) or set CHROMIUM" >&2
  exit 1
fi
[ -f "$page" ] || { echo "error: no report at $1" >&2; exit 1; }
profile=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$profile" "$log"' EXIT
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile"
       --no-first-run --disable-extensions --virtual-time-budget=5000)

# 1. The screenshot.
"$browser" "${flags[@]}" --window-size="$width,$height" --screenshot="$out" "file://$page" >/dev/null 2>&1
[ -s "$out" ] || { echo "error: chromium wrote no screenshot to $out" >&2; exit 1; }

# 2. The console: Chromium logs console messages as "CONSOLE(line)" / "Uncaught ..." lines.
"$browser" "${flags[@]}" --enable-logging=stderr --v=0 --dump-dom "file://$page" >"$log.dom" 2>"$log" || true
if ! grep -q "</html>" "$log.dom"; then
  echo "error: chromium could not load $page" >&2
  exit 1
fi
errors=$(grep -E "CONSOLE|Uncaught|SyntaxError|TypeError|ReferenceError" "$log" || true)
rm -f "$log.dom"
if [ -n "$errors" ]; then
  echo "error: the page logged to the console:" >&2
  echo "$errors" >&2
  exit 1
fi
echo "wrote $out ($(stat -c %s "$out") bytes); console clean"
