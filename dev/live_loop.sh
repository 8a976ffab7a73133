#!/usr/bin/env bash
# The live loop of README.md ("The live loop"), end to end on the default data, in a scratch clone
# so this workspace, its dvc.lock and its tags stay as they are:
#
#   serve November's champion -> replay December 1-15 -> their labels arrive -> quality per day ->
#   retrain with December 1-8 (9-15 held back) -> gate on December 9-15 -> promote -> serve it ->
#   replay December 16-31 -> quality per day -> both models on December 16-31, paired.
#
# Needs `make repro` done here (the champion packaged into $BENTOML_HOME, default ~/bentoml).
# Takes about 15 minutes on 2 cores (the retrain is most of it). Usage: dev/live_loop.sh [WORKDIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d /tmp/ontime-live.XXXXXX)}
port=${PORT:-3917}
url=http://127.0.0.1:$port
export PATH=$here/.venv/bin:$PATH
log() { printf '\n=== %s  %s\n' "$(date +%H:%M:%S)" "$*"; }

log "a clone of $here in $work (DVC cache shared with $here)"
git clone -q "$here" "$work/repo"
cd "$work/repo"
dvc cache dir "$here/.dvc/cache" >/dev/null
dvc checkout -q
export ONTIME_REQUEST_LOG=$work/repo/logs/requests.jsonl

serve() {  # serve what prod names, wait until it is ready
  ontime registry serve --stage prod --port "$port" >"$work/serve-$1.log" 2>&1 &
  server=$!
  for _ in $(seq 120); do curl -sf "$url/readyz" >/dev/null && return; sleep 1; done
  echo "the service did not start: $work/serve-$1.log" >&2; exit 1
}
stop() { kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
trap stop EXIT

log "1. November's champion to prod, served"
ontime registry promote --reason "November's champion (trained on Jan 1 - Nov 30)"
serve november

log "2. replay December 1-15 (the service logs each flight with its key)"
ontime replay --url "$url" --from 2013-12-01 --to 2013-12-15 --speed 0 > "$work/replay-1.json"

log "3. their labels arrive; quality per day"
mkdir -p outcomes
ontime outcomes --from 2013-12-01 --to 2013-12-15 --out outcomes/2013-12-01_2013-12-15.jsonl
ontime monitor --outcomes outcomes --out "$work/monitor-1.html" > "$work/monitor-1.json" || true

log "4. retrain with those labels: December 1-8 join the fine-tuning rows, 9-15 are held back"
ontime params split.windows.finetune.end=2013-12-09 split.windows.test.start=2013-12-09
dvc repro
git add -A && git commit -qm "fine-tune on labels through December 8"

log "5. the gate: the challenger against prod on December 9-15, which neither trained on"
ontime gate --from 2013-12-09 --to 2013-12-15 --promote --out "$work/gate.json" \
  --reason "labels through December 15 arrived" || true
ontime registry history

log "6. serve prod (the challenger if it passed), replay December 16-31, their labels, quality"
stop
serve december
ontime replay --url "$url" --from 2013-12-16 --to 2013-12-31 --speed 0 > "$work/replay-2.json"
ontime outcomes --from 2013-12-16 --to 2013-12-31 --out outcomes/2013-12-16_2013-12-31.jsonl
ontime monitor --outcomes outcomes --out "$work/monitor-2.html" > "$work/monitor-2.json" || true
stop

log "7. both models on December 16-31, the same rows (the November champion as the challenger)"
git checkout -q HEAD~1
ontime gate --from 2013-12-16 --to 2013-12-31 --out "$work/compare.json" || true
git checkout -q -

log "done: $work (replay-*.json, monitor-*.json, gate.json, compare.json)"
