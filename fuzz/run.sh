#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time on a scratch copy of its committed
# seed corpus (fuzz/corpus/<target>/seed-*), two at a time; fails if any target crashes (a
# panic, an abort, an allocation above the limit, a timeout or running out of memory).
#
#   fuzz/run.sh [seconds-per-target]      default 20
#
# Needs cargo-fuzz (see fuzz/README.md) and works on the stable toolchain: RUSTC_BOOTSTRAP=1
# lets stable rustc take the -Z flags cargo-fuzz passes. --sanitizer none leaves out
# AddressSanitizer, which would double the build and run times; over-allocation is caught by
# the targets' own allocator instead (fuzz/src/lib.rs).
#
# Environment: LARCH_FUZZ_TARGET_DIR (default fuzz/target) is where the build goes — point it
# at a directory that outlives the checkout to keep the build warm; LARCH_FUZZ_JOBS (default 2)
# how many targets run at once; LARCH_FUZZ_CLEAN=1 deletes the build when done (CI, where
# disk is tight and the build is not reused). A crash is copied to fuzz/artifacts/<target>/ (ignored by git)
# with the command that reproduces it.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-20}
jobs=${LARCH_FUZZ_JOBS:-2}
target_dir=${LARCH_FUZZ_TARGET_DIR:-$PWD/target}
export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: cargo-fuzz is missing; see fuzz/README.md for the install line" >&2
    exit 1
fi

started=$(date +%s)
cargo fuzz build --dev --sanitizer none --target-dir "$target_dir"
built=$(date +%s)
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir="$target_dir/$triple/debug"

scratch=$(mktemp -d)
cleanup() {
    rm -rf "$scratch"
    if [ "${LARCH_FUZZ_CLEAN:-0}" = 1 ]; then
        rm -rf "$target_dir"
    fi
}
trap cleanup EXIT

# Runs one target; its log is $scratch/<target>.log, its exit status $scratch/<target>.status.
run() {
    local target=$1
    mkdir -p "$scratch/$target/corpus" "$scratch/$target/crash"
    cp corpus/"$target"/seed-* "$scratch/$target/corpus/"
    # -malloc_limit_mb is enforced only under a sanitizer; the targets' allocator enforces the
    # same limit (LARCH_FUZZ_MAX_ALLOC_MB) without one.
    LARCH_FUZZ_MAX_ALLOC_MB=256 "$bin_dir/$target" "$scratch/$target/corpus" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 \
        -artifact_prefix="$scratch/$target/crash/" -print_final_stats=1 \
        >"$scratch/$target.log" 2>&1
    echo $? >"$scratch/$target.status"
}

targets=$(cargo fuzz list)
for target in $targets; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n || true
    done
    # `set -e` must not stop a run whose target crashed: its status is reported below.
    (set +e; run "$target") &
done
wait

failed=0
for target in $targets; do
    if [ "$(cat "$scratch/$target.status" 2>/dev/null)" = 0 ]; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$target.log")
        echo "fuzz: $target: $execs runs in ${seconds} s, no crash"
    else
        failed=$((failed + 1))
        mkdir -p "artifacts/$target"
        cp "$scratch/$target/crash/"* "artifacts/$target/" 2>/dev/null || true
        echo "fuzz: $target CRASHED; the end of its log:" >&2
        tail -n 60 "$scratch/$target.log" >&2
        for input in "$scratch/$target/crash/"*; do
            [ -e "$input" ] || continue
            name=$(basename "$input")
            echo "fuzz: reproduce with: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --dev --sanitizer none $target artifacts/$target/$name)" >&2
        done
    fi
done

finished=$(date +%s)
echo "fuzz: built in $((built - started)) s, ran $(echo "$targets" | wc -w) targets in $((finished - built)) s"
if [ "$failed" -ne 0 ]; then
    echo "fuzz: $failed target(s) crashed" >&2
    exit 1
fi
