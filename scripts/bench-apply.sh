#!/usr/bin/env bash
# Benchmark: config as files. Prints figures only (no assertions).
#
#   scripts/bench-apply.sh
#
# One daemon on 127.0.0.1 (runtime none, no Docker needed), one team.
# - `shoal product import NAME --compose FILE` of generated compose files
#   of 10, 100 and 500 services (busybox, one env var and one published
#   port each): wall time of the command, which writes one op.
# - `shoal apply -f FILE` of the 100-service product's own export, after a
#   first apply: the unchanged case (reads the product, plans, writes no
#   op), timed RUNS times (default 5); then the same file with one
#   container's env changed (one op).
# The shoal binary is the debug build unless SHOAL_BIN names another
# (a release build gives the figures users see).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/.." && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"

runs=${RUNS:-5}
work=$(mktemp -d)
pid=

cleanup() {
    if [[ -n $pid ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if [[ -n ${SHOAL_BIN:-} ]]; then
    bin=$SHOAL_BIN
else
    section "building shoal (debug)"
    (cd "$repo_root" && cargo build -q -p shoal --bin shoal)
    bin=$repo_root/target/debug/shoal
fi
[[ -x $bin ]] || die "no shoal binary at $bin"

export SHOAL_CONFIG_DIR=$work/a SHOAL_SOCKET=$work/a/shoal.sock
mkdir -p "$work/a/data"

# seconds START: seconds since START (from `now`), three decimals.
seconds() {
    awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.3f", e - s }'
}

# ops: the team's op count.
ops() {
    "$bin" team show -o json | sed -n 's/.*"ops": *\([0-9]*\).*/\1/p' | head -n 1
}

section "one daemon, one team"
"$bin" profile init --name bench-person >/dev/null
SHOAL_LOG=warn "$bin" node run --data-dir "$work/a/data" --listen /ip4/127.0.0.1/tcp/0 \
    --no-mdns --runtime none --name a >"$work/a.out" 2>"$work/a.log" </dev/null &
pid=$!
wait_for 60 "the daemon" grep -qs '^ready' "$work/a.out" ||
    die "the daemon did not start; see its log: $(tail -n 5 "$work/a.log")"
"$bin" team create bench >/dev/null
info "binary: $bin"

section "compose import"
for n in 10 100 500; do
    file=$work/c$n.yml
    {
        echo "services:"
        for ((i = 0; i < n; i++)); do
            printf '  s%d:\n    image: busybox:1.36\n    environment: {N: "%d"}\n    ports: ["%d:80"]\n' \
                "$i" "$i" $((20000 + i))
        done
    } >"$file"
    start=$(now)
    "$bin" product import "p$n" --compose "$file" >/dev/null
    info "import of $n services: $(seconds "$start") s"
done

section "apply of an unchanged 100-image file"
"$bin" export p100 >"$work/p100.yaml"
"$bin" apply -f "$work/p100.yaml" >/dev/null
before=$(ops)
for ((r = 1; r <= runs; r++)); do
    start=$(now)
    out=$("$bin" apply -f "$work/p100.yaml")
    info "run $r: $(seconds "$start") s ($out)"
done
info "ops written by the $runs runs: $(($(ops) - before))"

section "apply of the same file with one env value changed"
sed -i '0,/N: '"'"'7'"'"'/s//N: changed/' "$work/p100.yaml"
start=$(now)
out=$("$bin" apply -f "$work/p100.yaml" | tail -n 1)
info "$(seconds "$start") s ($out)"
