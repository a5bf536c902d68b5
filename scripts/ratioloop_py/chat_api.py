"""One client for OpenAI-compatible /chat/completions endpoints, shared by the router and the API judge.

The key comes from the environment variable the config names (never from a config, never logged or cached).
429, 5xx and network errors are retried with exponential backoff (honouring Retry-After); 401/403 are bad input
(a wrong key will not fix itself); any other 4xx fails at once.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from .errors import BadInput


class ApiError(RuntimeError):
    pass


class ChatEndpoint:
    def __init__(self, endpoint: dict[str, Any], *, role: str, max_retries: int = 5, backoff_s: float = 1.0,
                 timeout_s: float = 120.0):
        base = (endpoint.get("base_url") or "").rstrip("/")
        self.model = endpoint.get("model")
        if not base or not self.model:
            raise BadInput(f"params.models.{role}.endpoint: needs base_url and model")
        self.role = role
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.identity = {"type": "api", "model": self.model, "base_url": base}
        env = endpoint.get("api_key_env")
        self.api_key = os.environ.get(env) if env else None
        if env and not self.api_key:
            raise BadInput(f"params.models.{role}.endpoint.api_key_env: environment variable {env} is not set")
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.timeout_s = float(timeout_s)
        self.n_requests = 0
        self.n_retries = 0
        self._lock = threading.Lock()

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            with self._lock:
                self.n_requests += 1
            wait = None
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    return json.loads(r.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                if e.code == 429 or e.code >= 500:
                    ra = e.headers.get("Retry-After") if e.headers else None
                    try:
                        wait = float(ra) if ra else None
                    except ValueError:
                        wait = None
                elif e.code in (401, 403):
                    raise BadInput(f"{self.role} endpoint {self.url}: HTTP {e.code} (check the API key variable)") from None
                else:
                    body_text = e.read().decode("utf-8", "replace")[:300]
                    raise ApiError(f"{self.role} endpoint {self.url}: HTTP {e.code}: {body_text}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as e:
                last = type(e).__name__
            if attempt == self.max_retries:
                break
            with self._lock:
                self.n_retries += 1
            delay = wait if wait is not None else self.backoff_s * (2 ** attempt) * (1 + 0.25 * random.random())
            time.sleep(min(delay, 60.0))
        raise ApiError(f"{self.role} endpoint {self.url}: gave up after {self.max_retries + 1} attempts ({last})")
