"""Sample microservice (stdlib only): something real for the console to run, probe and call.

GET  /health            200 {"status": "ok"} (or 503 while the fault mode is "fail")
GET|POST /work          simulated work: ?ms=<duration>&fail=<0..1 probability>; JSON body may carry
                        the same keys. Echoes the body back with the instance id.
POST /fault             {"mode": "ok"|"fail"|"slow", "latency_ms": 500}: fault controls for SLA demos
GET  /stats             request counts
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

STATE = {"mode": "ok", "latency_ms": 0, "requests": 0, "work": 0}
LOCK = threading.Lock()
INSTANCE = os.environ.get("HMSMGMT_INSTANCE", "?")
SERVICE = os.environ.get("HMSMGMT_SERVICE", "sample")


class Handler(BaseHTTPRequestHandler):
    server_version = "hms-sample/1"

    def log_message(self, fmt: str, *args: object) -> None:  # keep instance logs quiet
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            parsed = json.loads(self.rfile.read(min(length, 1 << 20)))
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {"value": parsed}

    def _slow(self) -> None:
        if STATE["mode"] == "slow" and STATE["latency_ms"]:
            time.sleep(STATE["latency_ms"] / 1000)

    def do_GET(self) -> None:
        self._route({})

    def do_POST(self) -> None:
        self._route(self._body())

    def _route(self, body: dict) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with LOCK:
            STATE["requests"] += 1
        if url.path == "/health":
            self._slow()
            if STATE["mode"] == "fail":
                return self._json(503, {"status": "failing", "instance": INSTANCE})
            return self._json(200, {"status": "ok", "service": SERVICE, "instance": INSTANCE})
        if url.path == "/work":
            params = {**query, **{k: v for k, v in body.items() if k in ("ms", "fail")}}
            try:
                ms = max(0.0, min(float(params.get("ms", 20)), 600_000))
                fail = float(params.get("fail", 0))
            except (TypeError, ValueError):
                return self._json(400, {"error": "ms and fail must be numbers"})
            self._slow()
            time.sleep(ms / 1000)
            with LOCK:
                STATE["work"] += 1
            if STATE["mode"] == "fail" or random.random() < fail:
                return self._json(500, {"error": "simulated failure", "instance": INSTANCE})
            key = self.headers.get("Idempotency-Key", "")
            return self._json(200, {"ok": True, "instance": INSTANCE, "ms": ms, "idempotencyKey": key,
                                    "echo": body})
        if url.path == "/fault" and self.command == "POST":
            mode = body.get("mode", "ok")
            if mode not in ("ok", "fail", "slow"):
                return self._json(400, {"error": "mode must be ok, fail or slow"})
            STATE["mode"] = mode
            STATE["latency_ms"] = int(body.get("latency_ms", 500 if mode == "slow" else 0))
            return self._json(200, {"mode": STATE["mode"], "latency_ms": STATE["latency_ms"]})
        if url.path == "/stats":
            return self._json(200, {**STATE, "instance": INSTANCE})
        return self._json(404, {"error": "not found"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True

    def stop(signum: int, frame: object) -> None:
        # Graceful: finish the current request, then exit.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"{SERVICE} instance {INSTANCE} listening on {args.host}:{args.port}", flush=True)
    server.serve_forever(poll_interval=0.2)
    sys.exit(0)


if __name__ == "__main__":
    main()
