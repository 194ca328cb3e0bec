#!/usr/bin/env bash
# Delivery benchmark: what each event costs an HTTP sink beyond the request itself, now that
# every delivery mark is synced to disk before the next request (the guarantee that a power
# loss never sends an event twice). A webhook on 127.0.0.1 answers at once, so the figures
# are the job's own cost per event: wall time and bytes written to disk.
#
#   scripts/bench-delivery.sh            # 2,000 events, 3 runs
#   BIN=path/to/other/tangoe-ingest scripts/bench-delivery.sh   # another build, same way
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
REPS=${REPS:-3}
cargo build --release --quiet --bins
BIN=${BIN:-$PWD/target/release/tangoe-ingest}
W=$(mktemp -d /tmp/tangoe-bench-delivery.XXXXXX)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$W"' EXIT

python3 - "$W/port" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(201); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(sys.argv[1], "w").write(str(s.server_address[1]))
s.serve_forever()
PY
SERVER=$!
for _ in $(seq 50); do [ -s "$W/port" ] && break; sleep 0.1; done
PORT=$(cat "$W/port")

python3 - "$W/report.csv" "$N" <<'PY'
import sys
with open(sys.argv[1], "w") as f:
    f.write("Activity ID,Status,Remote Activity ID,Last Updated\n")
    for i in range(int(sys.argv[2])):
        f.write(f"A{i:07d},Ordered,RITM{i},2026-11-01T10:00:00Z\n")
PY

echo "events  run  wall_s  ms/event  disk_KB  KB/event"
for rep in $(seq "$REPS"); do
  R=$W/run$rep
  mkdir -p "$R/drop"
  cp "$W/report.csv" "$R/drop/r_2026-11-01.csv"
  # First the report is committed while the endpoint is down (port 9: nothing listens), so
  # every event is pending; then `deliver` is measured alone, the endpoint up.
  write_cfg() {
    cat >"$R/cfg.toml" <<TOML
[source]
type = "local"
dir = "drop"
[ledger]
path = "state/ledger.sqlite"
[[sink]]
type = "http"
name = "hook"
api = "webhook"
url = "http://127.0.0.1:$1/hook"
max_attempts = 1
TOML
  }
  write_cfg 9
  (cd "$R" && TANGOE_INGEST_HTTP_BACKOFF=1ms "$BIN" --config cfg.toml -q run >/dev/null 2>&1 || true)
  write_cfg "$PORT"
  sync
  /usr/bin/time -f "%e %O" -o "$R/time" "$BIN" --config "$R/cfg.toml" -q deliver >/dev/null 2>&1 || true
  read -r wall blocks <"$R/time"
  awk -v n="$N" -v r="$rep" -v w="$wall" -v b="$blocks" \
    'BEGIN { kb = b / 2; printf "%6d  %3d  %6.2f  %8.3f  %7d  %8.1f\n", n, r, w, 1000 * w / n, kb, kb / n }'
done
