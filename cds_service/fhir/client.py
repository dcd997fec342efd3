"""A small FHIR R4 REST client: reads and searches with paging, timeouts and a deadline.

- The access token goes only to the fhirServer's own origin; a ``next`` link that leaves it is
  not followed (and the token is never sent there).
- ``next`` links are followed verbatim, up to a page cap; a link seen before is a loop.
- Every failure is a FetchError with a reason a clinician-facing card or an OperationOutcome can
  show; nothing here raises anything else for bad server behaviour.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

FHIR_JSON = "application/fhir+json"


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


def new_session(pool_size: int = 16) -> requests.Session:
    s = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
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


class FhirClient:
    def __init__(self, base_url: str, access_token: str | None, session: requests.Session, limits: Limits):
        self.base = base_url.rstrip("/")
        self.origin = origin(self.base)
        self._token = access_token
        self.session = session
        self.limits = limits

    def _headers(self, url: str) -> dict[str, str]:
        h = {"Accept": FHIR_JSON}
        if self._token and origin(url) == self.origin:
            h["Authorization"] = f"Bearer {self._token}"
        return h

    def url_for(self, relative: str) -> str:
        return f"{self.base}/{relative.lstrip('/')}"

    def get_json(self, url: str, deadline: float) -> dict[str, Any]:
        if origin(url) != self.origin:
            raise FetchError("link points outside the fhirServer; not followed")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError("deadline reached before the request")
        timeout = (min(self.limits.connect_timeout, remaining), min(self.limits.read_timeout, remaining))
        try:
            resp = self.session.get(url, headers=self._headers(url), timeout=timeout, allow_redirects=False)
        except requests.Timeout:
            raise FetchError("timed out") from None
        except requests.ConnectionError:
            raise FetchError("could not connect") from None
        except requests.RequestException as exc:
            raise FetchError(f"request failed ({type(exc).__name__})") from None
        if time.monotonic() > deadline:
            raise FetchError("deadline reached")
        if 300 <= resp.status_code < 400:
            raise FetchError(f"HTTP {resp.status_code} redirect; redirects are not followed")
        if resp.status_code != 200:
            detail = ""
            try:
                body = resp.json()
                if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
                    detail = f": {_outcome_text(body)}"
            except ValueError:
                pass
            raise FetchError(f"HTTP {resp.status_code}{detail}")
        try:
            body = json.loads(resp.content)
        except (ValueError, UnicodeDecodeError):
            raise FetchError("response is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise FetchError("response is not a FHIR resource")
        return body

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
