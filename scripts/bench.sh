#!/usr/bin/env bash
# Ingest benchmark: the cases of the performance issue, each with its floor measured in the
# same run (the machines are noisy: read the ratios, not only the absolute figures).
#
#   scripts/bench.sh            # 100k, 1M and 3M rows, XLSX, pandas peer (~6 min, ~6 GB disk)
#   scripts/bench.sh --quick    # 100k and 1M only, no peer
#
# Needs /usr/bin/time (Debian package `time`) and, for the peer, Python with pandas
# (installed with pip when missing). Data is generated deterministically by
# examples/gen_reports.rs into $BENCH_DIR (default: a temporary folder, removed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

if [ ! -x /usr/bin/time ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
cargo build --release --quiet --bins --examples
BIN=$PWD/target/release/tangoe-ingest
GEN=$PWD/target/release/examples/gen_reports
FLOOR=$PWD/target/release/examples/floor

OWN_DIR=0
if [ -z "${BENCH_DIR:-}" ]; then
  BENCH_DIR=$(mktemp -d /tmp/tangoe-bench.XXXXXX)
  OWN_DIR=1
fi
cleanup() { if [ "$OWN_DIR" = 1 ]; then rm -rf "$BENCH_DIR"; fi; }
trap cleanup EXIT
mkdir -p "$BENCH_DIR"

# measure LABEL ROWS FLOOR_SECONDS CMD... : runs CMD under /usr/bin/time, prints one row.
LAST_WALL=0
measure() {
  local label=$1 rows=$2 floor=$3
  shift 3
  local log
  log=$(mktemp)
  sync # start from clean page-cache writeback, so one case's writes do not slow the next
  /usr/bin/time -v "$@" >/dev/null 2>"$log" || true
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$log")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$log")
  LAST_WALL=$wall
  python3 - "$label" "$rows" "$wall" "$rss" "$floor" <<'PY'
import sys
label, rows, wall, rss, floor = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
rate = f"{rows / wall:,.0f}" if wall > 0 and rows > 0 else "-"
ratio = f"{wall / float(floor):.2f}" if floor not in ("", "-") and float(floor) > 0 else "-"
print(f"| {label:<34} | {rows:>9,} | {wall:>8.2f} | {rate:>11} | {rss:>6} | {floor:>7} | {ratio:>6} |")
PY
  rm -f "$log"
}

# floor_time CMD... : wall seconds of CMD (best of 2).
floor_time() {
  local best=""
  for _ in 1 2; do
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    local t
    t=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
    if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $t < $best else 1)"; then best=$t; fi
  done
  echo "$best"
}

workspace() {
  local dir=$1
  rm -rf "$dir"
  mkdir -p "$dir/drop"
  cat >"$dir/cfg.toml" <<'EOF'
[source]
type = "local"
dir = "drop"
[report]
date_from_name = '(\d{4}-\d{2}-\d{2})'
[ledger]
path = "state/ledger.sqlite"
[[sink]]
type = "file"
dir = "out"
format = "jsonl"
EOF
}

echo "tangoe-ingest ingest benchmark — $(date -u +%Y-%m-%d), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
echo "floor: the csv crate counting records (CSV), calamine streaming the sheet (XLSX), in the same run"
echo
echo "| case                               |      rows |   wall s |      rows/s | RSS MB | floor s |  ×floor |"
echo "|------------------------------------|-----------|----------|-------------|--------|---------|--------|"

SIZES="100000 1000000 3000000"
[ "$QUICK" = 1 ] && SIZES="100000 1000000"
for N in $SIZES; do
  C1=$BENCH_DIR/case1_$N.csv
  C3=$BENCH_DIR/case3_$N.csv
  "$GEN" csv --rows "$N" --out "$C1" --seed 1
  "$GEN" csv --rows "$N" --out "$C3" --seed 1 --changed 10
  F1=$(floor_time "$FLOOR" csv "$C1")
  F3=$(floor_time "$FLOOR" csv "$C3")
  W=$BENCH_DIR/ws_$N
  workspace "$W"
  cp "$C1" "$W/drop/r_2026-10-31.csv"
  measure "1. new ledger, $N rows" "$N" "$F1" "$BIN" --config "$W/cfg.toml" -q run
  if [ "$N" = 1000000 ]; then
    FH=$(floor_time "$FLOOR" sha256 "$C1")
    cp "$C1" "$W/drop/copy_2026-11-01.csv"
    measure "2. same report, new name (sha256 ${FH}s)" 0 "$FH" "$BIN" --config "$W/cfg.toml" -q run
    rm "$W/drop/copy_2026-11-01.csv"
  fi
  cp "$C3" "$W/drop/r_2026-11-02.csv"
  measure "5. dry run of case 3, $N rows" "$N" "$F3" "$BIN" --config "$W/cfg.toml" -q run --dry-run
  measure "3. 10% changed, $N rows" "$N" "$F3" "$BIN" --config "$W/cfg.toml" -q run
  if [ "$N" != 100000 ]; then
    # Memory follows the ledger (its Activity index), not the report: the 100k report of
    # case 3, against this ledger.
    cp "$BENCH_DIR/case3_100000.csv" "$W/drop/r_2026-11-03.csv"
    measure "3b. 100000 rows, ledger of $N" 100000 - "$BIN" --config "$W/cfg.toml" -q run
  fi
  rm -rf "$W"
done

X=$BENCH_DIR/case4.xlsx
"$GEN" xlsx --rows 100000 --out "$X" --seed 4
XML=$(python3 -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); print(sum(i.file_size for i in z.infolist() if i.filename.startswith('xl/worksheets/') or i.filename=='xl/sharedStrings.xml'))" "$X")
FX=$(floor_time "$FLOOR" xlsx "$X")
W=$BENCH_DIR/ws_xlsx
workspace "$W"
cp "$X" "$W/drop/r_2026-10-31.xlsx"
measure "4. XLSX (sheet XML $((XML / 1048576)) MB)" 100000 "$FX" "$BIN" --config "$W/cfg.toml" -q run
rm -rf "$W"

if [ "$QUICK" = 0 ]; then
  python3 -c "import pandas" 2>/dev/null || pip install -q pandas >/dev/null 2>&1
  P=$BENCH_DIR/peer
  rm -rf "$P" && mkdir -p "$P"
  N=1000000
  measure "peer: pandas + sqlite3, case 1" "$N" "$(floor_time "$FLOOR" csv "$BENCH_DIR/case1_$N.csv")" \
    python3 scripts/peer_pandas.py "$BENCH_DIR/case1_$N.csv" "$P/peer.sqlite" "$P/out.jsonl"
  measure "peer: pandas + sqlite3, case 3" "$N" "$(floor_time "$FLOOR" csv "$BENCH_DIR/case3_$N.csv")" \
    python3 scripts/peer_pandas.py "$BENCH_DIR/case3_$N.csv" "$P/peer.sqlite" "$P/out.jsonl"
fi
