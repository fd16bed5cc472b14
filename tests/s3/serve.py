"""An S3-compatible server for Larch's tests: moto's S3 served one request at a time.

moto checks conditional writes (``If-None-Match: *``, ``If-Match``) by looking the object up
and then storing it, without a lock. Its own ``moto_server`` serves every request on its own
thread, so two racing creates of one key can both pass the check and both succeed; Larch's
shared state and object log rely on exactly one winning. Served from a single thread, each
request runs to the end before the next starts, which makes every check-then-store atomic
(``--threaded`` brings the threads back, only to show the race: see the README; it also makes
Python switch threads every microsecond, so that
``s3_racing_conditional_creates_and_updates_have_exactly_one_winner`` catches the race in most
runs instead of rarely).

The server listens on 127.0.0.1 (``--port``, 0 for a free one), creates the bucket given with
``--bucket`` before it accepts a request, and writes the port it got to ``--port-file`` (and
prints it) once clients can connect. SIGTERM or SIGINT stops it.

With ``--stats-file``, it also counts the requests it answers by kind (``GET``, ``PUT``,
``HEAD``, ``DELETE``, ``POST``, and ``LIST`` for a GET of the bucket itself, a listing) and
rewrites that file about once a second as one JSON object: ``{"uptime_s": …, "total": …,
"requests": {"GET": …, …}}``, ``uptime_s`` on the server's monotonic clock, so a reader gets
rates from two snapshots without trusting its own timing (``larch-bench scale`` reads it for
the store's requests per second at idle). Written whole under a temporary name, then renamed.

Usage: serve.py [--port N] [--port-file FILE] [--bucket NAME] [--threaded] [--stats-file FILE]
"""

import argparse
import json
import os
import signal
import sys
import threading
import time

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import s3_backends
from werkzeug.serving import make_server

REGION = "us-east-1"

# Request kinds always present in the stats file (others appear as they occur).
KINDS = ("GET", "PUT", "HEAD", "LIST", "DELETE", "POST")


def write_whole(path: str, text: str) -> None:
    """Writes `text` to `path` under a temporary name, then renames: a reader never sees half."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as out:
        out.write(text)
    os.replace(tmp, path)


def request_kind(environ: dict) -> str:
    """The kind of an S3 request: its method, or LIST for a GET of the bucket (path-style,
    ``/bucket`` with no key) or with ``list-type`` in the query."""
    method = environ.get("REQUEST_METHOD", "?").upper()
    path = environ.get("PATH_INFO", "").strip("/")
    if method == "GET" and ("/" not in path or "list-type" in environ.get("QUERY_STRING", "")):
        return "LIST"
    return method


class RequestCounts:
    """Requests answered by kind, written to a file about once a second by a daemon thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.counts = dict.fromkeys(KINDS, 0)
        self.lock = threading.Lock()
        self.started = time.monotonic()

    def wrap(self, app):
        """The WSGI app `app`, counting each request before it is answered."""

        def counted(environ, start_response):
            kind = request_kind(environ)
            with self.lock:
                self.counts[kind] = self.counts.get(kind, 0) + 1
            return app(environ, start_response)

        return counted

    def write(self) -> None:
        with self.lock:
            counts = dict(self.counts)
        snapshot = {
            "uptime_s": time.monotonic() - self.started,
            "total": sum(counts.values()),
            "requests": counts,
        }
        write_whole(self.path, json.dumps(snapshot) + "\n")

    def start(self) -> None:
        """Writes the counts now, then every second until the process exits."""
        self.write()

        def loop():
            while True:
                time.sleep(1.0)
                self.write()

        threading.Thread(target=loop, name="stats", daemon=True).start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1; 0: any free one")
    parser.add_argument("--port-file", help="write the port here once the server accepts")
    parser.add_argument("--bucket", default="larch-test", help="bucket to create at start")
    parser.add_argument(
        "--threaded",
        action="store_true",
        help="one thread per request, as moto_server does (races conditional writes)",
    )
    parser.add_argument(
        "--stats-file",
        help="write request counts by kind here (JSON) about once a second",
    )
    args = parser.parse_args()
    if args.threaded:
        # Widen the race window between moto's precondition check and its store.
        sys.setswitchinterval(1e-6)

    # The bucket exists before the first request, so no test has to create it.
    s3_backends[DEFAULT_ACCOUNT_ID]["aws"].create_bucket(args.bucket, REGION)

    app = DomainDispatcherApplication(create_backend_app)
    stats = RequestCounts(args.stats_file) if args.stats_file else None
    if stats:
        app = stats.wrap(app)
    # Single-threaded, werkzeug answers HTTP/1.0 and closes each connection after its response:
    # a kept-alive idle connection would otherwise hold the only thread and stall every other
    # client.
    server = make_server(
        "127.0.0.1",
        args.port,
        app,
        threaded=args.threaded,
        request_handler=MotoRequestHandler,
    )
    port = server.server_port

    def stop(signum, _frame):
        # serve_forever() runs on this thread: leave it by raising out of the signal handler.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    if stats:
        stats.start()
    if args.port_file:
        write_whole(args.port_file, f"{port}\n")
    mode = "threaded" if args.threaded else "single-threaded"
    print(f"s3 server ({mode}) on 127.0.0.1:{port}, bucket {args.bucket}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if stats:
            stats.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
