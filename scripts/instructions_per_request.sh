#!/bin/bash
# Instructions and heap allocations per request, counted by callgrind: deterministic where
# ops/s on this shared VM moves 10-15% between runs, so it shows a small hot-path change.
#
#   scripts/instructions_per_request.sh [BINDIR] [kms|baseline] [gdk|decrypt]
#
# BINDIR holds release `kms` and `kms-bench` (default target/release). The server (kms on
# hsm-sim, data directory on /dev/shm, or the no-work baseline) runs under callgrind, is driven
# by `kms-bench --target` at 8 in flight over 1 connection, and is counted for 10 s of the
# steady state (counters zeroed after the warm-up, dumped before the end). Needs valgrind.
# Counts are user space only: the kernel's share (syscalls, wake-ups) is not in them.
set -euo pipefail
BIN=${1:-target/release}
SERVER=${2:-kms}
OP=${3:-gdk}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }
WORK=$(mktemp -d /dev/shm/ipr.XXXXXX)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
OUT=$WORK/callgrind.out
if [ "$SERVER" = kms ]; then
    echo 'listen = "127.0.0.1:0"' >"$WORK/kms.toml"
    RUST_LOG=error valgrind --tool=callgrind --callgrind-out-file="$OUT" \
        "$BIN/kms" serve --dev --config "$WORK/kms.toml" --data-dir "$WORK/data" >"$WORK/out" 2>"$WORK/err" &
    PID=$!
    PATTERN='kms listening on '
    # One call per request, whatever the operation.
    PER_REQUEST='^kms::audit::AuditEvent::new$'
else
    valgrind --tool=callgrind --callgrind-out-file="$OUT" \
        "$BIN/kms-bench" baseline-server >"$WORK/out" 2>"$WORK/err" &
    PID=$!
    PATTERN='baseline listening on '
    # The no-work handlers finish in one poll: one call per request.
    PER_REQUEST='^<kms_bench::baseline::NoWork as .*>::(generate_data_key|decrypt)::\{\{closure\}\}$'
fi
for _ in $(seq 600); do grep -q "$PATTERN" "$WORK/out" 2>/dev/null && break; sleep 0.1; done
ADDR=$(sed -n "s/$PATTERN//p" "$WORK/out")
[ -n "$ADDR" ] || { cat "$WORK/err" >&2; exit 1; }
( sleep 8; callgrind_control -z $PID >/dev/null 2>&1; sleep 10; callgrind_control -d $PID >/dev/null 2>&1 ) &
COUNT=$!
BENCH_STATUS=0
"$BIN/kms-bench" --target "http://$ADDR" --ops "$OP" -n 8 -k 1 -d 12 --warmup 4 --no-raw --no-baseline >"$WORK/bench" 2>&1 || BENCH_STATUS=$?
wait $COUNT
# Failed requests are cheaper than served ones: a failing run would count too few instructions.
if [ "$BENCH_STATUS" != 0 ]; then
    cat "$WORK/bench" >&2
    echo "kms-bench failed (exit $BENCH_STATUS): no count" >&2
    exit 1
fi
python3 - "$OUT.1" "$PER_REQUEST" <<'EOF'
import re, sys
path, per_request = sys.argv[1], re.compile(sys.argv[2])
alloc = re.compile(r'^mi_(malloc|zalloc|realloc|calloc)(_aligned)?$')
names, cfn, calls, total, requests, allocations = {}, None, None, 0, 0, 0
for line in open(path):
    m = re.match(r'(fn|cfn)=\((\d+)\)(?: (.*))?', line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3)
        if m.group(1) == 'cfn':
            cfn = names.get(m.group(2), '')
        continue
    if line.startswith('calls='):
        n = int(line.split('=')[1].split()[0])
        requests += n if per_request.search(cfn) else 0
        allocations += n if alloc.match(cfn) else 0
    elif line.startswith('summary:'):
        total = int(line.split()[1])
if not requests:
    sys.exit('no requests counted')
print(f'requests counted: {requests}')
print(f'instructions per request: {total / requests:.0f}')
print(f'heap allocations per request: {allocations / requests:.1f}')
EOF
