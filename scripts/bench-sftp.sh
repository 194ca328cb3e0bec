#!/usr/bin/env bash
# SFTP download throughput: OpenSSH `sftp` vs tangoe-ingest, in the same run, on the same
# 512 MiB file served by a loopback sshd; then the same through a relay that adds 25 ms of
# delay each way (scripts/delay_relay.py: latency, not a bandwidth cap).
#
# Prints MB/s (10^6 bytes/s) for both, the ratio tangoe-ingest / OpenSSH, and the CPU
# seconds (user + system) each client used for the whole transfer. The bar: tangoe-ingest at
# least 2 x OpenSSH `sftp` through the relay (25 ms each way), where its larger read-ahead
# pays; the last line says whether it holds. Loopback is reported, not a bar: it is
# CPU-bound, and libssh2 as crates.io ships it decrypts with its own portable code.
# tangoe-ingest is timed as a whole `run` (process start, connect, host key check, login,
# listing, download, SHA-256, archive); the file is random bytes named .xlsx, so the parse
# after the download fails at once and adds nothing. "download alone" is its own log line
# (open to last byte). OpenSSH is timed as a whole `sftp` get.
#
# Files live in RAM (/dev/shm, or $BENCH_DIR) so that disk writeback does not blur the
# figures; both tools write their copy to the same place. Runs alternate and the best of
# REPEATS is kept for each tool: the machine's cores may be shared, so single runs vary.
#
# Needs root (sshd), /usr/sbin/sshd, sftp, ssh-keygen and python3.
# Usage: scripts/bench-sftp.sh [SIZE_MIB (512)] [REPEATS (5)] [DELAY_MS (25)]
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${1:-512}
REPEATS=${2:-5}
DELAY_MS=${3:-25}

cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/tangoe-ingest"

BENCH_DIR=${BENCH_DIR:-/dev/shm}
[ -d "$BENCH_DIR" ] && [ -w "$BENCH_DIR" ] || BENCH_DIR=/tmp
WORK=$(mktemp -d "$BENCH_DIR/bench-sftp.XXXXXX")
SSHD_PID=""
RELAY_PID=""
cleanup() {
  [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null || true
  [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  exit 1
}

mkdir -p /run/sshd "$WORK/remote"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$WORK/client_key"
cp "$WORK/client_key.pub" "$WORK/authorized_keys"
PORT=$(free_port)
cat > "$WORK/sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_key
PidFile $WORK/sshd.pid
AuthorizedKeysFile $WORK/authorized_keys
Subsystem sftp internal-sftp
UsePAM no
StrictModes no
PermitRootLogin yes
PasswordAuthentication no
EOF
/usr/sbin/sshd -D -e -f "$WORK/sshd_config" 2>"$WORK/sshd.log" &
SSHD_PID=$!
wait_port "$PORT"

FILE=bench_2026-01-01.xlsx
head -c "$((SIZE_MIB << 20))" /dev/urandom > "$WORK/remote/$FILE"
touch -d '1 hour ago' "$WORK/remote/$FILE"
BYTES=$(stat -c %s "$WORK/remote/$FILE")

mbps() { python3 -c "print(f'{$BYTES / 1e6 / $1:.1f}')"; }

# Runs a command with stderr to $1; prints "WALL_SECONDS CPU_SECONDS EXIT_CODE".
timed() {
  python3 -c '
import resource, subprocess, sys, time
t = time.monotonic()
with open(sys.argv[1], "w") as err:
    rc = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=err).returncode
wall = time.monotonic() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{wall:.4f} {u.ru_utime + u.ru_stime:.3f} {rc}")
' "$@"
}

# One download with OpenSSH through port $1: prints "WALL CPU".
run_openssh() {
  rm -f "$WORK/openssh.out"
  local wall cpu rc
  read -r wall cpu rc < <(timed "$WORK/openssh.log" sftp -q -i "$WORK/client_key" \
    -o "UserKnownHostsFile=$WORK/known_hosts" -o BatchMode=yes -P "$1" \
    "root@127.0.0.1:$WORK/remote/$FILE" "$WORK/openssh.out")
  [ "$rc" = 0 ] && [ "$(stat -c %s "$WORK/openssh.out")" = "$BYTES" ] \
    || { echo "sftp failed:" >&2; cat "$WORK/openssh.log" >&2; exit 1; }
  rm -f "$WORK/openssh.out"
  echo "$wall $cpu"
}

# One `tangoe-ingest run` through port $1, fresh ledger and archive: prints
# "WALL CPU DOWNLOAD_SECONDS".
run_tangoe() {
  rm -rf "$WORK/ti"
  mkdir -p "$WORK/ti"
  cat > "$WORK/ti/config.toml" <<EOF
[source]
type = "sftp"
host = "127.0.0.1"
port = $1
username = "root"
private_key = "$WORK/client_key"
known_hosts = "$WORK/known_hosts"
remote_dir = "$WORK/remote"
patterns = ["*.xlsx"]
min_age = "0s"
settle = "0s"
timeout = "60s"

[ledger]
path = "$WORK/ti/ledger.sqlite"

[[sink]]
type = "file"
dir = "$WORK/ti/out"
EOF
  local wall cpu rc
  read -r wall cpu rc < <(timed "$WORK/ti/log" "$BIN" --config "$WORK/ti/config.toml" run)
  # Exit 2: the random "workbook" fails to parse once downloaded, as intended.
  [ "$rc" = 2 ] && grep -q "downloaded bytes=$BYTES" "$WORK/ti/log" \
    || { echo "tangoe-ingest: no complete download (exit $rc):" >&2; cat "$WORK/ti/log" >&2; exit 1; }
  local dl
  dl=$(sed -n 's/.*downloaded bytes=[0-9]* seconds="\([0-9.]*\)".*/\1/p' "$WORK/ti/log")
  rm -rf "$WORK/ti"
  echo "$wall $cpu $dl"
}

bench() {
  local label=$1 port=$2
  local bo=1e9 bt=1e9 bd=1e9 co=0 ct=0 w c d
  for _ in $(seq "$REPEATS"); do
    read -r w c < <(run_openssh "$port")
    bo=$(python3 -c "print(min($bo, $w))"); co=$(python3 -c "print($co + $c / $REPEATS)")
    read -r w c d < <(run_tangoe "$port")
    bt=$(python3 -c "print(min($bt, $w))"); bd=$(python3 -c "print(min($bd, $d))")
    ct=$(python3 -c "print($ct + $c / $REPEATS)")
  done
  local mo mt md
  mo=$(mbps "$bo"); mt=$(mbps "$bt"); md=$(mbps "$bd")
  RATIO=$(python3 -c "print(f'{$mt / $mo:.2f}')")
  printf '%-24s OpenSSH sftp %6s MB/s | tangoe-ingest %6s MB/s (download alone %6s) | ratio %s | CPU s: sftp %.2f, tangoe-ingest %.2f\n' \
    "$label" "$mo" "$mt" "$md" "$RATIO" "$co" "$ct"
}

echo "file: $SIZE_MIB MiB ($BYTES bytes) in $BENCH_DIR; best of $REPEATS alternating runs per tool; $(nproc) cores"
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$WORK/host_key.pub")" > "$WORK/known_hosts"
bench "loopback" "$PORT"

RPORT=$(free_port)
python3 scripts/delay_relay.py "$RPORT" "$PORT" "$DELAY_MS" &
RELAY_PID=$!
wait_port "$RPORT"
echo "[127.0.0.1]:$RPORT $(cut -d' ' -f1,2 "$WORK/host_key.pub")" > "$WORK/known_hosts"
bench "+${DELAY_MS} ms each way" "$RPORT"
if python3 -c "import sys; sys.exit(0 if $RATIO >= 2 else 1)"; then
  echo "bar (tangoe-ingest >= 2 x OpenSSH sftp through the relay): met, $RATIO"
else
  echo "bar (tangoe-ingest >= 2 x OpenSSH sftp through the relay): NOT met, $RATIO"
fi
