"""A local OpenAI-compatible chat endpoint for tests: each POST is recorded and answered by a function the test gives."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable

# respond(body, request) -> (HTTP status, JSON payload or None for an empty body)
Respond = Callable[[dict[str, Any], dict[str, Any]], "tuple[int, Any]"]


class FakeChatServer:
    """Serves on 127.0.0.1 (a free port) until close(); `requests` holds {"path", "auth", "body"} per call, in order."""

    def __init__(self, respond: Respond):
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                req = {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
                outer.requests.append(req)
                status, payload = respond(body, req)
                self.send_response(status)
                if payload is None:
                    self.end_headers()
                    return
                data = json.dumps(payload).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
