#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a while on its corpus.
#
#   scripts/fuzz.sh [SECONDS]     (default 60 seconds per target)
#
# Steps: install cargo-fuzz when missing (`cargo install cargo-fuzz
# --locked`), build the targets, then run each one for SECONDS starting from
# its committed seeds (fuzz/corpus/<target>/, read only) and the inputs found
# by earlier runs (fuzz/target/corpus/<target>/, where new ones go). Prints
# per target the number of runs and whether it crashed; a crash's reproducer
# is written under fuzz/artifacts/<target>/ and its path printed. Exits
# non-zero when any target crashed. Re-run a reproducer with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none TARGET PATH
#
# cargo-fuzz needs unstable compiler flags: RUSTC_BOOTSTRAP=1 lets a stable
# toolchain take them. Builds have no sanitizer (the fuzzed crates forbid
# unsafe code; a panic is what the targets look for) and no debug
# assertions, like a release build.
#
# Environment:
#   SHOAL_FUZZ_TIMEOUT   seconds one input may take before it counts as a
#                        crash (default 25).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/.." && pwd)
# shellcheck source=lib/common.sh
source "$here/lib/common.sh"

seconds=${1:-60}
[[ $seconds =~ ^[1-9][0-9]*$ ]] || die "usage: scripts/fuzz.sh [SECONDS] (a positive whole number, got '$seconds')"
input_timeout=${SHOAL_FUZZ_TIMEOUT:-25}
fuzz_args=(--sanitizer none)

cd "$repo_root"
if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found"

total_start=$(now)

section "fuzz: cargo-fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
    info "installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi
info "$(cargo fuzz --version)"

section "fuzz: build"
start=$(now)
RUSTC_BOOTSTRAP=1 cargo fuzz build "${fuzz_args[@]}"
info "(built in $(elapsed "$start")s)"

mapfile -t targets < <(cargo fuzz list)
((${#targets[@]} > 0)) || die "cargo fuzz list names no target"

# run_target TARGET: fuzz TARGET for $seconds; prints its summary line and
# returns 1 when it crashed.
run_target() {
    local target=$1 work=fuzz/target/corpus/$1 log rc=0 runs crash
    mkdir -p "$work" "fuzz/artifacts/$target"
    log=$(mktemp)
    # The first corpus dir takes the new inputs; the committed seeds stay as they are.
    RUSTC_BOOTSTRAP=1 cargo fuzz run "${fuzz_args[@]}" "$target" "$work" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout="$input_timeout" -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?
    runs=$(awk '/^stat::number_of_executed_units:/ { print $NF }' "$log" | tail -n 1)
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    if ((rc == 0)); then
        info "$target: ${runs:-?} runs, no crash"
        rm -f "$log"
        return 0
    fi
    grep -E 'panicked at|^==[0-9]+==|ERROR: libFuzzer|SUMMARY' "$log" | head -n 12 | sed 's/^/    | /' || true
    if [[ -n $crash ]]; then
        info "$target: CRASH after ${runs:-?} runs; reproducer: $crash"
    else
        tail -n 20 "$log" | sed 's/^/    | /'
        info "$target: FAILED (exit $rc) after ${runs:-?} runs; no reproducer written"
    fi
    info "full output: $log"
    return 1
}

section "fuzz: ${#targets[@]} targets, ${seconds}s each"
failed=()
for target in "${targets[@]}"; do
    run_target "$target" || failed+=("$target")
done

if ((${#failed[@]} > 0)); then
    die "fuzzing found crashes in: ${failed[*]} (reproducers above)"
fi
section "fuzz: no crash in ${#targets[@]} targets ($(elapsed "$total_start")s)"
