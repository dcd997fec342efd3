"""The request path without HTTP: gather data → facts → cards.

Used by the Flask API, by ``cds-service evaluate`` and by tests, with the same result.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from typing import Any

import jsonschema

from .cards import cite_once
from .clinical.facts import FactBuilder, now_date
from .config import Settings
from .fhir.client import BadData, FetchError, FhirClient, Limits, new_session
from .fhir.medications import MedicationPlan, plan_medication_reads
from .fhir.prefetch import CallPool, Gathered, MissingData, gather
from .fhir.trust import normalize_url, untrusted_reason
from .knowledge import Knowledge, load_knowledge
from .services import CdsService, registry

log = logging.getLogger("cds_service.hook")


class HookError(Exception):
    """The hook cannot answer with cards; status and message go into an OperationOutcome."""

    def __init__(self, status: int, message: str, where: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.where = where or []


def load_schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("cds_service.schemas").joinpath(name).read_text())


def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema(name), format_checker=jsonschema.FormatChecker())


def schema_errors(validator: jsonschema.Draft202012Validator, instance: Any, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        path = prefix
        for p in e.absolute_path:
            path += f"[{p}]" if isinstance(p, int) else (f".{p}" if path else str(p))
        out.append((path or "(request)", _schema_message(e)))
    return out


def _schema_message(e: jsonschema.ValidationError) -> str:
    """What is wrong, in the schema's terms, without quoting the value that was sent: these
    messages go into the audit trail, and a value can be a patient's data."""
    rule, want = e.validator, e.validator_value
    if rule == "type":
        return "must be of type " + (" or ".join(want) if isinstance(want, list) else str(want))
    if rule == "pattern":
        return f"does not match the pattern {want}"
    if rule == "minLength":
        return "must not be empty" if want == 1 else f"must be at least {want} characters long"
    if rule == "maxLength":
        return f"must be at most {want} characters long"
    if rule in ("const", "enum"):
        allowed = [want] if rule == "const" else want
        return "must be " + " or ".join(json.dumps(a) for a in allowed)
    if rule in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        words = {"minimum": "at least", "exclusiveMinimum": "more than", "maximum": "at most",
                 "exclusiveMaximum": "less than"}
        return f"must be {words[rule]} {want}"
    if rule in ("minItems", "maxItems"):
        return f"must have {'at least' if rule == 'minItems' else 'at most'} {want} items"
    if rule == "format":
        return f"is not a valid {want}"
    if rule in ("required", "dependentRequired", "additionalProperties"):
        return e.message  # names properties, not values
    return f"does not satisfy the schema's {rule!r} rule"


def _parses(url: str) -> bool:
    """urllib can read it (bad IPv6 brackets, or characters that change under NFKC, cannot be)."""
    from urllib.parse import urlsplit

    try:
        urlsplit(url).port
    except ValueError:
        return False
    return True


@dataclass
class HookResult:
    cards: list[dict[str, Any]]
    gathered: Gathered
    timings: dict[str, int] = field(default_factory=dict)
    facts: Any = None  # the Facts the cards were made from (what was not used, for `cds-service evaluate`)
    # the Medications that medication records reference and the request did not hold (rules §6.1):
    # the path read (``Medication/{id}``) → "fetched" or "failed: why", and the reference as written →
    # "not read: why" (ids and fixed reasons only, never the server's text: for the log and the audit)
    medications: dict[str, str] = field(default_factory=dict)


class Engine:
    def __init__(self, settings: Settings, knowledge: Knowledge | None = None):
        self.settings = settings
        self.knowledge = knowledge or load_knowledge(site_directory=settings.knowledge_dir or None)
        self.services: dict[str, CdsService] = registry(self.knowledge)
        self.facts = FactBuilder(self.knowledge)
        self.limits = Limits(settings.fhir_connect_timeout, settings.fhir_read_timeout,
                             settings.fhir_max_pages, settings.fhir_max_resources, settings.fhir_max_response_bytes)
        # the most fetches one call has queued or running in the pool at once: all nine prefetch keys
        # with the default 16 workers, and a quarter of the pool always left to the other calls
        self.fetches_per_call = max(1, settings.fetch_workers * 3 // 4)
        self.request_validator = _validator("cds-request.schema.json")
        self.feedback_validator = _validator("feedback.schema.json")
        self.context_validators = {
            "patient-view": _validator("context-patient-view.schema.json"),
            "order-select": _validator("context-order-select.schema.json"),
            "order-sign": _validator("context-order-sign.schema.json"),
        }
        self._lock = threading.Lock()
        self._session = None
        self._executor: ThreadPoolExecutor | None = None

    # created lazily so that each gunicorn worker (after fork) has its own pool and threads
    @property
    def session(self):
        with self._lock:
            if self._session is None:
                self._session = new_session(max(16, self.settings.fetch_workers * 2))
            return self._session

    @property
    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.settings.fetch_workers, thread_name_prefix="fhir-fetch")
            return self._executor

    trust = None  # set by create_app when authentication is on

    def trusted_issuer_servers(self, iss: str | None) -> list[str]:
        if self.trust is None or iss is None or iss not in self.trust.issuers:
            return []
        return list(self.trust.issuers[iss].fhir_servers)

    def discovery(self) -> dict[str, Any]:
        return {"services": [s.discovery() for s in self.services.values()]}

    def validate(self, service: CdsService, body: Any) -> None:
        if not isinstance(body, dict):
            raise HookError(400, "the request body must be a JSON object", ["(request)"])
        errors = schema_errors(self.request_validator, body)
        if not errors and body.get("hook") != service.hook:
            raise HookError(400, f"hook {body.get('hook')!r} does not match service {service.id!r}, "
                                 f"which answers {service.hook!r}", ["hook"])
        if not errors and isinstance(body.get("fhirServer"), str) and not _parses(body["fhirServer"]):
            errors = [("fhirServer", "is not a valid URL")]
        if not errors and service.hook in self.context_validators:
            errors = schema_errors(self.context_validators[service.hook], body["context"], "context")
        if errors:
            msg = "; ".join(f"{where}: {m}" for where, m in errors[:5])
            raise HookError(400, f"invalid request: {msg}", [w for w, _ in errors[:5]])

    def call(self, service_id: str, body: Any, as_of: date | None = None,
             issuer_fhir_servers: list[str] | None = None) -> HookResult:
        """``issuer_fhir_servers``: the FHIR servers the authenticated issuer is trusted for."""
        service = self.services[service_id]
        t0 = time.monotonic()
        self.validate(service, body)
        deadline = t0 + self.settings.hook_deadline
        client = None
        untrusted = None
        if body.get("fhirServer"):
            untrusted = untrusted_reason(body["fhirServer"], self.settings.fhir_allowlist, issuer_fhir_servers or [],
                                         self.settings.allow_http_fhir)
            if untrusted is None:
                token = (body.get("fhirAuthorization") or {}).get("access_token")
                servers = issuer_fhir_servers or []

                def allowed(url: str) -> str | None:  # every link read from the server: the same allowlist
                    return untrusted_reason(url, self.settings.fhir_allowlist, servers,
                                            self.settings.allow_http_fhir, what="link")

                # the normalised URL: what was matched against the allowlist is what is called
                client = FhirClient(normalize_url(body["fhirServer"]), token, self.session, self.limits, allowed)
        pool = CallPool(self.executor, self.fetches_per_call, deadline)
        try:
            return self._call(service, body, as_of, client, untrusted, pool, t0, deadline)
        finally:
            pool.cancel()  # nothing of this call is left queued once it has answered

    def _call(self, service: CdsService, body: dict[str, Any], as_of: date | None, client: FhirClient | None,
              untrusted: str | None, pool: CallPool, t0: float, deadline: float) -> HookResult:
        try:
            gathered = gather(service.prefetch, body, client, pool, deadline, service.expected_types)
        except BadData as exc:
            raise HookError(400, f"invalid prefetch: {exc.where}: {exc.message}", [exc.where]) from None
        except MissingData as exc:
            where = [f"prefetch.{k}" for k in exc.keys]
            if untrusted:
                raise HookError(412, f"{untrusted}: it was not called, and data is missing: "
                                     + ", ".join(exc.keys), ["fhirServer"] + where) from None
            raise HookError(412, str(exc), where) from None
        t1 = time.monotonic()
        failed = gathered.failed()
        blocking = [k for k in service.required_keys if k in failed]
        if blocking:
            raise HookError(412, "could not read required data from the fhirServer: "
                            + "; ".join(f"{k}: {failed[k]}" for k in blocking),
                            [f"prefetch.{k}" for k in blocking])
        patient_key = gathered.keys.get(service.patient_key)
        patients = [r for r in (patient_key.resources if patient_key else []) if r.get("resourceType") == "Patient"]
        if not patients:
            raise HookError(412, f"no Patient resource for {service.patient_key!r}: the patient is required",
                            [f"prefetch.{service.patient_key}"])
        patient = patients[0]
        ctx_patient = (body.get("context") or {}).get("patientId")
        if ctx_patient and patient.get("id") and patient.get("id") != ctx_patient:
            if patient_key.origin == "fetched":
                raise HookError(412, f"the fhirServer returned Patient/{patient.get('id')} for "
                                     f"context.patientId {ctx_patient}", [f"prefetch.{service.patient_key}"])
            raise HookError(400, f"prefetch.{service.patient_key} is Patient/{patient.get('id')}, "
                                 f"but context.patientId is {ctx_patient}", [f"prefetch.{service.patient_key}"])
        others = [r for r in gathered.resources() if r is not patient]
        plan = plan_medication_reads(others, client.base if client else None,
                                     self.settings.fhir_max_medication_reads)
        medications = dict(plan.skipped)
        if plan.reads and client is not None:  # reads are planned only with a fhirServer
            found, outcomes = self._read_medications(client, plan, deadline, pool)
            others += found
            medications.update(outcomes)
            t1 = time.monotonic()
        facts = self.facts.build(patient, others, as_of or now_date(), unavailable=failed)
        # a deceased patient gets no cards from any service (clinical rules §6.5)
        cards = [] if facts.patient.deceased else service.handler(facts, self.knowledge, body)
        # the response as a whole: each guideline cited in full once, on the first card that uses it
        cards = cite_once(self.knowledge, cards)
        t2 = time.monotonic()
        return HookResult(cards, gathered, {"gather_ms": int((t1 - t0) * 1000), "rules_ms": int((t2 - t1) * 1000)},
                          facts, medications)

    def _read_medications(self, client: FhirClient, plan: MedicationPlan, deadline: float,
                          pool: CallPool) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """Read the planned ``Medication/{id}`` from the fhirServer, in parallel, with the hook's
        client (its token and limits) and deadline. A read that fails is not an error of the hook:
        the record whose drug stays unknown is listed as not used by the facts layer; here its
        outcome is kept, without the server's text (which could carry anything)."""
        futures = {path: pool.submit(_read_medication, client, path, deadline) for path in plan.reads}
        found: list[dict[str, Any]] = []
        outcomes: dict[str, str] = {}
        for path, fut in futures.items():
            try:
                resource, outcome = fut.result(timeout=max(0.0, deadline - time.monotonic()) + 0.05)
            except (FutureTimeout, CancelledError):
                fut.cancel()
                resource, outcome = None, "failed: deadline reached"
            if resource is not None:
                found.append(resource)
            outcomes[path] = outcome
        return found, outcomes

    def close(self) -> None:
        if self._executor:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _read_medication(client: FhirClient, path: str, deadline: float) -> tuple[dict[str, Any] | None, str]:
    """One Medication read: the resource and "fetched", or None and why not (a fixed text: the
    server's own words are left out, as they could carry anything)."""
    try:
        resource = client.read(path, deadline)
    except FetchError as exc:
        return None, "failed: " + str(exc).split(":", 1)[0]
    except RecursionError:
        return None, "failed: response is nested too deeply"
    if resource.get("resourceType") != "Medication":
        return None, "failed: the fhirServer answered with another resource type"
    wanted = path.split("/")[1]
    if resource.get("id") is None:
        resource = {**resource, "id": wanted}  # a read's answer is that id, even when the server left it out
    elif resource.get("id") != wanted:
        return None, "failed: the fhirServer answered with another Medication"
    return resource, "fetched"
