"""A local Twilio for tests and benchmarks: Prism serving Twilio's own OpenAPI spec, behind a recording proxy.

The proxy (in this process) notes every request the code under test sends,
when it arrived, its headers and its form, then forwards it to Prism and
passes Prism's answer back. `force("code=429")` makes the next request ask
Prism for that error response (Prism's `Prefer` header). `delay(...)` makes
matching requests wait before they are answered (a slow Twilio); `answer(...)`
replaces Prism's example body for matching requests with JSON a test built
(Prism still checks the request: its error answers pass through unchanged).

The spec is Twilio's and stays outside the repository (see ../shared/twilio/).
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devtools.localservices import free_port, terminate, wait_for_port

REPO = Path(__file__).resolve().parents[1]
SPEC_NAME = "twilio_api_v2010.json"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection", "upgrade", "te"}


def spec_candidates() -> list[Path]:
    """Where the spec is looked for, in order: $TWILIO_OPENAPI_SPEC, the repo's ../shared, /work/shared."""
    env = os.environ.get("TWILIO_OPENAPI_SPEC")
    return ([Path(env)] if env else []) + [REPO.parent / "shared" / "twilio" / SPEC_NAME, Path("/work/shared/twilio") / SPEC_NAME]


def find_spec() -> Path | None:
    return next((p for p in spec_candidates() if p.is_file()), None)


def find_prism() -> Path | None:
    path = Path(os.environ.get("PRISM_BIN") or REPO / ".tools" / "node_modules" / ".bin" / "prism")
    return path if path.is_file() and os.access(path, os.X_OK) else None


@dataclass(frozen=True)
class RecordedRequest:
    received_at: float                   # time.time() when the proxy had read the whole request
    method: str
    path: str                            # with the query string, as sent
    headers: dict[str, str]
    form: dict[str, list[str]]           # a form-encoded body, parsed; empty otherwise
    body: bytes = field(repr=False)
    prefer: str | None = None            # the Prefer header this request was forwarded with, if forced

    def field(self, name: str) -> str | None:
        """The single value of a form field (the last one if repeated)."""
        values = self.form.get(name)
        return values[-1] if values else None


@dataclass
class _Rule:
    """What the proxy does to requests of `method` whose path (query left out) ends with `path_suffix`."""

    method: str
    path_suffix: str
    delay_s: float = 0.0
    body: bytes | None = None            # canned JSON replacing Prism's body
    status: int = 200
    times: int | None = None             # None: every matching request

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and urlsplit(path).path.endswith(self.path_suffix)


class _Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"         # keep-alive, as between the SDK and Twilio
    standin: TwilioStandIn

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items()}
        is_form = self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded")
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True) if is_form else {}
        prefer = self.standin._take_forced()
        self.standin._record(RecordedRequest(time.time(), self.command, self.path, headers, form, body, prefer))
        delay_s, canned = self.standin._rules_for(self.command, self.path)
        if delay_s:
            time.sleep(delay_s)
        status, reply_headers, reply = self.standin._forward(self.command, self.path, headers, body, prefer)
        if canned is not None and canned.body is not None and 200 <= status < 300:   # answer() always gives a body
            status, reply = canned.status, canned.body
        self.send_response(status)
        for k, v in reply_headers:
            if k.lower() not in _HOP_BY_HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    def log_message(self, format: str, *args: Any) -> None:   # quiet: the recording is the log
        pass


class TwilioStandIn:
    """Prism on one loopback port, the recording proxy on another; `base_url` is what the notifier is pointed at."""

    def __init__(self, spec: Path, prism_bin: Path, workdir: Path | None = None) -> None:
        self.spec, self.prism_bin = Path(spec), Path(prism_bin)
        self.workdir = Path(workdir) if workdir else Path(os.environ.get("TMPDIR", "/tmp"))
        self.requests: list[RecordedRequest] = []
        self._forced: deque[str] = deque()
        self._delays: list[_Rule] = []
        self._answers: list[_Rule] = []
        self._cond = threading.Condition()
        self._prism: subprocess.Popen[bytes] | None = None
        self._server: ThreadingHTTPServer | None = None
        self.prism_port = 0

    @classmethod
    def start(cls, spec: Path | None = None, prism_bin: Path | None = None, workdir: Path | None = None) -> TwilioStandIn:
        """Found-or-given spec and Prism, started; raises FileNotFoundError naming what is missing."""
        spec = spec or find_spec()
        if spec is None or not Path(spec).is_file():
            raise FileNotFoundError(f"Twilio OpenAPI spec not found at any of: {', '.join(map(str, spec_candidates()))}")
        prism_bin = prism_bin or find_prism()
        if prism_bin is None:
            raise FileNotFoundError("Prism is not installed (PRISM_BIN or .tools/node_modules/.bin/prism): run scripts/setup")
        standin = cls(spec, prism_bin, workdir)
        standin._start()
        return standin

    def _start(self) -> None:
        self.prism_port = free_port()
        self.log_path = self.workdir / f"prism-{self.prism_port}.log"
        with open(self.log_path, "ab") as log:
            self._prism = subprocess.Popen(
                [str(self.prism_bin), "mock", "-h", "127.0.0.1", "-p", str(self.prism_port), str(self.spec)],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "SCARF_ANALYTICS": "false"}, start_new_session=True)
        try:
            wait_for_port(self.prism_port, self._prism, timeout_s=60, what=f"prism (log: {self.log_path})")
        except Exception:
            self.stop()
            raise
        handler = type("Proxy", (_Proxy,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="twilio-standin", daemon=True).start()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the Twilio stand-in is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        terminate(self._prism)
        self._prism = None

    # -- what tests use ------------------------------------------------------

    def force(self, prefer: str, times: int = 1) -> None:
        """The next `times` requests ask Prism for this response, e.g. "code=429" or "code=400, example=invalid_to"."""
        with self._cond:
            self._forced.extend([prefer] * times)

    def delay(self, path_suffix: str, seconds: float, method: str = "POST") -> None:
        """Answer matching requests only after `seconds` (they are recorded on arrival): Twilio being slow."""
        with self._cond:
            self._delays.append(_Rule(method, path_suffix, delay_s=seconds))

    def answer(self, path_suffix: str, body: dict[str, Any], status: int = 200, method: str = "GET",
               times: int | None = None) -> None:
        """Matching requests get `body` as JSON instead of Prism's example (when Prism accepted the request).

        The latest rule for a path wins; `times` limits it to that many requests.
        """
        with self._cond:
            self._answers.insert(0, _Rule(method, path_suffix, body=json.dumps(body).encode(), status=status, times=times))

    def clear(self) -> None:
        """Forget recorded requests, forced responses not yet used, delays and canned answers."""
        with self._cond:
            self.requests.clear()
            self._forced.clear()
            self._delays.clear()
            self._answers.clear()

    def wait_for(self, n: int, timeout_s: float = 10.0) -> list[RecordedRequest]:
        """The recorded requests once there are at least `n`, or what there is when the time is up (assert on it)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.requests) >= n, timeout_s)
            return list(self.requests)

    # -- proxy internals -----------------------------------------------------

    def _take_forced(self) -> str | None:
        with self._cond:
            return self._forced.popleft() if self._forced else None

    def _rules_for(self, method: str, path: str) -> tuple[float, _Rule | None]:
        """The delay and the canned answer (used up by this request) for a request."""
        with self._cond:
            delay_s = max((r.delay_s for r in self._delays if r.matches(method, path)), default=0.0)
            canned = next((r for r in self._answers if r.matches(method, path)), None)
            if canned is not None and canned.times is not None:
                canned.times -= 1
                if canned.times == 0:
                    self._answers.remove(canned)
            return delay_s, canned

    def _record(self, request: RecordedRequest) -> None:
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes,
                 prefer: str | None) -> tuple[int, list[tuple[str, str]], bytes]:
        out = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP and k.lower() != "prefer"}
        if prefer:
            out["Prefer"] = prefer
        conn = http.client.HTTPConnection("127.0.0.1", self.prism_port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=out)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()
