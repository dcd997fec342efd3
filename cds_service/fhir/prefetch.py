"""Prefetch: read each key from the request, or fetch it from the fhirServer.

Per CDS Hooks 2.0, key by key:
- a key present with a resource or Bundle is used (its ``next`` links are followed when a
  fhirServer is given);
- a key present with ``null`` means "nothing there" and is not fetched;
- a missing key, or one holding an OperationOutcome, is fetched from the fhirServer with the
  Bearer token, all such keys in parallel, within one deadline.

The fetches of one call go through a :class:`CallPool`: at most its limit of them queued or running
in the shared fetch pool at once, none submitted after the deadline, and what has not started is
cancelled when the call answers; a read already running is cut (its socket shut down by the call's
:class:`~cds_service.fhir.client.ReadWatch`) at the deadline or when the call answers, whichever
comes first, so that no fetch of the call holds a thread of the pool after it.
"""
from __future__ import annotations

import re
import threading
import time
from concurrent.futures import CancelledError, Executor, Future, TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .client import BadData, FetchError, FhirClient, ReadWatch, bundle_resources, run_watched

TOKEN = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


class TemplateError(Exception):
    pass


def render(template: str, context: dict[str, Any]) -> str:
    """Fill ``{{context.x}}`` and the user tokens; values are URL-quoted."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name.startswith("context."):
            value = context.get(name[len("context."):])
        elif name in USER_TOKENS:
            user = context.get("userId")
            prefix = USER_TOKENS[name] + "/"
            value = user[len(prefix):] if isinstance(user, str) and user.startswith(prefix) else None
        else:
            raise TemplateError(f"unknown prefetch token {{{{{name}}}}}")
        if not isinstance(value, str) or not value:
            raise TemplateError(f"prefetch token {{{{{name}}}}} has no value in the context")
        if value in (".", ".."):  # a dot segment would move the request to another path of the server
            raise TemplateError(f"prefetch token {{{{{name}}}}} is not a usable id")
        return quote(value, safe="")

    return TOKEN.sub(sub, template)


@dataclass
class KeyResult:
    key: str
    origin: str  # prefetch | null | fetched | failed
    resources: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    pages: int = 0
    millis: int = 0
    notes: list[str] = field(default_factory=list)
    next_url: str | None = None  # a prefetched Bundle's next page, still to be read


@dataclass
class Gathered:
    keys: dict[str, KeyResult]

    def resources(self) -> list[dict[str, Any]]:
        return [r for k in self.keys.values() for r in k.resources]

    def failed(self) -> dict[str, str]:
        return {k: v.error or "unavailable" for k, v in self.keys.items() if v.origin == "failed"}


class MissingData(Exception):
    """Data is missing and cannot be fetched: the hook answers 412."""

    def __init__(self, message: str, keys: list[str]):
        super().__init__(message)
        self.keys = keys


class CallPool(Executor):
    """One hook call's share of the shared fetch pool: at most ``limit`` of its fetches queued or
    running at once (so one call with many reads cannot fill the pool for the others); a fetch
    that finds no free slot before the deadline is not submitted (its future is cancelled);
    :meth:`cancel` drops what has not started and cuts the reads still running (as the deadline does)."""

    def __init__(self, executor: Executor, limit: int, deadline: float):
        self._executor = executor
        self._slots = threading.BoundedSemaphore(max(1, limit))
        self._deadline = deadline
        self._futures: list[Future[Any]] = []
        self.watch = ReadWatch()

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        if not self._slots.acquire(timeout=max(0.0, self._deadline - time.monotonic())):
            fut: Future[Any] = Future()
            fut.cancel()
            return fut
        try:
            fut = self._executor.submit(run_watched, self.watch, fn, *args, **kwargs)
        except BaseException:
            self._slots.release()
            raise
        fut.add_done_callback(lambda _f: self._slots.release())
        self._futures.append(fut)
        self.watch.cut_at(self._deadline - time.monotonic())  # (started once, by the first fetch)
        return fut

    def cancel(self) -> None:
        for fut in self._futures:
            fut.cancel()
        self.watch.cut()  # the reads still running end now

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.cancel()  # the shared pool itself is not this call's to shut down


def _is_outcome(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"


def gather(templates: dict[str, str], request: dict[str, Any], client: FhirClient | None,
           executor: Executor, deadline: float, expected_types: dict[str, str]) -> Gathered:
    """Collect every prefetch key; raise BadData for a malformed prefetch in the request and
    MissingData when keys are missing and there is no fhirServer to fetch them from."""
    prefetch = request.get("prefetch") or {}
    context = request.get("context") or {}
    results: dict[str, KeyResult] = {}
    to_fetch: list[str] = []
    for key, template in templates.items():
        if key in prefetch and prefetch[key] is None:
            results[key] = KeyResult(key, "null")
            continue
        value = prefetch.get(key)
        if value is None or _is_outcome(value):
            to_fetch.append(key)
            continue
        where = f"prefetch.{key}"
        if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
            raise BadData(where, "must be a FHIR resource, a Bundle or null")
        if value["resourceType"] == "Bundle":
            found, nxt, notes = bundle_resources(value, where)
            res = KeyResult(key, "prefetch", found, pages=1, notes=notes, next_url=nxt)
            if nxt:
                if client is None:
                    res.origin, res.error = "failed", "the prefetched Bundle has more pages and no fhirServer was given to read them"
                else:
                    to_fetch.append(key)  # the following pages are read with the other fetches
            results[key] = res
        else:
            expected = expected_types.get(key)
            if expected and value["resourceType"] != expected:
                raise BadData(where, f"must be a {expected} (or null), got {value['resourceType']}")
            results[key] = KeyResult(key, "prefetch", [value], pages=1)

    if to_fetch and client is None:
        raise MissingData("prefetch data missing and no fhirServer to fetch it from: "
                          + ", ".join(to_fetch), to_fetch)

    futures = {}
    for key in to_fetch:
        partial = results.get(key)
        if partial is not None and partial.next_url:  # a prefetched first page: read the rest
            futures[key] = executor.submit(_follow_rest, client, partial, deadline)
            continue
        try:
            relative = render(templates[key], context)
        except TemplateError as exc:
            results[key] = KeyResult(key, "failed", error=str(exc))
            continue
        futures[key] = executor.submit(_fetch, client, relative, "?" in relative, deadline, key)
    for key, fut in futures.items():
        try:
            results[key] = fut.result(timeout=max(0.0, deadline - time.monotonic()) + 0.05)
        except (FutureTimeout, CancelledError):
            fut.cancel()
            results[key] = KeyResult(key, "failed", error="deadline reached")
    # keep the templates' order
    return Gathered({k: results[k] for k in templates if k in results})


def _fetch(client: FhirClient, relative: str, is_search: bool, deadline: float, key: str) -> KeyResult:
    start = time.monotonic()
    try:
        if is_search:
            resources, pages, notes = client.search(relative, deadline)
        else:
            resources, pages, notes = [client.read(relative, deadline)], 1, []
        return KeyResult(key, "fetched", resources, pages=pages, notes=notes,
                         millis=int((time.monotonic() - start) * 1000))
    except FetchError as exc:
        return KeyResult(key, "failed", error=str(exc), millis=int((time.monotonic() - start) * 1000))
    except RecursionError:  # a resource nested too deeply for the code that reads it
        return KeyResult(key, "failed", error="response is nested too deeply",
                         millis=int((time.monotonic() - start) * 1000))


def _follow_rest(client: FhirClient, first: KeyResult, deadline: float) -> KeyResult:
    start = time.monotonic()
    assert first.next_url
    try:
        page = client.get_json(first.next_url, deadline)
        resources, pages, notes = client.follow(page, deadline, "response", first_url=first.next_url)
        return KeyResult(first.key, "fetched", first.resources + resources, pages=pages + 1,
                         notes=first.notes + notes, millis=int((time.monotonic() - start) * 1000))
    except FetchError as exc:
        return KeyResult(first.key, "failed", error=str(exc), millis=int((time.monotonic() - start) * 1000))
    except RecursionError:
        return KeyResult(first.key, "failed", error="response is nested too deeply",
                         millis=int((time.monotonic() - start) * 1000))
