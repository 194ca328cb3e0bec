#!/usr/bin/env bash
# Ingest benchmark: the cases of the performance issue, each with its floor measured in the
# same run (the machines are noisy: read the ratios, not only the absolute figures).
#
#   scripts/bench.sh            # 100k, 1M and 3M rows, XLSX, pandas peer (~4 min, ~9 GB disk)
#   scripts/bench.sh --quick    # 100k and 1M only, no peer
#
# Each of our cases runs REPS times (default 3), each time from the same starting state, and
# its median wall time is reported with the range; peak RSS is the largest of the runs. The
# peer runs once (it is 5-15 x slower; its spread does not change the comparison).
#
# Needs /usr/bin/time (Debian package `time`) and, for the peer, Python with pandas
# (installed with pip when missing). Data is generated deterministically by
# examples/gen_reports.rs into $BENCH_DIR (default: a temporary folder, removed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
REPS=${REPS:-3}

if [ ! -x /usr/bin/time ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
cargo build --release --quiet --bins --examples
BIN=${BIN:-$PWD/target/release/tangoe-ingest}
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

# settle: waits (up to 60 s) until the disk under BENCH_DIR has done no writes or discards
# for a second. A virtual disk goes on with the writes and discards of gigabytes written or
# removed well after `sync` returns; each measured run starts after that.
DISK=$(basename "$(df --output=source "$BENCH_DIR" | tail -1)")
disk_busy() { awk -v d="$DISK" '$3==d {print $10, $12, $17}' /proc/diskstats; }
settle() {
  local before after i
  sync
  before=$(disk_busy)
  for i in $(seq 60); do
    sleep 1
    after=$(disk_busy)
    [ "$after" = "$before" ] && return
    before=$after
  done
}

# measure LABEL ROWS FLOOR_SECONDS PREP CMD... : runs PREP (untimed: it sets up the starting
# state) then CMD under /usr/bin/time, REPS times; prints one row and remembers the median.
declare -A MEDIAN
measure() {
  local label=$1 rows=$2 floor=$3 prep=$4
  shift 4
  local reps=$REPS
  [ "$prep" = "-" ] && reps=1
  local log walls="" rsss=""
  log=$(mktemp)
  for _ in $(seq "$reps"); do
    [ "$prep" != "-" ] && "$prep"
    settle # start from a quiet disk, so one run's writes do not slow the next
    /usr/bin/time -v "$@" >/dev/null 2>"$log" || true
    walls="$walls $(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$log")"
    rsss="$rsss $(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$log")"
  done
  rm -f "$log"
  local out
  out=$(python3 - "$label" "$rows" "$floor" "$walls" "$rsss" <<'PY'
import sys, statistics
label, rows, floor = sys.argv[1], int(sys.argv[2]), sys.argv[3]
walls = [float(w) for w in sys.argv[4].split()]
rss = max(int(r) for r in sys.argv[5].split())
wall = statistics.median(walls)
spread = f"{min(walls):.2f}-{max(walls):.2f}" if len(walls) > 1 else "1 run"
rate = f"{rows / wall:,.0f}" if wall > 0 and rows > 0 else "-"
us = f"{wall / rows * 1e6:.2f}" if wall > 0 and rows > 0 else "-"
ratio = f"{wall / float(floor):.2f}" if floor not in ("", "-") and float(floor) > 0 else "-"
print(f"{wall}\t| {label:<34} | {rows:>9,} | {wall:>6.2f} | {spread:>11} | {rate:>9} | {us:>5} | {rss:>6} | {floor:>7} | {ratio:>6} |")
PY
)
  MEDIAN[$label]=${out%%$'\t'*}
  echo "${out#*$'\t'}"
}

# floor_time CMD... : wall seconds of CMD (best of 2).
floor_time() {
  local best=""
  for _ in 1 2; do
    local t0 t1
    settle
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
echo "wall s: the median of $REPS runs from the same starting state (range beside it); RSS: the largest"
echo
echo "| case                               |      rows | wall s |       range |    rows/s | µs/row | RSS MB | floor s | ×floor |"
echo "|------------------------------------|-----------|--------|-------------|-----------|--------|--------|---------|--------|"

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
  # Each case starts from the ledger case 1 leaves (kept as state.base), with no import files.
  prep_case1() { workspace "$W"; cp "$C1" "$W/drop/r_2026-10-31.csv"; }
  restore() {
    rm -rf "$W/state" "$W/out" "$W"/drop/r_2026-11-0*.csv "$W"/drop/copy_*.csv
    cp -a "$W/state.base" "$W/state"
  }
  prep_case2() { restore; cp "$C1" "$W/drop/copy_2026-11-01.csv"; }
  prep_case3() { restore; cp "$C3" "$W/drop/r_2026-11-02.csv"; }
  # Memory follows the ledger (its Activities are held in memory for the run), not the
  # report: the 100k report of case 3, against this ledger.
  prep_case3b() { restore; cp "$BENCH_DIR/case3_100000.csv" "$W/drop/r_2026-11-03.csv"; }
  measure "1. new ledger, $N rows" "$N" "$F1" prep_case1 "$BIN" --config "$W/cfg.toml" -q run
  cp -a "$W/state" "$W/state.base"
  if [ "$N" = 1000000 ]; then
    FH=$(floor_time "$FLOOR" sha256 "$C1")
    measure "2. same report renamed (floor: sha256)" 0 "$FH" prep_case2 "$BIN" --config "$W/cfg.toml" -q run
  fi
  measure "5. dry run of case 3, $N rows" "$N" "$F3" prep_case3 "$BIN" --config "$W/cfg.toml" -q run --dry-run
  measure "3. 10% changed, $N rows" "$N" "$F3" prep_case3 "$BIN" --config "$W/cfg.toml" -q run
  if [ "$N" != 100000 ]; then
    measure "3b. 100000 rows, ledger of $N" 100000 - prep_case3b "$BIN" --config "$W/cfg.toml" -q run
  fi
  rm -rf "$W"
done

X=$BENCH_DIR/case4.xlsx
"$GEN" xlsx --rows 100000 --out "$X" --seed 4
XML=$(python3 -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); print(sum(i.file_size for i in z.infolist() if i.filename.startswith('xl/worksheets/') or i.filename=='xl/sharedStrings.xml'))" "$X")
FX=$(floor_time "$FLOOR" xlsx "$X")
W=$BENCH_DIR/ws_xlsx
prep_xlsx() { workspace "$W"; cp "$X" "$W/drop/r_2026-10-31.xlsx"; }
measure "4. XLSX (sheet XML $((XML / 1048576)) MB)" 100000 "$FX" prep_xlsx "$BIN" --config "$W/cfg.toml" -q run
rm -rf "$W"

if [ "$QUICK" = 0 ]; then
  python3 -c "import pandas" 2>/dev/null || pip install -q pandas >/dev/null 2>&1
  P=$BENCH_DIR/peer
  rm -rf "$P" && mkdir -p "$P"
  N=1000000
  measure "peer: pandas + sqlite3, case 1" "$N" "$(floor_time "$FLOOR" csv "$BENCH_DIR/case1_$N.csv")" - \
    python3 scripts/peer_pandas.py "$BENCH_DIR/case1_$N.csv" "$P/peer.sqlite" "$P/out.jsonl"
  measure "peer: pandas + sqlite3, case 3" "$N" "$(floor_time "$FLOOR" csv "$BENCH_DIR/case3_$N.csv")" - \
    python3 scripts/peer_pandas.py "$BENCH_DIR/case3_$N.csv" "$P/peer.sqlite" "$P/out.jsonl"
fi

# Cost growth: the time a row takes at the largest size against 100k (medians).
echo
LAST=${SIZES##* }
for c in "1. new ledger" "3. 10% changed"; do
  small=${MEDIAN["$c, 100000 rows"]:-}
  large=${MEDIAN["$c, $LAST rows"]:-}
  if [ -z "$small" ] || [ -z "$large" ]; then continue; fi
  python3 -c "
import sys; s, l, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f'growth, {sys.argv[4]}: {l / n * 1e6:.2f} µs a row at {n:,} against {s / 1e5 * 1e6:.2f} at 100,000: {l / n / (s / 1e5):.2f} x')
" "$small" "$large" "$LAST" "$c"
done
