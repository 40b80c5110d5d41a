#!/usr/bin/env bash
# Writes cli/link/PROFILE.order (PROFILE: release by default, or dist): the
# functions a daemon runs, in the order it first runs them, for the linker to
# put together (cli/build.rs says why).
#
#   scripts/order-symbols.sh [release|dist]
#
# Two daemons on 127.0.0.1 run under valgrind's callgrind while one creates
# a team, the other joins it, a member writes and reads, and both idle past
# a few heartbeats; every function either ran is listed. Run it after a
# change of dependencies, of the toolchain or of the workspace's version
# (each renames symbols), and before a release after changes to hot code
# (generic instances and LLVM's module-local copies are renamed with it);
# `scripts/bench-mesh.sh memory` prints how much of the list the binary
# still matches. Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-release}
case $profile in
release) dir=release ;;
dist) dir=dist ;;
*) echo "usage: $0 [release|dist]" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
cargo build --profile "$profile" -p shoal
bin=$PWD/target/$dir/shoal
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# cli NODE ARGS...: the CLI against NODE's daemon.
cli() {
    local n=$1; shift
    SHOAL_CONFIG_DIR=$work/$n/cfg SHOAL_SOCKET=$work/$n/sock "$bin" "$@"
}

# start NODE: the daemon under callgrind, until it is ready.
start() {
    local n=$1
    mkdir -p "$work/$n"
    SHOAL_CONFIG_DIR=$work/$n/cfg SHOAL_SOCKET=$work/$n/sock SHOAL_LOG=warn \
        valgrind --tool=callgrind --demangle=no --compress-strings=no --dump-instr=no \
        --callgrind-out-file="$work/$n.cg" \
        "$bin" node run --data-dir "$work/$n/data" --listen /ip4/127.0.0.1/tcp/0 \
        --no-mdns --runtime none --name "$n" >"$work/$n/out" 2>"$work/$n/err" &
    pids+=($!)
    for _ in $(seq 600); do
        grep -q '^ready' "$work/$n/out" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "daemon $n did not start:" >&2
    cat "$work/$n/err" >&2
    exit 1
}

cli a profile init --name ada >/dev/null
start a
start b
cli a team create crew >/dev/null
ticket=$(cli a node add b --runtime none | tail -n 1)
cli b node join "$ticket" >/dev/null
for _ in $(seq 300); do
    [ "$(cli a -o json node list | grep -o '"status":"connected"' | wc -l)" -ge 2 ] && break
    sleep 0.2
done
cli a product create web >/dev/null
cli a product list >/dev/null
cli b product list >/dev/null
cli a node list >/dev/null
cli a audit list >/dev/null
# Heartbeats, anti-entropy rounds and the live-state loop of an idle node.
sleep 15
for p in "${pids[@]}"; do kill -TERM "$p"; done
for p in "${pids[@]}"; do wait "$p" || true; done
pids=()

out=cli/link/$profile.order
nm --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u >"$work/defined"
# First appearance across both daemons' profiles, kept only if defined in
# the binary (not libc's or the loader's).
cat "$work/a.cg" "$work/b.cg" | sed -n 's/^fn=//p' | awk '!seen[$0]++' \
    | awk 'NR == FNR {d[$0] = 1; next} d[$0]' "$work/defined" - >"$out"
echo "wrote $out: $(wc -l <"$out") functions"
