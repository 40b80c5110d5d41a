#!/usr/bin/env bash
# Benchmark of the node daemon's mesh: prints figures, asserts nothing.
#
#   scripts/bench-mesh.sh [all|latency|stress|memory|restart]... [options]
#   scripts/bench-mesh.sh --quick        # smaller sizes, a few minutes
#   scripts/bench-mesh.sh --help         # every option
#
# Builds the release binary, then runs tests/benches/mesh.rs, which starts
# real `shoal node run` processes on 127.0.0.1 with temp dirs and drives them
# through their control sockets:
#   latency  one op written on a random daemon until every daemon holds it
#            (p50, p99) for meshes of 3, 10 and 30 daemons;
#   stress   30 daemons, each joining through up to 10 random earlier ones;
#            800 ops as 40 batches of 20 to random daemons, 10 batches at a
#            time; seconds from the last acknowledged write until every
#            daemon holds all 800 (a reference gossip-CRDT system: 2.5 s),
#            and the daemons' CPU time while writing;
#   memory   resident memory of one idle daemon (target: under 20 MB);
#   restart  time from process start until the control API answers with the
#            full state, for a store of 10,000 ops.
# SHOAL_LOG=debug shows the daemons' logs (default: warnings only).
# SHOAL_BENCH_PROFILE=dist measures the shipped binary's build profile
# (fat LTO, a long build) instead of `release`.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${SHOAL_BENCH_PROFILE:-release}
cargo build --profile "$profile" -q -p shoal --bin shoal
# How much of the binary's code layout list (cli/build.rs) still names its
# functions: a daemon's resident memory grows as the list goes stale.
list=cli/link/$profile.order
if [ ! -f "$list" ]; then
    echo "code layout: no $list, so code is laid out as compiled (scripts/order-symbols.sh $profile writes it)"
elif command -v nm >/dev/null; then
    have=$(nm --defined-only "target/$profile/shoal" | awk '{print $3}' | sort -u \
        | comm -12 - <(sort -u "$list") | wc -l)
    echo "code layout: $have of $(wc -l <"$list") functions in $list are in the binary (scripts/order-symbols.sh $profile renews it)"
fi
exec cargo bench --profile "$profile" -q -p shoal-tests --bench mesh -- "$@"
