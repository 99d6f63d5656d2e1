"""A loopback HTTP mirror that the tests start, serve real files from, and make
misbehave on demand: drop a connection mid-file, answer 404, or serve other bytes.
It counts every request, so a test can prove a warm cache asks for nothing.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Mirror:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: Counter[str] = Counter()
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before dropping, once
        self.status: dict[str, int] = {}  # path -> forced HTTP status
        self.ranges_seen: list[tuple[str, str]] = []
        self.seconds: dict[str, float] = {}  # path -> time to spread the body over (a slow link)
        self._lock = threading.Lock()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0].lstrip("/")
                with mirror._lock:
                    mirror.requests[path] += 1
                    forced = mirror.status.get(path)
                    drop = mirror.drop_after.pop(path, None)
                if forced:
                    return self._reply_empty(forced)
                file = mirror.root / path
                if not file.is_file():
                    return self._reply_empty(404)
                data = file.read_bytes()
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    with mirror._lock:
                        mirror.ranges_seen.append((path, rng))
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        return self._reply_empty(416)
                body = data[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if drop is not None:
                    self.wfile.write(body[:drop])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                seconds = mirror.seconds.get(path)
                if not seconds:
                    self.wfile.write(body)
                    return
                step = len(body) // 16 + 1
                try:
                    for i in range(0, len(body), step):  # 16 pieces, evenly over `seconds`
                        self.wfile.write(body[i : i + step])
                        self.wfile.flush()
                        time.sleep(seconds / 16)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed mid-file: what a test of that wants

            def _reply_empty(self, code: int):
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Mirror":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def total_requests(self) -> int:
        return sum(self.requests.values())
