"""A small FHIR R4 REST client: reads and searches with paging, timeouts and a deadline.

- The access token goes only to the fhirServer's own origin; a ``next`` link that leaves it is
  not followed (and the token is never sent there).
- Every URL is normalised (:func:`cds_service.fhir.trust.normalize_url`: dot segments removed,
  encoded slashes, user info and fragments refused) before it is checked and requested; a ``next``
  link must stay on the fhirServer's origin and on the trusted FHIR servers (``allowed``); up to a
  page cap; a link seen before is a loop.
- A response is streamed and its DECODED size counted (gzip and deflate are decoded here, in
  bounded steps): past ``Limits.max_response_bytes`` the connection is closed and the fetch fails,
  so that a gzip bomb or an endless body cannot grow the worker.
- The hook deadline holds inside every read: each socket read waits at most
  min(read timeout, time left), and the time left is checked between chunks and between pages.
  A read that a server keeps alive a byte at a time (status line, headers, chunk sizes) is cut by
  the call's :class:`ReadWatch`: at the deadline, or when the call has answered, the sockets of its
  requests in flight are shut down, so the read ends and the connection is closed, not reused.
- JSON is parsed with orjson, which refuses deep nesting; no RecursionError gets out of here.
- Every failure is a FetchError with a reason a clinician-facing card or an OperationOutcome can
  show; nothing here raises anything else for bad server behaviour.
"""
from __future__ import annotations

import contextvars
import http.client
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .trust import UnsafeUrl, normalize_url

FHIR_JSON = "application/fhir+json"
CHUNK = 64 * 1024  # bytes read, and decoded, at a time
ERROR_BODY_BYTES = 64 * 1024  # what is read of an error answer, for its OperationOutcome


class FetchError(Exception):
    """The FHIR server could not give the data; the message says why (no secrets in it)."""


class BadData(Exception):
    """A Bundle or resource is not shaped as FHIR R4 JSON; ``where`` is a JSON path."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass(frozen=True)
class Limits:
    connect_timeout: float = 3.0
    read_timeout: float = 5.0
    max_pages: int = 50
    max_resources: int = 50_000
    max_response_bytes: int = 32 * 1024 * 1024  # decoded bytes of one response


class ReadWatch:
    """The sockets of one hook call's requests in flight; :meth:`cut` shuts them down (and any
    attached later), which ends a read blocked on them in another thread. A request's socket is
    attached while it waits for the answer and reads it, and detached when it is done, so that a
    connection that goes back to the pool is never cut."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # a socket and how many requests of the call have it attached: a connection released to the
        # pool when its answer has been read can be taken by another request of the same call before
        # the first has detached it, and that first detach must not leave the second unwatched
        self._socks: dict[int, tuple[socket.socket, int]] = {}
        self._cut = False
        self._timer: threading.Timer | None = None

    def cut_at(self, seconds: float) -> None:
        """Cut at the deadline, ``seconds`` from now (once; the first call sets it)."""
        with self._lock:
            if self._cut or self._timer is not None:
                return
            self._timer = threading.Timer(max(0.0, seconds), self.cut)
            self._timer.daemon = True
            self._timer.start()

    def attach(self, sock: socket.socket) -> bool:
        """Watch ``sock``; False (and the socket shut down) when the watch has already cut."""
        with self._lock:
            if not self._cut:
                _, n = self._socks.get(id(sock), (sock, 0))
                self._socks[id(sock)] = (sock, n + 1)
                return True
        _shut(sock)
        return False

    def detach(self, sock: socket.socket) -> bool:
        """Stop watching ``sock``; False when it was cut."""
        with self._lock:
            held = self._socks.pop(id(sock), None)
            if held is not None and held[1] > 1:
                self._socks[id(sock)] = (sock, held[1] - 1)
            return held is not None and not self._cut

    def holds(self, sock: socket.socket) -> bool:
        with self._lock:
            return id(sock) in self._socks

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            socks, self._socks = [sock for sock, _ in self._socks.values()], {}
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        for sock in socks:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:  # the plain socket's shutdown (an SSLSocket's own would drop its TLS state under a reader)
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


_watch: contextvars.ContextVar[ReadWatch | None] = contextvars.ContextVar("cds_read_watch", default=None)
_request: contextvars.ContextVar[_Request | None] = contextvars.ContextVar("cds_fhir_request", default=None)


class _Request:
    """One request of a watched fetch: the sockets it used (one, or a new one after a retry)."""

    def __init__(self, watch: ReadWatch):
        self.watch = watch
        self.socks: list[socket.socket] = []
        self._cut = False

    @property
    def cut(self) -> bool:
        """Whether the watch has cut a socket of this request (its read ended at the deadline)."""
        return self._cut or any(not self.watch.holds(s) for s in self.socks)

    def attach(self, sock: socket.socket | None) -> None:
        if sock is None or any(s is sock for s in self.socks):
            return
        self.socks.append(sock)
        if not self.watch.attach(sock):
            self._cut = True

    def done(self) -> None:
        for sock in self.socks:
            if not self.watch.detach(sock):
                self._cut = True
        self.socks = []


def run_watched(watch: ReadWatch, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with the FHIR requests it makes watched by ``watch``."""
    token = _watch.set(watch)
    try:
        return fn(*args, **kwargs)
    finally:
        _watch.reset(token)


class _WatchedMixin:
    """A connection that attaches its socket to the current request's watch before it waits for
    the answer (the status line and headers; the body is read from the same socket)."""

    sock: Any

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        req = _request.get()
        if req is not None:
            req.attach(self.sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_WatchedMixin, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_WatchedMixin, HTTPSConnection):
    pass


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _WatchedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPConnectionPool,
                                                   "https": _WatchedHTTPSConnectionPool}


def new_session(pool_size: int = 16) -> requests.Session:
    s = requests.Session()
    adapter = _WatchedAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.trust_env = False  # no proxies or .netrc credentials picked up from the environment
    return s


def origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def bundle_resources(bundle: dict[str, Any], where: str) -> tuple[list[dict[str, Any]], str | None, list[str]]:
    """Resources of a Bundle, its ``next`` link, and notes on entries that are not data."""
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise BadData(f"{where}.entry", "must be an array")
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise BadData(f"{where}.entry[{i}]", "must be an object")
        r = e.get("resource")
        if r is None:
            raise BadData(f"{where}.entry[{i}]", "has no resource")
        if not isinstance(r, dict) or not isinstance(r.get("resourceType"), str):
            raise BadData(f"{where}.entry[{i}].resource", "must be a FHIR resource with a resourceType")
        mode = (e.get("search") or {}).get("mode") if isinstance(e.get("search"), dict) else None
        if r["resourceType"] == "OperationOutcome" or mode == "outcome":
            notes.append(_outcome_text(r))
            continue
        out.append(r)
    nxt = None
    links = bundle.get("link", [])
    if isinstance(links, list):
        for link in links:
            if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
                nxt = link["url"]
    return out, nxt, notes


def _outcome_text(oo: dict[str, Any]) -> str:
    texts = []
    for issue in oo.get("issue") or []:
        if isinstance(issue, dict):
            t = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
            if isinstance(t, str):
                texts.append(t[:200])
    return "; ".join(texts) or "OperationOutcome without text"


def _decoder(encoding: str) -> Callable[[bytes], Iterator[bytes]] | None:
    """A decoder of the Content-Encoding that yields at most CHUNK bytes at a time (so that a
    small compressed chunk never becomes a large allocation), or None for no encoding."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return None
    if enc not in ("gzip", "x-gzip", "deflate"):
        raise FetchError("response has a Content-Encoding that was not asked for")
    wbits = zlib.MAX_WBITS | 32  # a gzip or zlib header, detected
    state: dict[str, Any] = {"d": zlib.decompressobj(wbits)}

    def decode(data: bytes) -> Iterator[bytes]:
        try:
            while state["d"] is not None:
                d = state["d"]
                out = d.decompress(data, CHUNK)
                if out:
                    yield out
                if d.eof:  # (unconsumed_tail is stale then: what follows is in unused_data)
                    if len(d.unused_data) < 2:
                        break  # the end, or the start of another member (read on the next call)
                    if not d.unused_data.startswith(b"\x1f\x8b"):
                        state["d"] = None  # bytes after the end that are no other member: ignored
                        break
                    data = d.unused_data  # a gzip body of several members
                    state["d"] = zlib.decompressobj(wbits)
                elif d.unconsumed_tail:
                    data = d.unconsumed_tail
                elif len(out) == CHUNK:  # output may still be pending
                    data = b""
                else:
                    break
        except zlib.error:
            raise FetchError("the compressed response is corrupt") from None

    return decode


def _socket_of(resp: requests.Response) -> Any:
    """The response's socket, to set each read's timeout to the time left; None if not found."""
    conn = getattr(resp.raw, "_connection", None)
    return getattr(conn, "sock", None)


class FhirClient:
    def __init__(self, base_url: str, access_token: str | None, session: requests.Session, limits: Limits,
                 allowed: Callable[[str], str | None] | None = None):
        """``allowed``: None when a (normalised) URL may be called, else why not: the allowlist
        that admitted the fhirServer, applied again to every link read from it."""
        self.base = base_url.rstrip("/")
        self.origin = origin(self.base)
        self._token = access_token
        self.session = session
        self.limits = limits
        self._allowed = allowed

    def _headers(self, url: str) -> dict[str, str]:
        h = {"Accept": FHIR_JSON, "Accept-Encoding": "gzip, deflate"}  # the encodings _decoder reads
        if self._token and origin(url) == self.origin:
            h["Authorization"] = f"Bearer {self._token}"
        return h

    def url_for(self, relative: str) -> str:
        return f"{self.base}/{relative.lstrip('/')}"

    def get_json(self, url: str, deadline: float) -> dict[str, Any]:
        try:
            url = normalize_url(url)
        except UnsafeUrl as exc:
            raise FetchError(f"link {exc}; not followed") from None
        if origin(url) != self.origin:
            raise FetchError("link points outside the fhirServer; not followed")
        if self._allowed is not None and self._allowed(url) is not None:
            raise FetchError("link points outside the trusted FHIR servers; not followed")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("deadline reached before the request")
        timeout = (min(self.limits.connect_timeout, remaining), min(self.limits.read_timeout, remaining))
        watch = _watch.get()
        req = _Request(watch) if watch is not None else None
        token = _request.set(req)
        try:
            return self._get(url, deadline, timeout, req)
        finally:
            _request.reset(token)
            if req is not None:
                req.done()

    def _get(self, url: str, deadline: float, timeout: tuple[float, float], req: _Request | None) -> dict[str, Any]:
        try:
            resp = self.session.get(url, headers=self._headers(url), timeout=timeout, allow_redirects=False,
                                    stream=True)
        except requests.Timeout:
            raise FetchError("timed out") from None
        except requests.ConnectionError:
            raise FetchError("deadline reached" if req is not None and req.cut else "could not connect") from None
        except requests.RequestException as exc:
            raise FetchError(f"request failed ({type(exc).__name__})") from None
        try:  # closed when not read to its end (an error, a cap, the deadline): never left to trickle on
            body = self._answer(resp, deadline)
        except FetchError:
            if req is not None and req.cut:
                raise FetchError("deadline reached while reading the response") from None
            raise
        finally:
            if req is not None and req.cut:
                resp.raw.close()  # a socket the watch shut down: its connection is closed, never reused
            resp.close()
        if req is not None and req.cut:  # what was read may have been cut short by the watch
            raise FetchError("deadline reached while reading the response")
        return body

    def _answer(self, resp: requests.Response, deadline: float) -> dict[str, Any]:
        if time.monotonic() > deadline:
            raise FetchError("deadline reached")
        if 300 <= resp.status_code < 400:
            raise FetchError(f"HTTP {resp.status_code} redirect; redirects are not followed")
        if resp.status_code != 200:
            detail = ""
            try:
                body = orjson.loads(self._read_body(resp, deadline, ERROR_BODY_BYTES))
                if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
                    detail = f": {_outcome_text(body)}"
            except (FetchError, ValueError, RecursionError):
                pass
            raise FetchError(f"HTTP {resp.status_code}{detail}")
        raw = self._read_body(resp, deadline, self.limits.max_response_bytes)
        try:
            body = orjson.loads(raw)  # refuses nesting deeper than 1024 levels
        except (ValueError, RecursionError):
            raise FetchError("response is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise FetchError("response is not a FHIR resource")
        return body

    def _read_body(self, resp: requests.Response, deadline: float, cap: int) -> bytes:
        """The decoded body, read CHUNK by CHUNK; FetchError past ``cap`` decoded bytes or the deadline."""
        decoder = _decoder(resp.headers.get("Content-Encoding", ""))
        sock = _socket_of(resp)
        parts: list[bytes] = []
        total = raw_total = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError("deadline reached while reading the response")
            if sock is not None:
                try:
                    sock.settimeout(min(self.limits.read_timeout, remaining))
                except OSError:
                    pass
            try:
                data = resp.raw.read1(CHUNK, decode_content=False)
            except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
                raise FetchError("timed out") from None
            except (urllib3.exceptions.HTTPError, OSError, http.client.HTTPException):
                raise FetchError("the connection broke while reading the response") from None
            if not data:
                break
            raw_total += len(data)
            if raw_total > cap:  # also as sent: a compressed body is smaller than the decoded one
                raise FetchError(f"response larger than {cap} bytes (CDS_FHIR_MAX_RESPONSE_BYTES); not read")
            for piece in (decoder(data) if decoder else (data,)):
                total += len(piece)
                if total > cap:
                    raise FetchError(f"response larger than {cap} bytes (CDS_FHIR_MAX_RESPONSE_BYTES); not read")
                parts.append(piece)
        return b"".join(parts)

    def read(self, relative: str, deadline: float) -> dict[str, Any]:
        body = self.get_json(self.url_for(relative), deadline)
        if body["resourceType"] == "OperationOutcome":
            raise FetchError(f"server answered with an OperationOutcome: {_outcome_text(body)}")
        return body

    def search(self, relative: str, deadline: float) -> tuple[list[dict[str, Any]], int, list[str]]:
        url = self.url_for(relative)
        return self.follow(self.get_json(url, deadline), deadline, "response", first_url=url)

    def follow(self, bundle: dict[str, Any], deadline: float, where: str,
               first_url: str | None = None) -> tuple[list[dict[str, Any]], int, list[str]]:
        """All resources of a searchset Bundle and its following pages."""
        seen: set[str] = {first_url} if first_url else set()
        resources: list[dict[str, Any]] = []
        notes: list[str] = []
        pages = 0
        page = bundle
        while True:
            if page.get("resourceType") == "OperationOutcome":
                raise FetchError(f"server answered with an OperationOutcome: {_outcome_text(page)}")
            if page.get("resourceType") != "Bundle":
                raise FetchError(f"expected a Bundle, got {page.get('resourceType')}")
            try:
                found, nxt, page_notes = bundle_resources(page, where)
            except BadData as exc:
                raise FetchError(f"malformed Bundle at {exc.where}: {exc.message}") from None
            pages += 1
            resources.extend(found)
            notes.extend(page_notes)
            if len(resources) > self.limits.max_resources:
                raise FetchError(f"more than {self.limits.max_resources} resources; stopped")
            if not nxt:
                return resources, pages, notes
            if nxt in seen:
                raise FetchError("paging loops: a next link repeats an earlier page")
            if pages >= self.limits.max_pages:
                raise FetchError(f"more than {self.limits.max_pages} pages; stopped")
            seen.add(nxt)
            page = self.get_json(nxt, deadline)
