"""Search benchmark: Larch over gRPC against ANN peers, same data, same run, same machine.

Systems (each optional, `--systems`):
  larch     `target/release/larch serve` on 127.0.0.1, loaded and queried over gRPC by
            `larch-bench load` (Rust, requests encoded before timing; it also measures its own
            ceiling against gRPC health, so a result near the tool's limit is flagged)
  qdrant    a `qdrant` binary (on PATH or --qdrant-bin; skipped with a note otherwise), same
            HNSW parameters, loaded and queried over its own gRPC API by `larch-bench load`
  hnswlib   in-process (no network: the upper bound)
  faiss     faiss-cpu IndexHNSWFlat, in-process
  chroma    `chroma run` server + chromadb HttpClient (Python: chroma has no gRPC API)
  milvus    `milvus-lite server` gRPC server + pymilvus (Python client: `larch-bench load` does
            not speak Milvus' search messages)

For each: load (upsert in batches), time until fully indexed, recall@10 against exact ground
truth, QPS and p50/p99 latency at 1 client and at N clients (separate client processes for
servers, threads for in-process libraries; `larch-bench load` with N requests in flight for the
gRPC servers), server RSS after load; for Larch also restart time. The table names the tool that
measured each row.
ANN peers sweep their search parameter (ef) and are compared at the smallest ef reaching
recall@10 >= --target-recall. Every request loop is bounded in count and in time, and only
127.0.0.1 is ever contacted.

    python bench.py --quick             # 10k vectors, fewer queries: a few minutes
    python bench.py                      # 100k vectors, 1000 held-out queries
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import multiprocessing as mp
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = HERE / ".cache"
STUBS = CACHE / "stubs"
RESULTS = HERE / "results"
K = 10
LARCH_KEY = "larch-bench-key"
LISTENING = re.compile(r"larch control plane listening addr=(\S+)")
EF_SWEEP = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 128


class Skipped(Exception):
    """A system that cannot run here (e.g. no `qdrant` binary): reported, not a failure."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def rss_bytes(pid: int) -> int:
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total


def server_cpu(pid: int) -> float:
    """User+system CPU seconds of a server process tree."""
    import psutil

    total = 0.0
    proc = psutil.Process(pid)
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def recall(found: list[list[int]], gt: np.ndarray, k: int = K) -> float:
    hits = sum(len(set(f[:k]) & set(gt[i, :k].tolist())) for i, f in enumerate(found))
    return hits / (k * len(found))


def pct(lat_s: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(lat_s), p) * 1000.0) if lat_s else float("nan")


# --------------------------------------------------------------------------------------------
# Query clients. A client "spec" is a small picklable dict; make_client(spec) returns
# query(i) -> list of int ids, where i indexes the query set given with the spec.


def ensure_stubs() -> None:
    """Python stubs for Pinecone's data plane and Larch's control plane, generated from Larch's
    own .proto files at run time (grpcio-tools: no system protoc needed)."""
    root = REPO / "proto" / "proto"
    sources = [root / "vector_service.proto", root / "larch" / "control" / "v1" / "index.proto"]
    stamp = STUBS / "stamp"
    newest = max(s.stat().st_mtime for s in sources)
    if stamp.exists() and stamp.stat().st_mtime >= newest:
        return
    import grpc_tools
    from grpc_tools import protoc

    STUBS.mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    rc = protoc.main([
        "protoc", f"-I{root}", f"-I{include}", f"--python_out={STUBS}", f"--grpc_python_out={STUBS}",
        *[str(s.relative_to(root)) for s in sources],
    ])
    if rc != 0:
        raise RuntimeError(f"protoc failed on {sources} ({rc})")
    stamp.write_text(str(newest))


def _pb():
    if str(STUBS) not in sys.path:
        sys.path.insert(0, str(STUBS))
    import vector_service_pb2  # noqa: E402

    return vector_service_pb2


def _control_pb():
    if str(STUBS) not in sys.path:
        sys.path.insert(0, str(STUBS))
    from larch.control.v1 import index_pb2, index_pb2_grpc  # noqa: E402

    return index_pb2, index_pb2_grpc


def make_client(spec: dict, queries: np.ndarray):
    kind = spec["kind"]
    if kind == "larch-raw":
        import grpc

        pb = _pb()
        channel = grpc.insecure_channel(spec["host"])
        call = channel.unary_unary(
            "/VectorService/Query",
            request_serializer=None,  # requests are pre-serialised bytes: no client encode cost
            response_deserializer=pb.QueryResponse.FromString,
        )
        ns = spec.get("namespace", "")
        reqs = [pb.QueryRequest(vector=q.tolist(), top_k=K, namespace=ns).SerializeToString() for q in queries]
        meta = (("api-key", spec["key"]),)

        def query(i: int) -> list[int]:
            return [int(m.id) for m in call(reqs[i], metadata=meta, timeout=30).matches]

        return query
    if kind == "larch-pinecone":
        from pinecone.grpc import GrpcIndex

        index = GrpcIndex(host=spec["host"], api_key=spec["key"], grpc_scheme="http", secure=False)
        vecs = [q.tolist() for q in queries]
        ns = spec.get("namespace", "")

        def query(i: int) -> list[int]:
            return [int(m.id) for m in index.query(vector=vecs[i], top_k=K, namespace=ns).matches]

        return query
    if kind == "chroma":
        import chromadb
        from chromadb.config import Settings

        client = chromadb.HttpClient(host="127.0.0.1", port=spec["port"], settings=Settings(anonymized_telemetry=False))
        col = client.get_collection(spec["collection"])
        vecs = [q for q in queries]

        def query(i: int) -> list[int]:
            res = col.query(query_embeddings=[vecs[i]], n_results=K, include=[])
            return [int(x) for x in res["ids"][0]]

        return query
    if kind == "milvus":
        from pymilvus import MilvusClient

        client = MilvusClient(uri=f"http://127.0.0.1:{spec['port']}")
        vecs = [q.tolist() for q in queries]
        params = {"metric_type": "IP", "params": {"ef": spec["ef"]}}

        def query(i: int) -> list[int]:
            res = client.search(spec["collection"], data=[vecs[i]], limit=K, search_params=params)
            return [int(h["id"]) for h in res[0]]

        return query
    raise ValueError(kind)


def _worker(spec, queries, offset, count, deadline_s, ready, start, out) -> None:
    try:
        query = make_client(spec, queries)
        for j in range(min(5, len(queries))):  # connect and warm up outside the clock
            query((offset + j) % len(queries))
        ready.put(("ready", None))
        start.wait()
        lat: list[float] = []
        t_end = time.perf_counter() + deadline_s
        for j in range(count):
            t = time.perf_counter()
            query((offset + j) % len(queries))
            lat.append(time.perf_counter() - t)
            if t + lat[-1] > t_end:
                break
        out.put(("done", lat))
    except BaseException:  # report instead of hanging the parent
        ready.put(("error", traceback.format_exc()))
        out.put(("error", traceback.format_exc()))


def run_processes(spec: dict, queries: np.ndarray, clients: int, total: int, max_s: float) -> dict:
    """N client processes, each its own connection; wall time from a common start."""
    ctx = mp.get_context("spawn")
    ready, out, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    per = max(1, total // clients)
    procs = [
        ctx.Process(target=_worker, args=(spec, queries, c * per, per, max_s, ready, start, out), daemon=True)
        for c in range(clients)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            status, err = ready.get(timeout=180)
            if status == "error":
                raise RuntimeError(f"client process failed:\n{err}")
        t0 = time.perf_counter()
        start.set()
        lat: list[float] = []
        for _ in procs:
            status, got = out.get(timeout=max_s + 120)
            if status == "error":
                raise RuntimeError(f"client process failed:\n{got}")
            lat.extend(got)
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return {"clients": clients, "queries": len(lat), "seconds": wall, "qps": len(lat) / wall,
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "mode": "processes"}


def run_threads(query, n_queries: int, clients: int, total: int, max_s: float) -> dict:
    per = max(1, total // clients)
    lats: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def body(c: int) -> None:
        barrier.wait()
        t_end = time.perf_counter() + max_s
        for j in range(per):
            t = time.perf_counter()
            query((c * per + j) % n_queries)
            lats[c].append(time.perf_counter() - t)
            if t + lats[c][-1] > t_end:
                break

    threads = [threading.Thread(target=body, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = [x for l in lats for x in l]
    return {"clients": clients, "queries": len(lat), "seconds": wall, "qps": len(lat) / wall,
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "mode": "threads"}


def run_serial(query, n_queries: int, count: int, max_s: float, keep: bool = False) -> tuple[dict, list]:
    """One client: every query in turn (ids kept for recall when `keep`)."""
    lat: list[float] = []
    found: list[list[int]] = []
    t_end = time.perf_counter() + max_s
    t0 = time.perf_counter()
    for j in range(count):
        t = time.perf_counter()
        ids = query(j % n_queries)
        lat.append(time.perf_counter() - t)
        if keep:
            found.append(ids)
        if t + lat[-1] > t_end:
            break
    wall = time.perf_counter() - t0
    return ({"clients": 1, "queries": len(lat), "seconds": wall, "qps": len(lat) / wall,
             "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "mode": "serial"}, found)


# --------------------------------------------------------------------------------------------
# `larch-bench load`: the Rust load generator for every gRPC server peer.

TOOL = "larch-bench load (Rust, pre-encoded gRPC)"
# The call `larch-bench load --mode health` sends to each --target (its default ceiling).
HEALTH = {"larch": "/grpc.health.v1.Health/Check", "qdrant": "/qdrant.Qdrant/HealthCheck"}


class LoadTool:
    """Runs `larch-bench load --json` against one server; the queries go to it once as .npy."""

    def __init__(self, binary: Path, workdir: Path, queries: np.ndarray):
        if not binary.exists():
            raise FileNotFoundError(f"{binary} missing: build it with cargo build --release -p larch-bench")
        self.binary = binary
        self.workdir = workdir
        self.queries = workdir / "queries.npy"
        np.save(self.queries, np.ascontiguousarray(queries, dtype=np.float32))
        self.n = len(queries)

    def run(self, target: list[str], key: str | None, flags: list[str], timeout: float) -> dict:
        cmd = [str(self.binary), "load", "--json", *target, *flags]
        # The key travels in the environment (not the process list); no other LARCH_ setting leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("LARCH_")}
        if key:
            env["LARCH_API_KEY"] = key
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr[-2000:]}")
        res = json.loads(out.stdout)
        if res["failed"]:
            raise RuntimeError(f"larch-bench load: {res['failed']} failed calls: {res['errors']} "
                               f"{res['error_messages']}")
        return res

    @staticmethod
    def _lat(res: dict, clients: int, mode: str) -> dict:
        out = {"clients": clients, "queries": res["ok"], "seconds": res["duration_s"], "qps": res["qps"],
               "p50_ms": res["p50_ms"], "p95_ms": res["p95_ms"], "p99_ms": res["p99_ms"],
               "max_ms": res["max_ms"], "mode": mode, "tool": TOOL}
        if res.get("ceiling"):
            out.update(ceiling_qps=res["ceiling_qps"], ceiling_method=res["ceiling"]["method"],
                       ratio_to_ceiling=res["ratio_to_ceiling"],
                       tool_may_be_bottleneck=res["tool_may_be_bottleneck"])
        return out

    def serial(self, target: list[str], key: str | None, count: int, max_s: float,
               keep: bool = True) -> tuple[dict, list]:
        """One request in flight, `count` queries cycling from the first (so each held-out query
        is answered once when count >= n); the ids of each query's answer when `keep`."""
        ids = self.workdir / "ids.jsonl"
        flags = ["--queries", str(self.queries), "--concurrency", "1", "--connections", "1",
                 "--requests", str(count), "--duration", f"{max_s:.0f}s", "--warmup", "500ms",
                 "--no-ceiling"]
        if keep:
            flags += ["--collect-ids", str(ids)]
        res = self.run(target, key, flags, max_s + 120)
        found = []
        if keep:
            for line in ids.read_text().splitlines():
                answer = json.loads(line)
                if answer is None:
                    break  # the time cap stopped the run before this query
                found.append([int(x) for x in answer])
        return self._lat(res, 1, "larch-bench load, 1 in flight"), found

    def many(self, target: list[str], key: str | None, clients: int, seconds: float, pid: int) -> dict:
        """`clients` requests in flight (over up to 4 connections) for `seconds`, with the
        server's CPU time over exactly that run (no warm-up: the connections are open before the
        clock starts), then the tool's ceiling: the same load against the server's health check,
        as a separate run so its CPU is not counted."""
        base = ["--concurrency", str(clients), "--duration", f"{seconds}s", "--warmup", "0s", "--no-ceiling"]
        cpu0 = server_cpu(pid)
        res = self.run(target, key, ["--queries", str(self.queries), *base], seconds + 120)
        cpu = server_cpu(pid) - cpu0
        out = self._lat(res, clients, f"larch-bench load, {clients} in flight")
        out.update(server_cpu_s=cpu, server_cpu_ms_per_query=1000 * cpu / max(1, res["ok"]),
                   server_cores_busy=cpu / res["duration_s"])
        ceiling = self.run(target, key, ["--mode", "health", *base], seconds + 120)
        ratio = res["qps"] / ceiling["qps"] if ceiling["qps"] else None
        out.update(ceiling_qps=ceiling["qps"], ceiling_method=HEALTH[target[target.index("--target") + 1]],
                   ratio_to_ceiling=ratio, tool_may_be_bottleneck=ratio is not None and ratio >= 0.7)
        if out.get("tool_may_be_bottleneck"):
            log(f"warning: QPS is {out['ratio_to_ceiling']:.0%} of larch-bench load's ceiling: "
                "the tool may be the bottleneck")
        return out

    def upsert(self, target: list[str], key: str | None, base_npy: Path, batch: int,
               writers: int, n: int) -> dict:
        flags = ["--mode", "upsert", "--vectors", str(base_npy), "--batch", str(batch),
                 "--concurrency", str(writers), "--connections", str(writers), "--warmup", "0s",
                 "--no-ceiling"]
        res = self.run(target, key, flags, 3600)
        if res["vectors"] != n:
            raise RuntimeError(f"upserted {res['vectors']} vectors, expected {n}")
        return {"seconds": res["duration_s"], "vectors_per_s": res["vectors_per_s"], "batch": batch,
                "writers": writers, "tool": TOOL, "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"]}


# --------------------------------------------------------------------------------------------
# Systems


class System:
    name = "?"
    server = True
    tunable = True  # has a search parameter to sweep
    pid: int | None = None

    def start(self, workdir: Path) -> None: ...
    def load(self, base: np.ndarray, batch: int) -> dict: ...
    def wait_indexed(self, n: int, max_s: float) -> float: ...
    def set_ef(self, ef: int) -> None: ...
    def query_fn(self, queries: np.ndarray): ...
    def spec(self) -> dict | None: return None
    # (target flags, api key) for `larch-bench load`, or None: measured by a Python client.
    def tool_target(self) -> tuple[list[str], str | None] | None: return None
    measured_by = "Python client"
    def rss(self) -> int | None: return rss_bytes(self.pid) if self.pid else None
    def stop(self) -> None: ...
    def versions(self) -> dict: return {}


def _dist(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class Larch(System):
    name = "larch"
    tunable = True  # ef_search per index, through ConfigureIndex

    def __init__(self, binary: Path, writers: int, quantization: str | None = None):
        self.binary = binary
        self.writers = writers
        self.quantization = quantization
        self.proc = None
        self.client_kind = "larch-raw"  # the one query timed after a restart
        self.tool: LoadTool | None = None  # set by measure()

    measured_by = TOOL

    def tool_target(self) -> tuple[list[str], str | None]:
        return ["--addr", self.host, "--target", "larch"], LARCH_KEY

    def _spawn(self) -> tuple[str, float]:
        log_path = self.workdir / f"larch-{int(time.time() * 1000)}.log"
        self.log_path = log_path
        self.log_file = open(log_path, "w")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--control-addr", "127.0.0.1:0", "--data-ports", "0",
             "--admin-addr", "127.0.0.1:0", "--data-dir", str(self.data_dir)],
            env={**os.environ, "LARCH_API_KEY": LARCH_KEY, "LARCH_LOG": "info"},
            stdout=subprocess.DEVNULL, stderr=self.log_file,
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = LISTENING.search(log_path.read_text())
            if m:
                return m.group(1), t0
            if self.proc.poll() is not None:
                raise RuntimeError(f"larch exited with {self.proc.returncode}: {log_path.read_text()[-2000:]}")
            time.sleep(0.005)
        raise TimeoutError("larch did not report its control address")

    def _control(self, method: str, **fields):
        import grpc

        pb, pb_grpc = _control_pb()
        request = getattr(pb, f"{method}Request")(**fields)
        with grpc.insecure_channel(self.addr) as ch:
            return getattr(pb_grpc.IndexServiceStub(ch), method)(
                request, metadata=(("api-key", LARCH_KEY),), timeout=60)

    def start(self, workdir: Path) -> None:
        ensure_stubs()
        self.workdir = workdir
        self.data_dir = workdir / "larch-data"
        self.addr, _ = self._spawn()
        self._wait_health(60)
        pb, _ = _control_pb()
        model = self._control(
            "CreateIndex", name="bench", dimension=384, metric="cosine",
            spec=pb.IndexSpec(serverless=pb.ServerlessSpec(cloud="aws", region="us-west-2")),
            deletion_protection="disabled",
            search=pb.SearchParams(quantization=self.quantization),
        )
        # What the server chose when the run left it to its default.
        self.quantization = model.search.quantization
        self.host = model.host
        assert self.host.startswith("127.0.0.1:"), self.host

    def _wait_health(self, max_s: float) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + max_s
        with grpc.insecure_channel(self.addr) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                with contextlib.suppress(grpc.RpcError):
                    if stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status == \
                            health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.002)
        raise TimeoutError("larch control plane never reported SERVING")

    def _stub(self, method: str, resp: str):
        import grpc

        pb = _pb()
        ch = grpc.insecure_channel(self.host)
        return ch.unary_unary(f"/VectorService/{method}", request_serializer=None,
                              response_deserializer=getattr(pb, resp).FromString)

    def load(self, base: np.ndarray, batch: int) -> dict:
        """Upserts through `larch-bench load --mode upsert` (requests encoded before timing,
        `writers` in flight, ids = row numbers), each acknowledged after fsync."""
        base_npy = self.workdir / "base.npy"
        np.save(base_npy, np.ascontiguousarray(base, dtype=np.float32))
        res = self.tool.upsert(*self.tool_target(), base_npy, batch, self.writers, len(base))
        self.t_last_upsert = time.perf_counter()
        return {**res, "durable": True}

    def sdk_upsert(self, base: np.ndarray, batch: int, writers: int, count: int) -> dict:
        """Durable upserts through Pinecone's own Python gRPC client (`GrpcIndex.upsert`,
        `writers` threads, batches of `batch`) into a namespace of their own, timed from the
        first request to the last acknowledgement, including the client's own encoding (what
        an SDK user pays). The namespace is deleted afterwards, so the measured graph is the
        one searched. One measurement of the SDK path, next to the Rust tool's."""
        from concurrent.futures import ThreadPoolExecutor
        from pinecone.grpc import GrpcIndex

        index = GrpcIndex(host=self.host, api_key=LARCH_KEY, grpc_scheme="http", secure=False)
        rows = base[:count]
        batches = [[(f"sdk-{i}", rows[i].tolist()) for i in range(lo, min(lo + batch, len(rows)))]
                   for lo in range(0, len(rows), batch)]
        t = time.perf_counter()
        with ThreadPoolExecutor(writers) as pool:
            for done in pool.map(lambda vs: index.upsert(vectors=vs, namespace="sdk-ingest",
                                                          show_progress=False), batches):
                assert done.upserted_count > 0, done
        seconds = time.perf_counter() - t
        index.delete(delete_all=True, namespace="sdk-ingest")
        return {"vectors": len(rows), "seconds": seconds, "vectors_per_s": len(rows) / seconds,
                "writers": writers, "batch": batch, "client": "pinecone " + _dist("pinecone"),
                "note": "tolist() of the rows is done before timing; the SDK's protobuf encoding is timed"}

    def _count(self) -> int:
        pb = _pb()
        stats = self._stub("DescribeIndexStats", "DescribeIndexStatsResponse")
        return stats(pb.DescribeIndexStatsRequest().SerializeToString(),
                     metadata=(("api-key", LARCH_KEY),), timeout=10).total_vector_count

    def _indexed(self, n: int, max_s: float) -> dict:
        """Waits for the server's "namespace fully indexed" log event covering `n` records
        (every write is searchable once acknowledged, exactly; this is when the HNSW graph has
        caught up) and returns its fields."""
        deadline = time.monotonic() + max_s
        pattern = re.compile(r"namespace fully indexed.*?records=(\d+) graph_bytes=(\d+) graph_bytes_per_vector=(\d+)")
        while True:
            for m in pattern.finditer(self.log_path.read_text()):
                if int(m.group(1)) >= n:
                    return {"records": int(m.group(1)), "graph_bytes": int(m.group(2)),
                            "graph_bytes_per_vector": int(m.group(3))}
            if time.monotonic() > deadline:
                raise TimeoutError("larch never reported the namespace fully indexed")
            time.sleep(0.05)

    def wait_indexed(self, n: int, max_s: float) -> float:
        deadline = time.monotonic() + max_s
        while self._count() < n:
            if time.monotonic() > deadline:
                raise TimeoutError("larch never reported all vectors")
            time.sleep(0.01)
        self.indexing = self._indexed(n, max_s)
        self.indexing_signal = "log event: namespace fully indexed"
        return time.perf_counter() - self.t_last_upsert

    def set_ef(self, ef: int) -> None:
        pb, _ = _control_pb()
        self._control("ConfigureIndex", name="bench", search=pb.SearchParams(ef_search=max(8, ef)))

    def spec(self) -> dict:
        return {"kind": self.client_kind, "host": self.host, "key": LARCH_KEY}

    def profile(self, queries: np.ndarray, one: dict, many: dict) -> dict:
        """Where a query's time goes, without a profiler: the same client and RPC against a
        namespace that does not exist (answered empty without searching) gives the transport +
        client floor; the rest of the single-client latency is the search itself. Server CPU per
        query at N clients comes from the process' CPU time."""
        target, key = self.tool_target()
        floor, _ = self.tool.serial([*target, "--namespace", "larch-bench-empty"], key,
                                    min(500, len(queries)), 60, keep=False)
        return {
            "transport_floor_p50_ms": floor["p50_ms"],
            "transport_floor_p99_ms": floor["p99_ms"],
            "query_p50_ms": one["p50_ms"],
            "search_share_of_p50": max(0.0, 1 - floor["p50_ms"] / one["p50_ms"]),
            "server_cpu_ms_per_query_at_n": many.get("server_cpu_ms_per_query"),
            "server_cores_busy_at_n": many.get("server_cores_busy"),
        }

    def query_fn(self, queries: np.ndarray):
        return make_client(self.spec(), queries)

    def restart(self, queries: np.ndarray) -> dict:
        """SIGTERM, start again on the same data dir, time to health SERVING and first answer."""
        t_stop = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        stop_s = time.perf_counter() - t_stop
        self.log_file.close()
        self.addr, t0 = self._spawn()
        listen_s = time.perf_counter() - t0
        self._wait_health(600)
        serving_s = time.perf_counter() - t0
        self.host = self._control("DescribeIndex", name="bench").host
        q = None
        deadline = time.monotonic() + 600
        while True:
            try:
                q = q or make_client(self.spec(), queries[:1])
                ids = q(0)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.002)
        first_query_s = time.perf_counter() - t0
        # Graphs are rebuilt from the recovered records in the background (queries are exact
        # over what is not indexed yet, so answers stay complete meanwhile).
        self._indexed(self._count(), 900)
        reindexed_s = time.perf_counter() - t0
        # A fresh process holding what was recovered: no ingest or flush buffers in its heap.
        rss = self.rss()
        return {"exit_code": rc, "stop_s": stop_s, "listening_s": listen_s, "health_serving_s": serving_s,
                "first_query_s": first_query_s, "first_query_matches": len(ids),
                "fully_indexed_again_s": reindexed_s, "rss_after_restart_bytes": rss}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def versions(self) -> dict:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        built = dt.datetime.fromtimestamp(self.binary.stat().st_mtime).astimezone().isoformat()
        return {"larch_commit": commit + ("+dirty" if dirty else ""), "binary": str(self.binary),
                "binary_built": built, "client": TOOL,
                "search": f"HNSW M={HNSW_M} ef_construction={HNSW_EF_CONSTRUCTION} (engine defaults: 16 / 128), "
                          f"quantization {self.quantization}",
                "graph": getattr(self, "indexing", None)}


class Hnswlib(System):
    name = "hnswlib"
    server = False

    def start(self, workdir: Path) -> None:
        import psutil

        self.rss0 = psutil.Process().memory_info().rss

    def load(self, base: np.ndarray, batch: int) -> dict:
        import hnswlib

        t0 = time.perf_counter()
        self.index = hnswlib.Index(space="ip", dim=base.shape[1])
        self.index.init_index(max_elements=len(base), ef_construction=HNSW_EF_CONSTRUCTION, M=HNSW_M)
        self.index.add_items(base, np.arange(len(base)), num_threads=os.cpu_count())
        secs = time.perf_counter() - t0
        return {"seconds": secs, "vectors_per_s": len(base) / secs, "batch": len(base), "durable": False,
                "note": "in-memory graph build, all cores"}

    def wait_indexed(self, n: int, max_s: float) -> float:
        return 0.0  # add_items returns once the graph holds every vector

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)

    def query_fn(self, queries: np.ndarray):
        index = self.index

        def query(i: int) -> list[int]:
            labels, _ = index.knn_query(queries[i:i + 1], k=K, num_threads=1)
            return labels[0].tolist()

        return query

    def rss(self) -> int:
        import psutil

        return psutil.Process().memory_info().rss - self.rss0

    def versions(self) -> dict:
        return {"hnswlib": _dist("hnswlib"), "M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}


class Faiss(Hnswlib):
    name = "faiss"

    def load(self, base: np.ndarray, batch: int) -> dict:
        import faiss

        faiss.omp_set_num_threads(os.cpu_count())
        t0 = time.perf_counter()
        self.index = faiss.IndexHNSWFlat(base.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        self.index.add(base)
        secs = time.perf_counter() - t0
        faiss.omp_set_num_threads(1)  # one query per call: parallelism comes from the clients
        return {"seconds": secs, "vectors_per_s": len(base) / secs, "batch": len(base), "durable": False,
                "note": "in-memory graph build, all cores"}

    def set_ef(self, ef: int) -> None:
        self.index.hnsw.efSearch = ef

    def query_fn(self, queries: np.ndarray):
        index = self.index

        def query(i: int) -> list[int]:
            _, labels = index.search(queries[i:i + 1], K)
            return labels[0].tolist()

        return query

    def versions(self) -> dict:
        return {"faiss-cpu": _dist("faiss-cpu"), "M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}


class Chroma(System):
    name = "chroma"

    def start(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self._launch()
        self.col = self.client.create_collection(
            "bench",
            configuration={"hnsw": {"space": "ip", "max_neighbors": HNSW_M,
                                    "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": 64}},
        )

    def _launch(self) -> None:
        self.log_file = open(self.workdir / "chroma.log", "a")
        chroma = Path(sys.executable).parent / "chroma"
        self.proc = subprocess.Popen(
            [str(chroma), "run", "--path", str(self.workdir / "chroma-data"), "--host", "127.0.0.1",
             "--port", str(self.port)],
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
            stdout=self.log_file, stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        wait_port(self.port, 120)
        import chromadb
        from chromadb.config import Settings

        self.client = chromadb.HttpClient(host="127.0.0.1", port=self.port,
                                          settings=Settings(anonymized_telemetry=False))
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.heartbeat()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def load(self, base: np.ndarray, batch: int) -> dict:
        t0 = time.perf_counter()
        for lo in range(0, len(base), batch):
            chunk = base[lo:lo + batch]
            self.col.add(ids=[str(lo + j) for j in range(len(chunk))], embeddings=chunk)
        secs = time.perf_counter() - t0
        self.t_last_upsert = time.perf_counter()
        return {"seconds": secs, "vectors_per_s": len(base) / secs, "batch": batch,
                "durable": "chroma write-ahead log (sqlite)"}

    def wait_indexed(self, n: int, max_s: float) -> float:
        deadline = time.monotonic() + max_s
        self.indexing_signal = "count"
        while True:
            try:
                st = self.col.get_indexing_status()
                self.indexing_signal = "get_indexing_status"
                done = st.num_unindexed_ops == 0 and st.total_ops >= n
            except Exception:
                done = self.col.count() >= n
            if done:
                return time.perf_counter() - self.t_last_upsert
            if time.monotonic() > deadline:
                raise TimeoutError("chroma never reported all vectors indexed")
            time.sleep(0.05)

    def set_ef(self, ef: int) -> None:
        # chroma 1.5's local server stores a modified ef_search but keeps searching the loaded
        # index with the old one (measured: recall unchanged) until the collection is reloaded,
        # so the server is restarted on the same path and port after each change.
        self.col.modify(configuration={"hnsw": {"ef_search": ef}})
        self.stop()
        self._launch()
        self.col = self.client.get_collection("bench")

    def spec(self) -> dict:
        return {"kind": "chroma", "port": self.port, "collection": "bench"}

    def query_fn(self, queries: np.ndarray):
        return make_client(self.spec(), queries)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def versions(self) -> dict:
        return {"chromadb": _dist("chromadb"), "M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}


class Milvus(System):
    name = "milvus"

    def start(self, workdir: Path) -> None:
        self.port = free_port()
        self.log_file = open(workdir / "milvus.log", "w")
        exe = Path(sys.executable).parent / "milvus-lite"
        self.proc = subprocess.Popen(
            [str(exe), "server", "--data-dir", str(workdir / "milvus-data"), "--host", "127.0.0.1",
             "--port", str(self.port)],
            stdout=self.log_file, stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        wait_port(self.port, 120)
        from pymilvus import DataType, MilvusClient

        self.client = MilvusClient(uri=f"http://127.0.0.1:{self.port}")
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=384)
        # Milvus' documented order for a bulk load: insert, flush, create_index, load (load
        # builds every segment's HNSW synchronously, so "loaded" means "fully indexed").
        self.client.create_collection("bench", schema=schema)
        self.ef = 64

    def load(self, base: np.ndarray, batch: int) -> dict:
        t0 = time.perf_counter()
        for lo in range(0, len(base), batch):
            chunk = base[lo:lo + batch]
            self.client.insert("bench", [{"id": lo + j, "vec": v} for j, v in enumerate(chunk.tolist())])
        secs = time.perf_counter() - t0
        self.t_last_upsert = time.perf_counter()
        return {"seconds": secs, "vectors_per_s": len(base) / secs, "batch": batch,
                "durable": "milvus-lite write-ahead log"}

    def wait_indexed(self, n: int, max_s: float) -> float:
        from pymilvus import MilvusClient

        self.client.flush("bench")
        index = MilvusClient.prepare_index_params()
        index.add_index(field_name="vec", index_type="HNSW", metric_type="IP",
                        params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION})
        self.client.create_index("bench", index)
        self.client.load_collection("bench", timeout=max_s)
        rows = int(self.client.get_collection_stats("bench").get("row_count", 0))
        if rows < n:
            raise RuntimeError(f"milvus holds {rows} rows, expected {n}")
        self.indexing_signal = "flush + create_index + load_collection returned"
        return time.perf_counter() - self.t_last_upsert

    def set_ef(self, ef: int) -> None:
        self.ef = ef

    def spec(self) -> dict:
        return {"kind": "milvus", "port": self.port, "collection": "bench", "ef": self.ef}

    def query_fn(self, queries: np.ndarray):
        return make_client(self.spec(), queries)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def versions(self) -> dict:
        return {"milvus-lite": _dist("milvus-lite"), "pymilvus": _dist("pymilvus"), "M": HNSW_M,
                "ef_construction": HNSW_EF_CONSTRUCTION}


class Qdrant(System):
    """A `qdrant` binary started here (temporary storage, ports given through its env config),
    collection created over REST with Larch's HNSW parameters, loaded and queried over its gRPC
    API by `larch-bench load`; `hnsw_ef` is set per search request at each sweep point. Nothing
    here downloads or builds Qdrant: without a binary the system is skipped."""

    name = "qdrant"
    measured_by = TOOL

    def __init__(self, binary: str | None, writers: int):
        found = binary or shutil.which("qdrant")
        if not found or not Path(found).exists():
            raise Skipped("no qdrant binary (put one on PATH or pass --qdrant-bin)")
        self.binary = Path(found)
        self.writers = writers
        self.proc = None
        self.ef = 64
        self.tool: LoadTool | None = None  # set by measure()

    def _rest(self, method: str, path: str, body: dict | None = None, timeout: float = 60) -> dict:
        import urllib.request

        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        # Most answers are JSON; /readyz answers plain text ("all shards are ready").
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError:
            return {"text": body.decode(errors="replace")}

    def start(self, workdir: Path) -> None:
        self.workdir = workdir
        self.http_port, self.grpc_port = free_port(), free_port()
        env = {**os.environ,
               "QDRANT__SERVICE__HOST": "127.0.0.1",
               "QDRANT__SERVICE__HTTP_PORT": str(self.http_port),
               "QDRANT__SERVICE__GRPC_PORT": str(self.grpc_port),
               "QDRANT__STORAGE__STORAGE_PATH": str(workdir / "qdrant-storage"),
               "QDRANT__STORAGE__SNAPSHOTS_PATH": str(workdir / "qdrant-snapshots"),
               "QDRANT__TELEMETRY_DISABLED": "true",
               "QDRANT__LOG_LEVEL": "INFO"}
        self.log_file = open(workdir / "qdrant.log", "w")
        # cwd = workdir: qdrant looks for ./config and ./static there, and finds none.
        self.proc = subprocess.Popen([str(self.binary)], cwd=workdir, env=env,
                                     stdout=self.log_file, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        wait_port(self.http_port, 120)
        wait_port(self.grpc_port, 120)
        deadline = time.monotonic() + 60
        while True:
            try:
                self._rest("GET", "/readyz", timeout=5)
                break
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)
        # Same graph as every HNSW peer; segments of any size get an HNSW index (the default
        # threshold would leave a 10k-vector quick run brute-forced).
        self._rest("PUT", "/collections/bench", {
            "vectors": {"size": 384, "distance": "Cosine"},
            "hnsw_config": {"m": HNSW_M, "ef_construct": HNSW_EF_CONSTRUCTION},
            "optimizers_config": {"indexing_threshold": 1000},
        })

    def tool_target(self) -> tuple[list[str], str | None]:
        return ["--addr", f"127.0.0.1:{self.grpc_port}", "--target", "qdrant", "--collection", "bench",
                "--hnsw-ef", str(self.ef)], None

    def load(self, base: np.ndarray, batch: int) -> dict:
        base_npy = self.workdir / "base.npy"
        np.save(base_npy, np.ascontiguousarray(base, dtype=np.float32))
        res = self.tool.upsert(*self.tool_target(), base_npy, batch, self.writers, len(base))
        self.t_last_upsert = time.perf_counter()
        return {**res, "durable": "qdrant write-ahead log (wait=true)"}

    def wait_indexed(self, n: int, max_s: float) -> float:
        deadline = time.monotonic() + max_s
        while True:
            info = self._rest("GET", "/collections/bench")["result"]
            points = info.get("points_count") or 0
            indexed = info.get("indexed_vectors_count") or 0
            if info.get("status") == "green" and points >= n and indexed >= 0.9 * n:
                self.indexing_signal = (f"collection status green, {indexed} of {points} vectors in "
                                        "HNSW segments")
                return time.perf_counter() - self.t_last_upsert
            if time.monotonic() > deadline:
                raise TimeoutError(f"qdrant never finished indexing: {info}")
            time.sleep(0.1)

    def set_ef(self, ef: int) -> None:
        self.ef = ef

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def versions(self) -> dict:
        out = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True)
        return {"qdrant": (out.stdout or out.stderr).strip(), "binary": str(self.binary),
                "M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "client": TOOL}


# --------------------------------------------------------------------------------------------


def measure(system: System, data: dict, args, workdir: Path) -> dict:
    base, queries, gt = data["base"], data["queries"], data["gt"]
    res: dict = {"system": system.name, "server": system.server, "measured_by": system.measured_by}
    t = time.perf_counter()
    tool = None
    if hasattr(system, "tool"):  # gRPC server peers: loaded and queried by larch-bench load
        tool = system.tool = LoadTool(Path(args.larch_bench_bin), workdir, queries)
    system.start(workdir)
    res["start_s"] = time.perf_counter() - t
    log(f"{system.name}: loading {len(base)} vectors")
    res["load"] = system.load(base, args.batch)
    log(f"{system.name}: loaded at {res['load']['vectors_per_s']:.0f} vectors/s")
    res["index_wait_s"] = system.wait_indexed(len(base), args.max_index_wait)
    res["indexing_signal"] = getattr(system, "indexing_signal", "count / synchronous")
    log(f"{system.name}: fully indexed {res['index_wait_s']:.2f}s after the last upsert")
    time.sleep(1.0)
    res["rss_bytes"] = system.rss()
    res["rss_note"] = "server process tree" if system.server else "bench process RSS growth (in-process index)"

    nq = len(queries)
    sweep = []
    if system.tunable:
        for ef in EF_SWEEP:
            system.set_ef(ef)
            if tool:
                lat, found = tool.serial(*system.tool_target(), nq, args.max_phase_s)
            else:
                q = system.query_fn(queries)
                run_serial(q, nq, min(20, nq), 30)  # warm
                lat, found = run_serial(q, nq, nq, args.max_phase_s, keep=True)
            r = recall(found, gt[:len(found)])
            sweep.append({"ef": ef, "recall_at_10": r, "qps_1": lat["qps"], "p50_ms": lat["p50_ms"],
                          "p99_ms": lat["p99_ms"], "queries": lat["queries"]})
            log(f"{system.name}: ef={ef} recall@10={r:.4f} qps@1={lat['qps']:.0f}")
            if r >= args.target_recall and ef >= EF_SWEEP[2] and len(sweep) >= 3 and \
                    sweep[-2]["recall_at_10"] >= args.target_recall:
                break  # two points past the target are enough for the curve
        reached = [p for p in sweep if p["recall_at_10"] >= args.target_recall]
        op = reached[0] if reached else max(sweep, key=lambda p: p["recall_at_10"])
        system.set_ef(op["ef"])
        res["ef"] = op["ef"]
        res["reached_target_recall"] = bool(reached)
    if tool:
        # One run: every held-out query answered once (recall), then cycling up to --q1.
        one, found = tool.serial(*system.tool_target(), max(nq, args.q1), args.max_phase_s)
    else:
        q = system.query_fn(queries)
        run_serial(q, nq, min(20, nq), 30)
        one, found = run_serial(q, nq, nq, args.max_phase_s, keep=True)
    res["recall_at_10"] = recall(found, gt[:len(found)])
    res["recall_queries"] = len(found)
    if not tool and args.q1 > nq:  # more single-client latency samples, cycling the held-out queries
        one, _ = run_serial(q, nq, args.q1, args.max_phase_s)
    res["one_client"] = one
    log(f"{system.name}: recall@10={res['recall_at_10']:.4f} qps@1={one['qps']:.0f} "
        f"p50={one['p50_ms']:.2f}ms p99={one['p99_ms']:.2f}ms")
    cpu0 = server_cpu(system.pid) if system.server and not tool else None
    if tool:
        many = tool.many(*system.tool_target(), args.clients, args.load_seconds, system.pid)
    elif system.server:
        many = run_processes(system.spec(), queries, args.clients, args.qn, args.max_phase_s)
    else:
        many = run_threads(q, nq, args.clients, args.qn, args.max_phase_s)
    if cpu0 is not None:
        cpu = server_cpu(system.pid) - cpu0
        many["server_cpu_s"] = cpu
        many["server_cpu_ms_per_query"] = 1000 * cpu / max(1, many["queries"])
        many["server_cores_busy"] = cpu / many["seconds"]
    res["n_clients"] = many
    log(f"{system.name}: qps@{args.clients}={many['qps']:.0f} p99={many['p99_ms']:.2f}ms"
        + (f" (tool ceiling {many['ceiling_qps']:.0f} QPS)" if many.get("ceiling_qps") else ""))
    if sweep:
        res["sweep"] = sweep
    else:
        res["sweep"] = [{"ef": None, "recall_at_10": res["recall_at_10"], "qps_1": one["qps"],
                         "p50_ms": one["p50_ms"], "p99_ms": one["p99_ms"], "queries": one["queries"]}]
    if isinstance(system, Larch):
        res["profile"] = system.profile(queries, one, many)
        res["sdk_upsert"] = system.sdk_upsert(base, args.batch, args.writers, min(len(base), 50_000))
        log(f"larch: Pinecone's Python SDK upserted {res['sdk_upsert']['vectors_per_s']:.0f} vectors/s "
            f"({args.writers} thread(s), batches of {args.batch})")
    if isinstance(system, Larch) and not args.no_restart:
        res["restart"] = system.restart(queries)
        log(f"larch: restart {res['restart']['first_query_s']:.3f}s to the first answer, "
            f"{res['restart']['fully_indexed_again_s']:.2f}s to fully indexed, "
            f"then RSS {fmt_bytes(res['restart']['rss_after_restart_bytes'])}")
    res["versions"] = system.versions()
    return res


def fmt_ratio(r: float) -> str:
    return f"{r:.2f}×" if r >= 0.1 else f"{r:.3f}×"


def fmt_bytes(b) -> str:
    return "–" if b is None else f"{b / 2**20:,.0f} MiB"


def measured_by(r: dict, many: dict) -> str:
    if not r["server"]:
        return "in-process calls"
    by = r.get("measured_by", "Python client")
    if "ceiling_qps" in many:
        by += f"; its ceiling {many['ceiling_qps']:,.0f} QPS"
        if many.get("tool_may_be_bottleneck"):
            by += " (near it: the tool may be the bottleneck)"
    return by


def table(results: list[dict], clients: int) -> str:
    larch = next((r for r in results if r["system"] == "larch" and "error" not in r), None)
    head = (f"| system | recall@10 | QPS@1 | QPS@{clients} | p50 / p99 @1 (ms) | upsert vec/s | "
            f"index wait (s) | RSS | restart (s) | Larch/peer QPS@1 | Larch/peer QPS@{clients} | "
            f"measured by |")
    lines = [head, "|" + "|".join(["---"] * 12) + "|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['system']} | not run: {r['error'].splitlines()[-1][:120]} |" + " |" * 10)
            continue
        name = r["system"] + (f" (ef={r['ef']})" if r.get("ef") else "") + ("" if r["server"] else ", in-process")
        one, many = r["one_client"], r["n_clients"]
        restart = f"{r['restart']['first_query_s']:.2f}" if "restart" in r else "–"
        if larch and r is not larch:
            ratio1 = fmt_ratio(larch["one_client"]["qps"] / one["qps"])
            ration = fmt_ratio(larch["n_clients"]["qps"] / many["qps"])
        else:
            ratio1 = ration = "–"
        lines.append(
            f"| {name} | {r['recall_at_10']:.3f} | {one['qps']:,.0f} | {many['qps']:,.0f} | "
            f"{one['p50_ms']:.2f} / {one['p99_ms']:.2f} | {r['load']['vectors_per_s']:,.0f} | "
            f"{r['index_wait_s']:.2f} | {fmt_bytes(r['rss_bytes'])} | {restart} | {ratio1} | {ration} | "
            f"{measured_by(r, many)} |"
        )
    return "\n".join(lines)


def targets(results: list[dict], target_recall: float) -> list[dict]:
    """Issue 15's targets (item 6), each measured in this run."""
    ok = {r["system"]: r for r in results if "error" not in r}
    larch = ok.get("larch")
    out = []
    if not larch:
        return [{"target": "all", "status": "larch did not run"}]
    lq = larch["n_clients"]["qps"]
    qdrant = ok.get("qdrant")
    if qdrant and qdrant["recall_at_10"] >= target_recall:
        q = qdrant["n_clients"]["qps"]
        out.append({"target": f"QPS ≥ 1.5× Qdrant's at recall@10 ≥ {target_recall}",
                    "measured": f"{lq / q:.2f}× ({lq:,.0f} vs {q:,.0f} QPS)", "met": lq / q >= 1.5})
        lw, qw = larch["index_wait_s"], qdrant["index_wait_s"]
        out.append({"target": "fully indexed after the last upsert ≤ Qdrant's",
                    "measured": f"{lw:.2f} s vs {qw:.2f} s", "met": lw <= qw})
    else:
        out.append({"target": "QPS ≥ 1.5× Qdrant's", "measured": "Qdrant did not run (no binary)", "met": None})
    if "faiss" in ok:
        f = ok["faiss"]["n_clients"]["qps"]
        out.append({"target": "QPS ≥ 0.6× in-process faiss HNSW", "measured": f"{lq / f:.3f}× ({lq:,.0f} vs {f:,.0f} QPS)",
                    "met": lq / f >= 0.6})
    if "hnswlib" in ok:
        h = ok["hnswlib"]["n_clients"]["qps"]
        out.append({"target": "QPS ≥ 0.6× in-process hnswlib (issue 5)", "measured": f"{lq / h:.3f}× ({lq:,.0f} vs {h:,.0f} QPS)",
                    "met": lq / h >= 0.6})
    p99 = larch["one_client"]["p99_ms"]
    out.append({"target": "p99 at one client ≤ 1 ms", "measured": f"{p99:.2f} ms", "met": p99 <= 1.0})
    up = larch["load"]["vectors_per_s"]
    out.append({"target": "durable upsert ≥ 50,000 vectors/s at d=384",
                "measured": f"{up:,.0f} vectors/s ({larch['load']['writers']} writer(s), batch {larch['load']['batch']})",
                "met": up >= 50_000})
    if "sdk_upsert" in larch:
        sdk = larch["sdk_upsert"]
        out.append({"target": "durable upsert through Pinecone's Python SDK (reported)",
                    "measured": f"{sdk['vectors_per_s']:,.0f} vectors/s ({sdk['writers']} thread(s), "
                                f"batch {sdk['batch']}, {sdk['client']})", "met": None})
    out.append({"target": f"recall@10 ≥ {target_recall}", "measured": f"{larch['recall_at_10']:.4f} (HNSW, ef={larch.get('ef')})",
                "met": larch["recall_at_10"] >= target_recall})
    return out


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for r in results:
        if "error" in r:
            continue
        pts = sorted(r["sweep"], key=lambda p: p["recall_at_10"])
        xs = [p["recall_at_10"] for p in pts]
        ys = [p["qps_1"] for p in pts]
        style = "o-" if r["server"] else "s--"
        label = r["system"] + ("" if r["server"] else " (in-process)")
        line, = ax.plot(xs, ys, style, label=label, markersize=4)
        ax.plot([r["recall_at_10"]], [r["one_client"]["qps"]], "*", color=line.get_color(), markersize=14)
    ax.set_xlabel("recall@10")
    ax.set_ylabel("queries/s, 1 client (log)")
    ax.set_yscale("log")
    ax.axvline(0.95, color="grey", linestyle=":", linewidth=1)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def machine_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count()}
    with contextlib.suppress(OSError):
        cpu = [l for l in open("/proc/cpuinfo") if l.startswith("model name")]
        info["cpu"] = cpu[0].split(":", 1)[1].strip() if cpu else "?"
    with contextlib.suppress(OSError):
        mem = [l for l in open("/proc/meminfo") if l.startswith("MemTotal")]
        info["memory"] = mem[0].split(":", 1)[1].strip()
    info["loadavg_at_start"] = os.getloadavg()
    info["numpy"] = np.__version__
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10k vectors, 300 queries, fewer timed queries")
    ap.add_argument("--size", type=int, help="base vectors (default 100000; 10000 with --quick)")
    ap.add_argument("--queries", type=int, help="held-out queries for recall (default 1000; 300 with --quick)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients for QPS@N (default 8)")
    ap.add_argument("--q1", type=int, help="single-client timed queries (default = --queries)")
    ap.add_argument("--qn", type=int, help="total queries at N clients (default 4000; 1500 with --quick)")
    ap.add_argument("--batch", type=int, default=500, help="upsert batch size (100-1000; default 500)")
    ap.add_argument("--writers", type=int, default=1, help="concurrent Larch upsert streams (default 1)")
    ap.add_argument("--load-seconds", type=float, help="seconds of QPS@N load per gRPC server "
                    "(larch-bench load; default 10, 5 with --quick)")
    ap.add_argument("--target-recall", type=float, default=0.95)
    ap.add_argument("--max-phase-s", type=float, default=120, help="time cap of each query phase")
    ap.add_argument("--max-index-wait", type=float, default=1800)
    ap.add_argument("--systems", default="larch,qdrant,hnswlib,faiss,chroma,milvus")
    ap.add_argument("--larch-bin", default=str(REPO / "target" / "release" / "larch"))
    ap.add_argument("--larch-bench-bin", default=str(REPO / "target" / "release" / "larch-bench"),
                    help="the load generator that measures every gRPC server")
    ap.add_argument("--qdrant-bin", help="a qdrant binary (default: `qdrant` on PATH; skipped if none)")
    ap.add_argument("--no-restart", action="store_true")
    ap.add_argument("--larch-quantization", choices=["none", "int8"],
                    help="how Larch's graph holds vectors (rescored with full precision either way; "
                         "default: the server's default, int8)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    args.size = args.size or (10_000 if args.quick else 100_000)
    args.queries = args.queries or (300 if args.quick else 1_000)
    args.q1 = args.q1 or args.queries
    args.qn = args.qn or (1_500 if args.quick else 4_000)
    args.load_seconds = args.load_seconds or (5.0 if args.quick else 10.0)
    if not 1 <= args.batch <= 1000:
        raise SystemExit("--batch must be 1..1000 (Larch's and Pinecone's upsert limit)")

    import dataset

    started = dt.datetime.now().astimezone()
    info = machine_info()
    data = dataset.load(args.size, 1_000)
    data["queries"] = data["queries"][:args.queries]
    data["gt"] = data["gt"][:args.queries]
    log(f"data: base {data['base'].shape}, {len(data['queries'])} queries")

    makers = {
        "larch": lambda: Larch(Path(args.larch_bin), args.writers, args.larch_quantization),
        "qdrant": lambda: Qdrant(args.qdrant_bin, args.writers),
        "hnswlib": Hnswlib, "faiss": Faiss, "chroma": Chroma, "milvus": Milvus,
    }
    results = []
    for name in [s.strip() for s in args.systems.split(",") if s.strip()]:
        workdir = Path(tempfile.mkdtemp(prefix=f"larch-bench-{name}-"))
        system = None
        t0 = time.perf_counter()
        try:
            system = makers[name]()
            res = measure(system, data, args, workdir)
        except Skipped as skip:
            log(f"{name} skipped: {skip}")
            res = {"system": name, "error": f"skipped: {skip}", "skipped": True}
        except Exception:
            err = traceback.format_exc()
            log(f"{name} failed:\n{err}")
            res = {"system": name, "error": err}
            for f in workdir.glob("*.log"):
                res.setdefault("server_log_tail", {})[f.name] = f.read_text(errors="replace")[-3000:]
        finally:
            if system is not None:
                with contextlib.suppress(Exception):
                    system.stop()
            del system
            shutil.rmtree(workdir, ignore_errors=True)
        res["wall_s"] = time.perf_counter() - t0
        results.append(res)

    tgt = targets(results, args.target_recall)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "quick" if args.quick else f"{args.size}"
    title = (f"{args.size:,} × 384 all-MiniLM-L6-v2 (Debian text), {len(data['queries'])} queries, "
             f"{info['cores']} cores, {started:%Y-%m-%d}")
    plot_path = out / f"recall_qps_{tag}.png"
    plot(results, plot_path, title)
    info["loadavg_at_end"] = os.getloadavg()
    md = [f"Search benchmark, {started:%Y-%m-%d %H:%M %Z}: {title}.", "",
          table(results, args.clients), "", "| target (issue 15, item 6) | measured | met |", "|---|---|---|"]
    for t in tgt:
        md.append(f"| {t['target']} | {t.get('measured', t.get('status'))} | "
                  f"{ {True: 'met', False: 'missed', None: 'n/a'}[t.get('met')] } |")
    md_text = "\n".join(md)
    notes = {
        "larch": "HNSW graph per namespace built in the background by the server (engine "
                 "defaults M=16, ef_construction=128), ef_search swept through ConfigureIndex; "
                 "every acknowledged write is searchable at once (records not yet in the graph "
                 "are scored exactly). 'index wait' = last upsert acknowledged -> the server's "
                 "'namespace fully indexed' log event. Upserts and queries: `larch-bench load` "
                 "(Rust, tonic, every request encoded before timing); upserts are acknowledged "
                 "after fsync. Restart: graphs are rebuilt from the recovered records "
                 "(restart.fully_indexed_again_s); its first query is one Python grpcio call.",
        "qdrant": "a `qdrant` binary given with --qdrant-bin or on PATH (skipped otherwise), "
                  "temporary storage, collection created over REST with the same M and "
                  "ef_construct, loaded (wait=true) and queried over its gRPC API by "
                  "`larch-bench load`, hnsw_ef set in each search request. 'index wait' = last "
                  "upsert -> collection status green with >= 90% of vectors in HNSW segments.",
        "hnswlib": "in-process, no network: the upper bound. RSS = growth of the bench process.",
        "faiss": "faiss-cpu IndexHNSWFlat, in-process, omp threads = 1 per query call.",
        "chroma": "`chroma run` (Rust server inside chromadb's wheel) + chromadb.HttpClient over HTTP. "
                  "Its local server applies a modified ef_search only after a reload, so the "
                  "server is restarted on the same path after each ef change.",
        "milvus": "`milvus-lite server` (milvus-lite 3.x is a pure-Python gRPC server using faiss "
                  "HNSW per segment) + pymilvus. Loaded as insert, flush, create_index, "
                  "load_collection. pymilvus' keepalive pings can make the server answer GOAWAY "
                  "(too_many_pings) under load; the client reconnects and the stall counts.",
        "clients": f"QPS@N: `larch-bench load` with {args.clients} requests in flight for "
                   f"{args.load_seconds:g} s (gRPC servers: Larch, Qdrant; its ceiling, the same load "
                   f"against the server's health check, is in n_clients.ceiling_qps), "
                   f"{args.clients} client processes (chroma, milvus: Python clients) or threads "
                   f"(in-process libraries); client CPU shares the same {info['cores']} cores. QPS@1 "
                   f"and recall of gRPC servers: the same tool with 1 request in flight.",
        "hnsw_build": f"M={HNSW_M}, ef_construction={HNSW_EF_CONSTRUCTION} for every HNSW peer; "
                      f"inner product on L2-normalised vectors (== cosine).",
    }
    doc = {"started": started.isoformat(), "args": vars(args), "machine": info, "notes": notes,
           "dataset": data["manifest"], "size": args.size, "queries": len(data["queries"]),
           "k": K, "hnsw": {"M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION},
           "results": results, "targets": tgt, "table_markdown": md_text, "plot": plot_path.name}
    (out / f"results_{tag}.json").write_text(json.dumps(doc, indent=2, default=str))
    (out / "results.json").write_text(json.dumps(doc, indent=2, default=str))
    (out / f"table_{tag}.md").write_text(md_text + "\n")
    print(md_text)
    print(f"\nraw results: {out / 'results.json'}\nplot: {plot_path}")


if __name__ == "__main__":
    main()
