"""Command line: ``cds-service serve`` and ``cds-service evaluate``."""
from __future__ import annotations

import argparse
import os
import json
import sys
import uuid
from datetime import date, timedelta
from typing import Any, Sequence

from .fhir.medications import MEDICATION_RECORDS, medication_references, referenced_id


def _serve(args: argparse.Namespace) -> int:
    from . import create_app
    from .config import ConfigError, Settings
    from .server import MetricsDir, run

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers),
                                   ("threads", args.threads)) if v is not None}
    try:
        settings = Settings.from_env(overrides=overrides)
    except ConfigError as exc:
        print(f"cds-service: {exc}", file=sys.stderr)
        return 2

    if args.server == "gevent":
        import importlib.util

        if importlib.util.find_spec("gevent") is None:
            print("cds-service: --server gevent needs gevent (pip install gevent); it is not a dependency: "
                  "see README, Benchmarks, \"HTTP server and slow clients\"", file=sys.stderr)
            return 2

    # metrics from every worker add up in one folder (prometheus_client multiprocess mode): set up
    # before the application's metrics are created
    with MetricsDir():
        # the app is built once here so that a broken knowledge file or setting stops start-up, and so
        # that its start-up warnings are logged once per `cds-service serve`, not once per worker
        try:
            create_app(overrides)
        except ConfigError as exc:  # the message names the variable
            print(f"cds-service: {exc}", file=sys.stderr)
            return 2
        except Exception as exc:  # noqa: BLE001 - report any start-up failure plainly
            print(f"cds-service: cannot start: {exc}", file=sys.stderr)
            return 2
        # granian (default), gthread or gevent: cds_service/server.py, README "HTTP server and slow clients"
        run(args.server, settings, overrides)
    return 0


def worker_signals(worker) -> None:
    """gunicorn's post_worker_init hook: how a worker takes SIGINT and SIGQUIT."""
    # gunicorn's gthread worker answers SIGQUIT (and SIGINT) by shutting its thread pool down
    # inside the signal handler; when the signal lands while the main thread is in the pool's
    # submit(), both want the pool's lock and the worker hangs until the master kills it 30 s
    # later (seen on Ctrl-C under load: tests/e2e/test_first_contact.py). Here a worker ignores
    # the terminal's SIGINT (the master has it too and stops the workers), and SIGQUIT starts
    # the same shutdown as SIGTERM, whose handler only sets a flag: in-flight calls finish, and
    # an idle worker exits at once.
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, worker.handle_exit)


def tune_gc() -> None:
    """Garbage-collector settings for a worker, once its application is loaded.

    Every hook call parses a request of tens of thousands of small objects, which with the default
    threshold (700) runs a collection on nearly every call; almost all of them are freed by
    reference counting, not by the collector. ``gc.freeze()`` moves the application's long-lived
    objects (knowledge, schemas, templates) out of the collector's scans, and a first-generation
    threshold of 5,000 lets a call finish before a collection (measured: about 0.2 ms less per hook
    call, see README, Benchmarks). Reference cycles are still collected."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 10, 10)


GC_THRESHOLD = 5000


def bundle_to_request(bundle: dict[str, Any], patient_id: str | None, templates: dict[str, str],
                      hook: str) -> dict[str, Any]:
    """A hook request whose every prefetch key is filled from the bundle's resources."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise ValueError("the file is not a FHIR Bundle")
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        raise ValueError("the Bundle has no entry array")
    resources = []
    full_urls: list[str | None] = []
    for i, e in enumerate(entries):
        r = e.get("resource") if isinstance(e, dict) else None
        if not isinstance(r, dict) or not isinstance(r.get("resourceType"), str):
            raise ValueError(f"Bundle.entry[{i}] has no resource")
        resources.append(r)
        full_urls.append(e["fullUrl"] if isinstance(e.get("fullUrl"), str) else None)
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    if patient_id:
        patients = [p for p in patients if p.get("id") == patient_id]
        if not patients:
            raise ValueError(f"the Bundle has no Patient with id {patient_id!r}")
    if not patients:
        raise ValueError("the Bundle has no Patient")
    if len(patients) > 1:
        raise ValueError("the Bundle has several Patients; choose one with --patient ID")
    patient = patients[0]
    pid = patient.get("id")
    if not isinstance(pid, str) or not pid:
        raise ValueError("the Patient has no id")
    prefetch: dict[str, Any] = {}
    for key, template in templates.items():
        rtype = template.split("?", 1)[0].split("/", 1)[0]
        if "?" not in template:
            prefetch[key] = patient if rtype == "Patient" else None
            continue
        codes = _template_codes(template)
        matching = [r for r in resources if r["resourceType"] == rtype and _belongs(r, pid)
                    and (codes is None or _has_code(r, codes))]
        entry: list[dict[str, Any]] = [{"resource": r} for r in matching]
        if rtype in MEDICATION_RECORDS:
            entry += _included_medications(matching, resources, full_urls)
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "total": len(matching), "entry": entry}
    return {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/cli", "patientId": pid},
        "prefetch": prefetch,
    }


def _included_medications(records: list[dict[str, Any]], resources: list[dict[str, Any]],
                          full_urls: list[str | None]) -> list[dict[str, Any]]:
    """The Bundle's Medications that ``records`` name by ``medicationReference``, as entries with
    ``search.mode`` ``include``, as a FHIR server answers ``_include=...:medication``: so that the
    service finds them in the request and does not read them from a fhirServer (rules §6.1).

    A reference matches a Medication by ``Medication/{id}`` (relative, or a URL ending in it) or by
    the entry's ``fullUrl`` (``urn:uuid:X`` in a transaction Bundle). The search result carries no
    fullUrl the facts layer could match ``urn:uuid:X`` against, so a Medication matched that way
    whose id is not X goes in as a copy whose id is X: the facts layer resolves ``urn:uuid:X`` to the
    Medication with id X."""
    by_id: dict[str, dict[str, Any]] = {}
    by_full_url: dict[str, dict[str, Any]] = {}
    for r, url in zip(resources, full_urls):
        if r["resourceType"] != "Medication":
            continue
        if isinstance(r.get("id"), str) and r["id"]:
            by_id.setdefault(r["id"], r)
        if url:
            by_full_url.setdefault(url, r)
    out: list[dict[str, Any]] = []
    seen: set[tuple[int, Any]] = set()  # (which Medication, the id it goes in with)
    for target in medication_references(records):
        if target in by_full_url:
            med = by_full_url[target]
            as_id = target[len("urn:uuid:"):] if target.startswith("urn:uuid:") else med.get("id")
        else:
            as_id = referenced_id(target)
            med = by_id.get(as_id) if as_id else None
        if med is None or (id(med), as_id) in seen:
            continue
        seen.add((id(med), as_id))
        out.append({"resource": med if med.get("id") == as_id else {**med, "id": as_id},
                    "search": {"mode": "include"}})
    return out


def _template_codes(template: str) -> set[tuple[str, str]] | None:
    """The system|code tokens of a template's ``code`` parameter, as a FHIR server would match them."""
    from urllib.parse import parse_qsl, urlsplit

    query = dict(parse_qsl(urlsplit(template).query))
    if "code" not in query:
        return None
    out = set()
    for token in query["code"].split(","):
        system, _, code = token.rpartition("|")
        out.add((system, code))
    return out


def _has_code(resource: dict[str, Any], codes: set[tuple[str, str]]) -> bool:
    concept = resource.get("code") if isinstance(resource.get("code"), dict) else {}
    for c in concept.get("coding") or []:
        if isinstance(c, dict) and ((c.get("system", ""), c.get("code")) in codes or ("", c.get("code")) in codes):
            return True
    return False


def _belongs(resource: dict[str, Any], patient_id: str) -> bool:
    for key in ("subject", "patient"):
        ref = resource.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            r = ref["reference"]
            return r.endswith(f"Patient/{patient_id}") or r.startswith("urn:")
    return True


def _evaluate(args: argparse.Namespace) -> int:
    from .config import ConfigError, Settings
    from .engine import Engine, HookError
    from .knowledge import KnowledgeError

    try:
        with open(args.bundle, encoding="utf-8") as fh:
            bundle = json.load(fh)
    except OSError as exc:
        print(f"cds-service evaluate: cannot read {args.bundle}: {exc.strerror}", file=sys.stderr)
        return 2
    except (ValueError, UnicodeDecodeError) as exc:
        print(f"cds-service evaluate: {args.bundle} is not valid JSON: {exc}", file=sys.stderr)
        return 2
    try:
        as_of = date.fromisoformat(args.as_of) if args.as_of else None
    except ValueError:
        print(f"cds-service evaluate: --as-of {args.as_of!r} is not a date (YYYY-MM-DD)", file=sys.stderr)
        return 2
    try:
        engine = Engine(Settings.from_env())
    except (ConfigError, KnowledgeError) as exc:  # the message names the variable or the file
        print(f"cds-service evaluate: {exc}", file=sys.stderr)
        return 2
    service = engine.services[args.service] if args.service in engine.services else None
    if service is None:
        print(f"cds-service evaluate: no service {args.service!r}", file=sys.stderr)
        return 2
    try:
        req = bundle_to_request(bundle, args.patient, service.prefetch, service.hook)
        result = engine.call(service.id, req, as_of=as_of)
    except ValueError as exc:
        print(f"cds-service evaluate: {args.bundle}: {exc}", file=sys.stderr)
        return 2
    except HookError as exc:
        print(f"cds-service evaluate: {args.bundle}: {exc.message}", file=sys.stderr)
        return 2
    finally:
        engine.close()
    json.dump({"cards": result.cards}, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    summary = not_used_summary(result.facts)
    if summary:
        print(summary, file=sys.stderr)
    return 0


NOT_USED_SHOWN = 3  # records named per reason; the rest are counted


def not_used_summary(facts: Any) -> str:
    """A short account, for stderr, of the records the rules did not use and why (rules §6.4):
    grouped by reason, a few records named per reason. Reasons carry no clinical values."""
    if facts is None or not (facts.ignored or facts.unavailable):
        return ""
    by_reason: dict[str, list[str]] = {}
    for ig in facts.ignored:
        reason = ig.reason
        if reason.startswith("superseded by "):
            reason = "superseded by a corrected or amended result of the same code and date"
        elif reason.startswith("dated in the future"):
            reason = "dated in the future"
        by_reason.setdefault(reason, []).append(ig.resource)
    lines = [f"cds-service evaluate: {len(facts.ignored)} record(s) not used"]
    for reason, refs in by_reason.items():
        more = f" and {len(refs) - NOT_USED_SHOWN} more" if len(refs) > NOT_USED_SHOWN else ""
        lines.append(f"  - {reason}: {', '.join(refs[:NOT_USED_SHOWN])}{more}")
    for key, why in facts.unavailable.items():
        lines.append(f"  - {key} could not be read: {why}")
    return "\n".join(lines)


def _store_from_env():
    from . import open_store
    from .config import Settings

    return open_store(Settings.from_env())  # ConfigError names a wrong variable


def _db(args: argparse.Namespace) -> int:
    from .config import ConfigError

    try:
        store = _store_from_env()
        if args.db_command == "upgrade":
            head = store.migrate()
            print(f"database at revision {head}")
        else:
            store.migrate()
            print(f"purged {store.purge()} audit records older than the retention period")
    except (ConfigError, ValueError) as exc:
        print(f"cds-service db: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a database fault, reported plainly
        print(f"cds-service db: database error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", file=sys.stderr)
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .store import report

    try:
        end = date.fromisoformat(args.to) if args.to else date.today()
        start = date.fromisoformat(args.from_) if args.from_ else end - timedelta(days=30)
    except ValueError:
        print("cds-service report: --from and --to take dates as YYYY-MM-DD", file=sys.stderr)
        return 2
    if start > end:
        print("cds-service report: --from is after --to", file=sys.stderr)
        return 2
    try:
        store = _store_from_env()
        store.migrate()
        rep = report.build(store, start, end, include_console=args.include_console)
    except (ConfigError, ValueError) as exc:
        print(f"cds-service report: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001
        print(f"cds-service report: database error: {type(exc).__name__}", file=sys.stderr)
        return 1
    try:
        if args.format == "json":
            json.dump(rep, sys.stdout, indent=2)
            sys.stdout.write("\n")
        elif args.format == "csv":  # the csv holds only the table; which database and console calls go to stderr
            print(f"cds-service report: database: {rep['database']}\ncds-service report: {report.console_note(rep)}",
                  file=sys.stderr)
            sys.stdout.write(report.as_csv(rep))
        else:
            sys.stdout.write(report.as_table(rep))
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
    except BrokenPipeError:
        # `cds-service report | head -1`: the reader has gone; stop quietly (exit 0, as `knowledge` does);
        # what is left in the buffer goes to /dev/null at exit instead of an "Exception ignored" message
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if args.plot:
        try:
            report.plot(rep, args.plot)
        except ImportError:
            print("cds-service report: --plot needs matplotlib (pip install 'bone-health-cds[plot]')", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"cds-service report: cannot write {args.plot}: {exc.strerror}", file=sys.stderr)
            return 2
    return 0


def _knowledge(args: argparse.Namespace) -> int:
    """List the value sets, or say where a code or drug name falls, with the knowledge the service
    would load (CDS_KNOWLEDGE_DIR included)."""
    import json

    from .knowledge import KnowledgeError, load_knowledge
    from .knowledge.explain import describe, lookup

    try:
        k = load_knowledge(site_directory=os.environ.get("CDS_KNOWLEDGE_DIR") or None)
    except KnowledgeError as exc:
        print(f"cds-service knowledge: {exc}", file=sys.stderr)
        return 2
    if args.knowledge_command == "lookup":
        found = lookup(k, args.query, args.system)
        if args.format == "json":
            print(json.dumps(found, indent=2, ensure_ascii=False))
            return 0 if found["codes"] or found.get("name") else 1
        for c in found["codes"]:
            print(f"{c['code']} ({c['system']}): {c['display']}")
            print(f"  in value set {c['valueset']}, read as {'; '.join(c['read_as']) or 'nothing the rules read'}"
                  f" (matched by {c['via']})")
            print(f"  sources: {'; '.join(c['sources'])}" + ("" if c["confirmed"] else "  [unconfirmed: no source has it]"))
        if found.get("name"):
            n = found["name"]
            print(f"name {found['query']!r}: drug {n['drug']} (names found: {', '.join(n['names_found'])}"
                  + ("; chosen by the strength written with it" if n["strength"] else "") + ")")
        if not found["codes"] and not found.get("name"):
            print(f"{found['query']!r} is in no value set and names no drug of the knowledge files"
                  + (f"; a record with it is listed as not used: {found['unmatched']}" if found.get("unmatched") else ""))
            return 1
        return 0
    rows = describe(k)
    if args.format == "json":
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    print(f"knowledge: {k.directory}" + (f" + {k.site_directory}" if k.site_directory else ""))
    for r in rows:
        counts = ", ".join(f"{n} {s}" for s, n in r["codes"].items())
        local = f", {r['local_codes']} local" if r["local_codes"] else ""
        unconfirmed = f"; unconfirmed: {', '.join(r['unconfirmed'])}" if r["unconfirmed"] else ""
        print(f"{r['valueset']}: {r['title']}")
        print(f"  read as {'; '.join(r['read_as']) or '-'}; {counts}{local}{unconfirmed}")
        for src in r["sources"]:
            print(f"  source: {src}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .services.patient_view import SERVICE_ID

    from . import __version__

    parser = argparse.ArgumentParser(prog="cds-service", description="Bone-health CDS Hooks 2.0 service")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    from .server import DEFAULT_SERVER, SERVERS

    serve = sub.add_parser("serve", help="run the service (granian by default)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1, or CDS_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8080, or CDS_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (default 2, or CDS_WORKERS)")
    serve.add_argument("--threads", type=int, help="threads per worker (default 2, or CDS_THREADS)")
    serve.add_argument("--server", choices=SERVERS, default=DEFAULT_SERVER,
                       help="HTTP server: granian (default; reads slow and idle clients without a thread), "
                            "gthread (gunicorn threads: only behind a buffering reverse proxy), gevent")
    ev = sub.add_parser("evaluate", help="run the patient-view service on a FHIR Bundle and print the cards")
    ev.add_argument("bundle", help="a FHIR R4 Bundle (JSON) holding a Patient and related resources")
    ev.add_argument("--patient", help="the Patient id, when the bundle holds several")
    ev.add_argument("--as-of", help="evaluate as on this date (YYYY-MM-DD) instead of today")
    ev.add_argument("--service", default=SERVICE_ID, help=argparse.SUPPRESS)
    db = sub.add_parser("db", help="database maintenance (CDS_DATABASE_URL, or SQLite under CDS_DATA_DIR)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply the migrations (also done at start-up)")
    db_sub.add_parser("purge", help="delete audit records older than CDS_AUDIT_RETENTION_DAYS")
    rp = sub.add_parser("report", help="acceptance and override rates of the cards, per topic and per suggestion")
    rp.add_argument("--from", dest="from_", help="first day (YYYY-MM-DD), default 30 days before --to")
    rp.add_argument("--to", help="last day (YYYY-MM-DD), default today")
    rp.add_argument("--format", choices=("table", "csv", "json"), default="table")
    rp.add_argument("--plot", metavar="FILE.png", help="also draw the daily rates per topic as a chart")
    rp.add_argument("--include-console", action="store_true",
                    help="count the card console's calls too (left out by default)")
    kn = sub.add_parser("knowledge", help="the value sets (concepts, code counts, sources); lookup CODE|NAME")
    kn.add_argument("--format", choices=("table", "json"), default="table")
    kn_sub = kn.add_subparsers(dest="knowledge_command")
    ls = kn_sub.add_parser("list", help="every value set with its concept, code counts and sources (the default)")
    ls.add_argument("--format", choices=("table", "json"), default=argparse.SUPPRESS)
    lk = kn_sub.add_parser("lookup", help="which concept a code or a drug name falls in, and why")
    lk.add_argument("query", help="a code (RxNorm, NDC, SNOMED CT, ICD-10-CM, LOINC, a local code) or a drug name")
    lk.add_argument("--system", help="only this system: rxnorm, ndc, snomed, icd10cm, loinc or a URI")
    lk.add_argument("--format", choices=("table", "json"), default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "knowledge":
        try:
            return _knowledge(args)
        except BrokenPipeError:  # `cds-service knowledge | head`: the reader has gone, stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    if args.command == "serve":
        return _serve(args)
    if args.command == "db":
        return _db(args)
    if args.command == "report":
        return _report(args)
    return _evaluate(args)


if __name__ == "__main__":
    raise SystemExit(main())
