"""Therapy as EHRs record it (clinical rules §6.1): the sample patients of ``fhir_samples/therapy.py``
(built for today) and the Synthea patients of ``fhir_samples/synthea/`` (today and at the end of their
record), each against the expectations a clinician wrote for it as data.

The expectations use a small vocabulary, implemented by ``check``:

- ``("offers", drug)``: a card suggestion creates a MedicationRequest for that drug (matched with
  ``Knowledge.match_drug``; drug keys of the knowledge files);
- ``("says", phrase)``: some card's summary or detail contains the phrase (case-insensitive);
- ``("indicator", level, phrase)``: a card with that indicator whose summary contains the phrase;
- ``("not_used", "ResourceType/id")``: the record is listed under data not used (``Facts.ignored``);
- ``("no_cards",)``: the answer has no card at all (a deceased patient).

Cards come through the Flask app (patient-view); the records not used, and the cards of an evaluation at
the end of a Synthea record, from the engine itself, as ``cds-service evaluate --as-of`` runs it."""
from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Sequence

import pytest

from cds_service.cli import bundle_to_request
from cds_service.config import Settings
from cds_service.engine import Engine
from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.services.patient_view import SERVICE_ID, prefetch_templates
from fhir_samples import therapy
from tests.conftest import hook_cards

ROOT = Path(__file__).resolve().parents[2]
SYNTHEA = ROOT / "fhir_samples" / "synthea"
WRITTEN = ROOT / "fhir_samples" / "therapy"
LEVELS = ("info", "warning", "critical")
DRUGS = therapy.DRUGS
Check = Sequence[str]


# -- the vocabulary -----------------------------------------------------------------------------------

_KNOWLEDGE: Knowledge | None = None


def _knowledge(k: Knowledge | None) -> Knowledge:
    global _KNOWLEDGE
    if k is not None:
        return k
    if _KNOWLEDGE is None:
        _KNOWLEDGE = load_knowledge()
    return _KNOWLEDGE


def _norm(text: Any) -> str:
    """Lower case, Markdown emphasis and code marks left out, white space collapsed."""
    if not isinstance(text, str):
        return ""
    return " ".join(text.replace("*", "").replace("`", "").replace("\u00a0", " ").lower().split())


def _card_text(card: dict[str, Any]) -> str:
    return _norm(card.get("summary")) + "\n" + _norm(card.get("detail"))


def _created_medication_requests(cards: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for card in cards:
        for s in card.get("suggestions") or []:
            for a in s.get("actions") or []:
                r = a.get("resource") if isinstance(a, dict) else None
                if a.get("type") == "create" and isinstance(r, dict) and r.get("resourceType") == "MedicationRequest":
                    if r.get("doNotPerform") is True:  # an order not to give a drug offers nothing
                        continue
                    yield r


def _medication_concept(request: dict[str, Any]) -> dict[str, Any]:
    concept = request.get("medicationCodeableConcept")
    if isinstance(concept, dict):
        return concept
    ref = (request.get("medicationReference") or {}).get("reference")
    if isinstance(ref, str) and ref.startswith("#"):
        for c in request.get("contained") or []:
            if c.get("resourceType") == "Medication" and c.get("id") == ref[1:]:
                return c.get("code") or {}
    return {}


def offered_drugs(cards: Iterable[dict[str, Any]], knowledge: Knowledge | None = None) -> set[str]:
    """The drug keys of every MedicationRequest a card suggestion creates."""
    k = _knowledge(knowledge)
    out = set()
    for r in _created_medication_requests(cards):
        concept = _medication_concept(r)
        codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
        text = concept.get("text") or " ".join(str(c.get("display", "")) for c in codings)
        drug = k.match_drug(codings, text)
        if drug:
            out.add(drug)
    return out


def validate_check(chk: Check) -> None:
    """Raise ValueError unless ``chk`` is a check of the vocabulary."""
    if not isinstance(chk, (tuple, list)) or not chk or not all(isinstance(x, str) for x in chk):
        raise ValueError(f"a check is a sequence of strings: {chk!r}")
    kind, args = chk[0], tuple(chk[1:])
    if kind == "offers":
        if len(args) != 1 or args[0] not in DRUGS:
            raise ValueError(f"('offers', drug) with drug one of {DRUGS}: {chk!r}")
    elif kind == "says":
        if len(args) != 1 or not args[0].strip():
            raise ValueError(f"('says', phrase): {chk!r}")
    elif kind == "indicator":
        if len(args) != 2 or args[0] not in LEVELS or not args[1].strip():
            raise ValueError(f"('indicator', level, phrase) with level one of {LEVELS}: {chk!r}")
    elif kind == "not_used":
        if len(args) != 1 or not re.fullmatch(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}", args[0]):
            raise ValueError(f"('not_used', 'ResourceType/id'): {chk!r}")
    elif kind == "no_cards":
        if args:
            raise ValueError(f"('no_cards',) takes nothing: {chk!r}")
    else:
        raise ValueError(f"unknown check {kind!r}: {chk!r}")


def check(cards: list[dict[str, Any]], facts: Any, chk: Check, knowledge: Knowledge | None = None) -> bool:
    """Whether the answer (``cards``, and ``facts`` for ``not_used``) satisfies one check."""
    validate_check(chk)
    kind = chk[0]
    if kind == "offers":
        return chk[1] in offered_drugs(cards, knowledge)
    if kind == "says":
        phrase = _norm(chk[1])
        return any(phrase in _card_text(c) for c in cards)
    if kind == "indicator":
        level, phrase = chk[1], _norm(chk[2])
        return any(c.get("indicator") == level and phrase in _norm(c.get("summary")) for c in cards)
    if kind == "not_used":
        if facts is None:
            raise ValueError(f"{chk!r} needs the facts of the evaluation (Facts.ignored)")
        return any(getattr(ig, "resource", None) == chk[1] for ig in facts.ignored)
    if kind == "no_cards":
        return cards == []
    raise AssertionError("unreachable")  # validate_check knows every kind


def needs_facts(checks: Iterable[Check]) -> bool:
    return any(c[0] == "not_used" for c in checks)


def describe(cards: list[dict[str, Any]], facts: Any) -> str:
    lines = [f"  [{c.get('indicator')}] {c.get('summary')}" for c in cards] or ["  (no cards)"]
    drugs = sorted(offered_drugs(cards))
    lines.append(f"  offers: {', '.join(drugs) if drugs else '(no drug)'}")
    if facts is not None:
        ignored = [f"{ig.resource} ({ig.reason})" for ig in facts.ignored]
        lines.append("  not used: " + ("; ".join(ignored) if ignored else "(none)"))
    return "\n".join(lines)


def assert_expectations(label: str, cards: list[dict[str, Any]], facts: Any, must: Iterable[Check],
                        must_not: Iterable[Check], knowledge: Knowledge | None = None) -> None:
    failures = [f"must {tuple(c)!r}" for c in must if not check(cards, facts, c, knowledge)]
    failures += [f"must not {tuple(c)!r}" for c in must_not if check(cards, facts, c, knowledge)]
    assert not failures, (f"{label}: " + "; ".join(failures) + "\ncard summaries:\n" + describe(cards, facts))


# -- fixtures -----------------------------------------------------------------------------------------

@pytest.fixture()
def engine(knowledge):
    """The engine as `cds-service evaluate` runs it (its settings from the test environment)."""
    e = Engine(Settings.from_env(), knowledge)
    yield e
    e.close()


@pytest.fixture(scope="module")
def templates(knowledge):
    return prefetch_templates(knowledge)


def _schema_valid(validator, cards: list[dict[str, Any]]) -> None:
    errors = list(validator.iter_errors({"cards": cards}))
    assert not errors, errors[0].message


# -- the therapy sample patients ------------------------------------------------------------------------

@pytest.mark.parametrize("case", therapy.CASES, ids=[c.id for c in therapy.CASES])
def test_therapy_case(case, client, response_validator, knowledge, templates, engine):
    today = date.today()
    req = bundle_to_request(therapy.build(case.id, today), None, templates, "patient-view")
    cards = hook_cards(client, response_validator, req)
    facts = engine.call(SERVICE_ID, req, as_of=today).facts if needs_facts([*case.must, *case.must_not]) else None
    assert_expectations(f"{case.id} ({case.description})", cards, facts, case.must, case.must_not, knowledge)


# -- the Synthea patients ------------------------------------------------------------------------------

def _expectations() -> dict[str, Any]:
    path = SYNTHEA / "expectations.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


SYNTHEA_EXPECTATIONS = _expectations()
SYNTHEA_RUNS = [(name, entry) for name, spec in sorted(SYNTHEA_EXPECTATIONS.items()) for entry in spec["expectations"]]


@pytest.mark.parametrize("name,entry", SYNTHEA_RUNS,
                         ids=[f"{name.split('_')[0]}_{name.split('_')[1]}-{e['as_of']}" for name, e in SYNTHEA_RUNS])
def test_synthea_patient(name, entry, client, response_validator, knowledge, templates, engine):
    spec = SYNTHEA_EXPECTATIONS[name]
    bundle = json.loads((SYNTHEA / name).read_text(encoding="utf-8"))
    req = bundle_to_request(bundle, None, templates, "patient-view")
    checks = [*entry["must"], *entry["must_not"]]
    if entry["as_of"] == "today":
        as_of = date.today()
        cards = hook_cards(client, response_validator, req)
        facts = engine.call(SERVICE_ID, req, as_of=as_of).facts if needs_facts(checks) else None
    else:
        as_of = date.fromisoformat(spec["last_record"])
        result = engine.call(SERVICE_ID, req, as_of=as_of)
        cards, facts = result.cards, result.facts
        _schema_valid(response_validator, cards)
    assert_expectations(f"{name} as of {as_of} ({entry['as_of']}): {entry['words']}", cards, facts,
                        entry["must"], entry["must_not"], knowledge)


# -- the cases and files themselves -------------------------------------------------------------------------

def test_case_ids_and_checks_are_well_formed():
    ids = [c.id for c in therapy.CASES]
    assert len(ids) == len(set(ids))
    numbers = [c.number for c in therapy.CASES]
    assert numbers == list(range(1, len(numbers) + 1)), "cases are numbered 01, 02, ... in order"
    for c in therapy.CASES:
        assert re.fullmatch(r"therapy-\d{2}-[a-z0-9]+(-[a-z0-9]+)*", c.id), c.id
        assert c.description and "\n" not in c.description
        assert c.must or c.must_not, c.id
        for chk in [*c.must, *c.must_not]:
            validate_check(chk)


@pytest.mark.parametrize("case", therapy.CASES, ids=[c.id for c in therapy.CASES])
def test_case_bundle_is_one_patients_record(case):
    bundle = therapy.build(case.id, date(2026, 12, 8))
    resources = [e["resource"] for e in bundle["entry"]]
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(full_urls)) == len(full_urls)
    uuid_url = r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    assert all(re.fullmatch(uuid_url, u) for u in full_urls)
    (patient,) = [r for r in resources if r["resourceType"] == "Patient"]
    ids = [(r["resourceType"], r["id"]) for r in resources]
    assert len(set(ids)) == len(ids)
    for r in resources:
        assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", r["id"]), r["id"]
        for key in ("subject", "patient"):
            if key in r:
                assert r[key] == {"reference": f"Patient/{patient['id']}"}
        if r.get("status") != "intended":  # a plan may start later
            for d in _dates(r):
                assert d <= "2026-12-08", (r["resourceType"], r["id"], d)
    # every not_used check names a record of the Bundle
    for chk in [*case.must, *case.must_not]:
        if chk[0] == "not_used":
            assert tuple(chk[1].split("/", 1)) in ids, chk


def _dates(resource: dict[str, Any]) -> Iterable[str]:
    for key in ("effectiveDateTime", "authoredOn", "whenHandedOver", "whenPrepared", "dateAsserted", "onsetDateTime"):
        if isinstance(resource.get(key), str):
            yield resource[key][:10]
    for key in ("effectivePeriod",):
        for v in (resource.get(key) or {}).values():
            yield v[:10]


def test_written_bundles_are_those_of_their_date():
    """fhir_samples/therapy/ holds every case, built for the date of its manifest."""
    manifest = json.loads((WRITTEN / "manifest.json").read_text(encoding="utf-8"))
    as_of = date.fromisoformat(manifest["as_of"])
    assert [c["id"] for c in manifest["cases"]] == [c.id for c in therapy.CASES]
    for case in therapy.CASES:
        written = json.loads((WRITTEN / f"{case.id}.json").read_text(encoding="utf-8"))
        assert written == therapy.build(case.id, as_of), f"fhir_samples/therapy/{case.id}.json is stale: " \
                                                        f"python -m fhir_samples.therapy --as-of {as_of}"


def test_every_synthea_file_has_expectations_for_today_and_the_end_of_its_record():
    files = sorted(p.name for p in SYNTHEA.glob("*.json") if p.name != "expectations.json")
    assert files, "no Synthea patient in fhir_samples/synthea"
    assert sorted(SYNTHEA_EXPECTATIONS) == files
    notice = " ".join((SYNTHEA / "NOTICE.md").read_text(encoding="utf-8").split())
    assert "Apache License 2.0" in notice and "Boston Children's Hospital" in notice
    assert "25ac8089f0464b8673c7669509dc0bb8f4883773" in notice
    for name, spec in SYNTHEA_EXPECTATIONS.items():
        assert name in notice and spec["last_record"] in notice, name
        assert sorted(e["as_of"] for e in spec["expectations"]) == ["end", "today"], name
        date.fromisoformat(spec["last_record"])
        for e in spec["expectations"]:
            assert e["words"].strip()
            for chk in [*e["must"], *e["must_not"]]:
                validate_check(chk)
    assert sum(p.stat().st_size for p in SYNTHEA.iterdir()) < 15_000_000


# -- the vocabulary helper on hand-made cards ------------------------------------------------------------

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def _card(summary: str, indicator: str = "info", detail: str = "", suggestions: list[dict] | None = None) -> dict:
    c: dict[str, Any] = {"summary": summary, "indicator": indicator, "detail": detail,
                         "source": {"label": "test"}}
    if suggestions is not None:
        c["suggestions"] = suggestions
    return c


def _order(code: str | None, text: str, **extra: Any) -> dict:
    concept: dict[str, Any] = {"text": text}
    if code:
        concept["coding"] = [{"system": RXNORM, "code": code}]
    return {"label": f"Order {text}", "actions": [{"type": "create", "description": text, "resource": {
        "resourceType": "MedicationRequest", "status": "draft", "intent": "proposal",
        "medicationCodeableConcept": concept, "subject": {"reference": "Patient/p"}, **extra}}]}


CARDS = [
    _card("Osteoporosis, high fracture risk: T-score −2.7 at the lumbar spine; on alendronate", "info",
          "**Current osteoporosis therapy**\n- alendronate 70 mg weekly, **on hold since** 2026-01-02"),
    _card("Denosumab overdue: last dose 8 months ago", "critical", "Give the dose now; check CTX later.",
          [_order("993456", "denosumab 60 mg"), {"label": "Continue alendronate (already active; no new order)"}]),
    _card("Treatment options", "warning", "",
          [_order(None, "zoledronic acid 5 mg IV yearly"), _order("904431", "alendronate", doNotPerform=True),
           _order(None, "zoledronic acid 4 mg IV (Zometa)"),
           {"label": "Order creatinine", "actions": [{"type": "create", "resource": {
               "resourceType": "ServiceRequest", "code": {"text": "creatinine alendronate"}}}]}]),
]


def test_check_offers(knowledge):
    assert check(CARDS, None, ("offers", "denosumab"), knowledge)
    assert check(CARDS, None, ("offers", "zoledronic_acid"), knowledge), "matched by name in the text"
    assert not check(CARDS, None, ("offers", "alendronate"), knowledge), \
        "neither a 'continue' without an action, a doNotPerform order nor a ServiceRequest offers a drug"
    assert not check(CARDS, None, ("offers", "romosozumab"), knowledge)
    assert offered_drugs(CARDS, knowledge) == {"denosumab", "zoledronic_acid", "zoledronic_acid_oncology"}
    assert not check([], None, ("offers", "denosumab"), knowledge)


def test_check_offers_reads_a_contained_medication(knowledge):
    s = _order(None, "x")
    r = s["actions"][0]["resource"]
    del r["medicationCodeableConcept"]
    r["contained"] = [{"resourceType": "Medication", "id": "m",
                       "code": {"coding": [{"system": RXNORM, "code": "1435117"}]}}]
    r["medicationReference"] = {"reference": "#m"}
    assert check([_card("x", suggestions=[s])], None, ("offers", "teriparatide"), knowledge)


def test_check_says_reads_summary_and_detail_case_insensitively():
    assert check(CARDS, None, ("says", "ON ALENDRONATE"))
    assert check(CARDS, None, ("says", "on hold since")), "Markdown emphasis does not hide a phrase"
    assert check(CARDS, None, ("says", "ctx"))
    assert not check(CARDS, None, ("says", "continue alendronate")), "a suggestion label is not the card's text"
    assert not check(CARDS, None, ("says", "creatinine")), "nor is a suggested resource"
    assert not check([], None, ("says", "on alendronate"))


def test_check_indicator_needs_the_level_and_the_phrase_in_the_summary():
    assert check(CARDS, None, ("indicator", "critical", "DENOSUMAB"))
    assert not check(CARDS, None, ("indicator", "warning", "denosumab")), "another level"
    assert not check(CARDS, None, ("indicator", "critical", "ctx")), "CTX is in the detail only"
    assert check(CARDS, None, ("indicator", "info", "on alendronate"))


def test_check_not_used_reads_the_facts():
    facts = SimpleNamespace(ignored=[SimpleNamespace(resource="MedicationRequest/r1", reason="status is bogus")])
    assert check(CARDS, facts, ("not_used", "MedicationRequest/r1"))
    assert not check(CARDS, facts, ("not_used", "MedicationRequest/r2"))
    assert not check(CARDS, facts, ("not_used", "MedicationStatement/r1"))
    with pytest.raises(ValueError):
        check(CARDS, None, ("not_used", "MedicationRequest/r1"))


def test_check_no_cards():
    assert check([], None, ("no_cards",))
    assert not check(CARDS, None, ("no_cards",))


@pytest.mark.parametrize("bad", [("offer", "alendronate"), ("offers", "alendronic acid"), ("offers",),
                                 ("indicator", "high", "x"), ("indicator", "info"), ("says", ""),
                                 ("not_used", "r1"), ("no_cards", "x"), ()])
def test_check_refuses_what_is_not_in_the_vocabulary(bad):
    with pytest.raises(ValueError):
        check(CARDS, SimpleNamespace(ignored=[]), bad)


def test_failure_message_names_the_check_the_case_and_the_cards():
    with pytest.raises(AssertionError) as info:
        assert_expectations("therapy-99-example", CARDS, None, [("says", "drug holiday")], [("offers", "denosumab")])
    message = str(info.value)
    assert "therapy-99-example" in message
    assert "must ('says', 'drug holiday')" in message and "must not ('offers', 'denosumab')" in message
    assert "[critical] Denosumab overdue: last dose 8 months ago" in message
