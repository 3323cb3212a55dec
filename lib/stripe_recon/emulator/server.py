"""A stateful, Stripe-compatible HTTP server for products and prices (stdlib only).

The real SDK talks to it through ``base_addresses={"api": server.url}``. It speaks Stripe's REST
shapes (form-encoded nested params in, JSON objects / list objects / error bodies out) and enforces
the rules in ../shared/notes/stripe.md: immutable price fields, unique lookup keys with
``transfer_lookup_key``, no delete of a product with prices, Idempotency-Key replay and mismatch,
a token-bucket rate limit (429 ``rate_limit``) and seeded fault injection (see ``faults.py``).

API (``Authorization: Bearer sk_test_...`` required, any such key):
``GET|POST /v1/products``, ``GET|POST|DELETE /v1/products/{id}``, ``GET|POST /v1/prices``,
``GET|POST /v1/prices/{id}``, ``GET /v1/events`` and ``GET /v1/events/{id}`` (one event per applied
write, kept 30 days; see events.py).

Control endpoints (no key, JSON in and out):
``GET /_emulator/state`` (counts and settings), ``GET /_emulator/journal[?since=SEQ]``,
``POST /_emulator/reset``, ``POST /_emulator/seed`` ``{"path": DIR}`` or ``{"objects": [...]}``,
``POST /_emulator/events/age`` ``{"seconds": N}`` (every event moves N seconds into the past),
``POST /_emulator/faults`` ``{"rates": {...}, "seed": 1, "latency_seconds": 0.2,
"force": [{"kind": "lost_response", "times": 1, "method": "POST", "path_prefix": "/v1/prices"}],
"clear": true}``, ``POST /_emulator/rate_limit`` ``{"rate": 100, "burst": 100}`` (rate null = off).

Journal entries: ``seq, ts, method, path, params, idempotency_key, status, applied, replayed,
delivered, fault, object_id, error_code, request_id, stripe_version``. ``applied`` is true when the request changed
state (a replay or a failed write is not applied); ``delivered`` is false when the answer was
dropped (faults ``drop`` / ``lost_response``).

In process (tests)::

    with EmulatorServer(port=0, rate_limit=None) as emu:
        client = stripe.StripeClient("sk_test_x", base_addresses={"api": emu.url})
        client.v1.products.create({"id": "p1", "name": "A"})
        emu.journal[-1]["applied"]   # True
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .errors import StripeAPIError
from .faults import FaultConfig, FaultInjector, TokenBucket
from .forms import parse_form, parse_pairs
from .store import Store, read_seed_objects

log = logging.getLogger(__name__)

API_VERSION = "2026-10-28"
MAX_IDEMPOTENCY_KEY = 255


class _Drop(Exception):
    """Close the connection without answering."""


def _mask_key(key: str) -> str:
    """How Stripe echoes a bad key: prefix, stars, last four."""
    head = key.split("_", 2)
    prefix = "_".join(head[:2]) + "_" if len(head) > 2 else ""
    return f"{prefix}{'*' * 12}{key[-4:]}" if len(key) > 8 else "****"


class EmulatorServer:
    """The emulator on a background thread. ``port=0`` picks a free port; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed_from: str | None = None,
        rate_limit: float | None = None,
        burst: float | None = None,
        faults: FaultConfig | None = None,
        fault_rate: float = 0.0,
        fault_seed: int = 0,
        id_seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = Store(seed=id_seed, clock=clock)
        self.faults = FaultInjector(faults or FaultConfig.from_total(fault_rate, seed=fault_seed))
        self.bucket: TokenBucket | None = None
        self.set_rate_limit(rate_limit, burst)
        if seed_from:
            self.seed_from(seed_from)
        self._httpd = _HTTPServer((host, port), _Handler, self)
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"stripe-emulator:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.close_all()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test / control surface -----------------------------------------------------------------

    @property
    def journal(self) -> list[dict[str, Any]]:
        """A copy of the request journal (oldest first)."""
        with self.store.lock:
            return [dict(e) for e in self.store.journal]

    def reset(self) -> None:
        """Empty state, idempotency records and journal; forced faults are cleared."""
        self.store.reset()
        self.faults.clear()

    def seed_from(self, path: str) -> dict[str, int]:
        return self.store.seed(read_seed_objects(path))

    def age_events(self, seconds: int) -> int:
        """Move every recorded event ``seconds`` into the past (tests of Stripe's 30-day retention)."""
        with self.store.lock:
            return self.store.events.age(seconds)

    def set_rate_limit(self, rate: float | None, burst: float | None = None) -> None:
        self.bucket = TokenBucket(rate, burst) if rate else None

    def state(self) -> dict[str, Any]:
        return {
            **self.store.counts(),
            "rate_limit": None if self.bucket is None else {"rate": self.bucket.rate, "burst": self.bucket.burst},
            "faults": self.faults.describe(),
        }

    # -- request processing ---------------------------------------------------------------------

    def handle_api(self, method: str, path: str, params: dict[str, Any], headers: Any
                   ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Process one /v1 request; returns (status, body, extra headers) or raises _Drop."""
        request_id = "req_" + uuid.uuid4().hex[:14]
        idem = headers.get("Idempotency-Key")
        entry: dict[str, Any] = {
            "method": method, "path": path, "params": params, "idempotency_key": idem,
            "status": None, "applied": False, "replayed": False, "delivered": True, "fault": None,
            "object_id": None, "error_code": None, "request_id": request_id,
            "stripe_version": headers.get("Stripe-Version"),
        }
        out_headers = {"Request-Id": request_id, "Stripe-Version": headers.get("Stripe-Version") or API_VERSION}
        if idem:
            out_headers["Idempotency-Key"] = idem
        try:
            status, body = self._process(method, path, params, headers, idem, entry, out_headers)
        except StripeAPIError as err:
            status, body = err.status, err.body(request_id)
            out_headers.update(err.headers)
            entry["error_code"] = err.code or err.type
        except Exception:  # noqa: BLE001 - an emulator bug answers 500 and is journaled, never hidden
            log.exception("emulator error on %s %s", method, path)
            err = StripeAPIError(500, "Internal emulator error (see the emulator's log).", type_="api_error")
            status, body = 500, err.body(request_id)
            entry["error_code"] = "emulator_error"
        entry["status"] = status or None
        if entry["fault"] in ("drop", "lost_response"):
            entry["delivered"] = False
        self._record(entry)
        if not entry["delivered"]:
            raise _Drop
        return status, body, out_headers

    def _record(self, entry: dict[str, Any]) -> None:
        with self.store.lock:
            entry["seq"] = len(self.store.journal) + 1
            entry["ts"] = time.time()
            self.store.journal.append(entry)

    def _process(self, method: str, path: str, params: dict[str, Any], headers: Any, idem: str | None,
                 entry: dict[str, Any], out_headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self._authenticate(headers.get("Authorization"))
        if idem is not None and (not idem or len(idem) > MAX_IDEMPOTENCY_KEY):
            raise StripeAPIError(400, f"Idempotency keys must be 1 to {MAX_IDEMPOTENCY_KEY} characters long.",
                                 type_="idempotency_error", code="idempotency_key_invalid")
        if self.bucket is not None and not self.bucket.take():
            entry["fault"] = "throttled"
            raise self._rate_limited()
        fault = self.faults.draw(method, path)
        if fault == "latency":
            entry["fault"] = "latency"
            time.sleep(self.faults.config.latency_seconds)
        elif fault == "rate_limit":
            entry["fault"] = "rate_limit"
            raise self._rate_limited()
        elif fault == "error_5xx":
            entry["fault"] = "error_5xx"
            raise StripeAPIError(500, "An unknown error occurred (injected by the emulator before the write).",
                                 type_="api_error")
        elif fault == "drop" or (fault == "lost_response" and method == "GET"):
            entry["fault"] = "drop"
            entry["status"] = None
            return 0, {}
        elif fault == "lost_response":
            entry["fault"] = "lost_response"

        handler, object_id = self._route(method, path)
        entry["object_id"] = object_id
        if method == "GET" or not idem:
            with self.store.lock:
                result = handler(object_id, params)
                body = self._render(path, result, params)
            entry["applied"] = method != "GET"
            return 200, body
        fingerprint = json.dumps([method, path, params], sort_keys=True)
        with self.store.lock:
            record = self.store.idempotency.get(idem)
            if record is not None:
                if record["fingerprint"] != fingerprint:
                    raise StripeAPIError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters they were first "
                        f"used with. Try using a key other than '{idem}' if you meant to execute a different "
                        "request.",
                        type_="idempotency_error",
                    )
                entry["replayed"] = True
                entry["object_id"] = record.get("object_id") or object_id
                out_headers["Idempotent-Replayed"] = "true"
                out_headers["Original-Request"] = record["request_id"]
                return record["status"], json.loads(record["body"])
            result = handler(object_id, params)
            body = self._render(path, result, params)
            entry["applied"] = True
            entry["object_id"] = object_id or result.get("id")
            self.store.idempotency[idem] = {
                "fingerprint": fingerprint, "path": path, "status": 200, "body": json.dumps(body),
                "request_id": entry["request_id"], "object_id": entry["object_id"],
            }
            return 200, body

    @staticmethod
    def _rate_limited() -> StripeAPIError:
        return StripeAPIError(
            429, "Request rate limit exceeded. Learn more about rate limits here: https://stripe.com/docs/rate-limits.",
            code="rate_limit",
        )

    @staticmethod
    def _authenticate(header: str | None) -> None:
        if not header:
            raise StripeAPIError(
                401, "You did not provide an API key. You need to provide your API key in the Authorization "
                "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise StripeAPIError(401, "Invalid Authorization header: use 'Authorization: Bearer sk_test_...'.")
        if not key.startswith(("sk_test_", "rk_test_")):
            raise StripeAPIError(401, f"Invalid API Key provided: {_mask_key(key)}")

    def _route(self, method: str, path: str) -> tuple[Callable[[str | None, dict[str, Any]], dict[str, Any]], str | None]:
        parts = [p for p in path.split("/") if p]
        store = self.store
        if method == "GET" and len(parts) in (2, 3) and parts[:2] == ["v1", "events"]:
            if len(parts) == 2:
                return (lambda _i, p: store.events.list(p)), None
            return (lambda i, p: store.events.retrieve(i or "")), parts[2]
        if len(parts) in (2, 3) and parts[0] == "v1" and parts[1] in ("products", "prices"):
            kind = parts[1][:-1]
            if len(parts) == 2:
                if method == "GET":
                    return (lambda _i, p: store.list(kind, p)), None
                if method == "POST":
                    create = store.create_product if kind == "product" else store.create_price
                    return (lambda _i, p: create(p)), None
            else:
                oid = parts[2]
                if method == "GET":
                    def retrieve(i: str | None, p: dict[str, Any]) -> dict[str, Any]:
                        unknown = set(p) - {"expand"}
                        if unknown:
                            from .errors import unknown_param

                            raise unknown_param(sorted(unknown)[0])
                        return store.get(kind, i or "")

                    return retrieve, oid
                if method == "POST":
                    update = store.update_product if kind == "product" else store.update_price
                    return (lambda i, p: update(i or "", p)), oid
                if method == "DELETE" and kind == "product":
                    return (lambda i, p: store.delete_product(i or "", p)), oid
        raise StripeAPIError(404, f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
                             "or we can help at https://support.stripe.com/.")

    def _render(self, path: str, result: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        if result.get("object") in ("list", "event") or result.get("deleted"):
            return result
        expand = params.get("expand") or []
        kind = "product" if path.startswith("/v1/products") else "price"
        return self.store.render(kind, result, expand if isinstance(expand, list) else [expand])

    def handle_control(self, method: str, path: str, query: dict[str, Any], body: bytes) -> tuple[int, Any]:
        """The /_emulator/* endpoints."""
        try:
            data = json.loads(body) if body.strip() else {}
        except json.JSONDecodeError as exc:
            return 400, {"error": f"body is not JSON: {exc}"}
        try:
            if method == "GET" and path == "/_emulator/state":
                return 200, self.state()
            if method == "GET" and path == "/_emulator/journal":
                since = int(query.get("since", 0) or 0)
                entries = [e for e in self.journal if e["seq"] > since]
                return 200, {"entries": entries, "count": len(entries)}
            if method == "POST" and path == "/_emulator/reset":
                self.reset()
                return 200, self.state()
            if method == "POST" and path == "/_emulator/seed":
                if "path" in data:
                    return 200, self.seed_from(data["path"])
                return 200, self.store.seed(data.get("objects", []))
            if method == "POST" and path == "/_emulator/faults":
                if data.get("clear"):
                    self.faults.clear()
                if any(k in data for k in ("rates", "seed", "latency_seconds")):
                    cur = self.faults.config
                    self.faults.configure(FaultConfig(
                        dict(data.get("rates", cur.rates)),
                        float(data.get("latency_seconds", cur.latency_seconds)),
                        int(data.get("seed", cur.seed)),
                    ))
                for f in data.get("force", []):
                    self.faults.force(f["kind"], int(f.get("times", 1)), f.get("method"), f.get("path_prefix"))
                return 200, self.faults.describe()
            if method == "POST" and path == "/_emulator/events/age":
                return 200, {"events": self.age_events(int(data["seconds"]))}
            if method == "POST" and path == "/_emulator/rate_limit":
                self.set_rate_limit(data.get("rate"), data.get("burst"))
                return 200, self.state()
        except (ValueError, KeyError, TypeError, FileNotFoundError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"unknown emulator endpoint {method} {path}"}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], emu: EmulatorServer) -> None:
        self.emu = emu
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def close_all(self) -> None:
        """Close kept-alive client connections so handler threads end with the server."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "stripe-recon-emulator"
    sys_version = ""
    timeout = 60
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would add ~40 ms
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        emu = self.server.emu
        if split.path.startswith("/_emulator/"):
            status, payload = emu.handle_control(method, split.path.rstrip("/"), dict(parse_qsl(split.query)), body)
            self._send(status, payload, {})
            return
        params = parse_form(split.query) if split.query else {}
        if method == "POST" and body:
            params.update(parse_pairs(parse_qsl(body.decode("utf-8"), keep_blank_values=True)))
        try:
            status, payload, headers = emu.handle_api(method, split.path.rstrip("/"), params, self.headers)
        except _Drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        except Exception:  # noqa: BLE001 - a bug must answer 500, not kill the connection silently
            log.exception("emulator error on %s %s", method, split.path)
            status, payload, headers = 500, StripeAPIError(500, "Internal emulator error.", type_="api_error").body(), {}
        self._send(status, payload, headers)

    def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def serve(
    host: str = "127.0.0.1",
    port: int = 12111,
    seed_from: str | None = None,
    rate_limit: float | None = None,
    fault_rate: float = 0.0,
    *,
    faults: str | None = None,
    fault_seed: int = 0,
    latency_seconds: float = 0.2,
) -> None:
    """Run the emulator in the foreground until SIGINT/SIGTERM (``recon stripe-emulator``).

    ``fault_rate`` splits over the fault kinds (faults.DEFAULT_SPLIT); ``faults`` is a per-kind spec
    such as ``"error_5xx=0.1,rate_limit=0.05,lost_response=0.02"`` and wins over ``fault_rate``.
    """
    from ..errors import ReconError

    try:
        cfg = (FaultConfig.parse(faults, fault_seed, latency_seconds) if faults
               else FaultConfig.from_total(fault_rate or 0.0, fault_seed, latency_seconds))
        emu = EmulatorServer(host, port, seed_from=seed_from, rate_limit=rate_limit, faults=cfg)
    except (ValueError, FileNotFoundError) as exc:
        raise ReconError(f"stripe emulator: {exc}") from None
    except OSError as exc:
        raise ReconError(f"stripe emulator cannot listen on {host}:{port} ({exc.strerror}); "
                         "pick another --port or stop what uses it.") from None
    stop = threading.Event()

    def _stop(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    emu.start()
    state = emu.state()
    print(json.dumps({"listening": emu.url, "products": state["products"], "prices": state["prices"],
                      "rate_limit": state["rate_limit"], "faults": state["faults"]["rates"]}), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()
