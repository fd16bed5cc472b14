#!/usr/bin/env bash
# Search benchmark (issue 5, item 5): builds `larch` in release mode, sets up its own virtualenv
# (bench/ann/.venv) from requirements.txt, then runs bench.py with the arguments given, e.g.
#
#   bench/ann/run.sh --quick          # 10k vectors, a few minutes (after the first embedding)
#   bench/ann/run.sh                  # 100k vectors, 1000 held-out queries
#   bench/ann/run.sh --systems larch,hnswlib --clients 4
#   bench/ann/run.sh --qdrant-bin ~/bin/qdrant   # Qdrant as a peer (skipped without a binary)
#
# Heavy (torch, ~3 GB of wheels; the first run embeds the dataset on the CPU): not part of
# tests/run or CI. Only 127.0.0.1 is contacted. Results: bench/ann/results/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [ ! -x "$here/.venv/bin/python" ]; then
    python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"

# larch-bench: `larch-bench load` measures every gRPC server (Larch, Qdrant) from Rust.
(cd "$repo" && cargo build --release -p larch -p larch-bench --bin larch --bin larch-bench)

# Everything stays on this machine: the model comes from the installed package.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False
cd "$here"
exec "$here/.venv/bin/python" bench.py --larch-bin "$repo/target/release/larch" \
    --larch-bench-bin "$repo/target/release/larch-bench" "$@"
