#!/usr/bin/env bash
# Visual check of what a person opens after `dvc repro`: the `dvc plots show` page, every Evidently
# report page, and the Evidently UI dashboard, as PNGs from headless Chromium (offline: nothing here
# loads from the network). Needs chromium (Debian: apt-get install chromium). Screenshots are for your
# eyes, not tests. Usage: dev/screenshots.sh [out-folder]   (default: /tmp/ontime-shots)
set -euo pipefail
out=${1:-/tmp/ontime-shots}
mkdir -p "$out"
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bin=${VIRTUAL_ENV:-$root/.venv}/bin
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome)

shot() {  # shot URL FILE [WIDTHxHEIGHT]
  "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
    --window-size="${3:-1400,2200}" --virtual-time-budget=20000 --screenshot="$2" "$1" 2>/dev/null
  echo "$2"
}

"$bin/dvc" plots show --out "$out/plots" >/dev/null
shot "file://$out/plots/index.html" "$out/plots.png" 1400,9000
for page in reports/evidently/*.html; do
  shot "file://$root/$page" "$out/$(basename "$page" .html).png"
done

port=$("$bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$bin/evidently" ui --workspace reports/workspace --host 127.0.0.1 --port "$port" >"$out/ui.log" 2>&1 &
ui=$!
trap 'kill $ui 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/api/projects" >/dev/null && break; sleep 1; done
project=$(curl -sf "http://127.0.0.1:$port/api/projects" | "$bin/python" -c "import json,sys; print(json.load(sys.stdin)[0]['id'])")
shot "http://127.0.0.1:$port/projects/$project" "$out/dashboard.png" 1400,2600
