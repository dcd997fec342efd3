"""Card summaries are composed to fit and citations are given once per response (issue "First contact").

Summaries: CDS Hooks wants a summary under 140 characters. Every summary is composed to fit, with what
matters first (``cards.fit``); ``cards.shorten`` only cuts as a fallback. The sweep below runs every
sample patient of the repository through the patient-view service, and each osteoporosis drug as a draft
order through order-sign and order-select, and checks the summary of every card as it was composed,
before any cut (``cards.composed_summaries``): none may need the cut.

Citations: each guideline is cited in full once per response, on the first card that uses it; later cards
name it by label and URL, and every card keeps its guideline links.
"""
from __future__ import annotations

import copy
import json
import logging
import re
from datetime import date
from pathlib import Path
from typing import Any, Callable

import pytest

from cds_service import cards as cards_module
from cds_service.cards import GUIDELINES_FIELD, SUMMARY_MAX, card, cite_once, composed_summaries, fit
from cds_service.cards.orders import order_cards
from cds_service.cli import bundle_to_request
from cds_service.clinical.advice import Finding
from cds_service.clinical.facts import FactBuilder
from cds_service.clinical.interpretation import capitalised, interpret
from cds_service.clinical.orders import check_orders, read_drafts
from cds_service.config import Settings
from cds_service.engine import Engine
from cds_service.services.orders import SELECT_ID, SIGN_ID
from cds_service.services.patient_view import SERVICE_ID, prefetch_templates
from fhir_samples import scenarios, therapy
from tests.conftest import hook_cards
from tests.orders.test_orders_http import PRODUCTS, draft

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "fhir_samples"
REVIEW_RECORDS = ROOT / "tests" / "scenarios" / "records"
REVIEW_AS_OF = date(2026, 12, 8)  # the day the review records were written (tests/scenarios/test_review_records.py)
TODAY = date.today()


# -- every sample patient -----------------------------------------------------------------------------------

def _json(path: Path) -> Callable[[], dict[str, Any]]:
    return lambda: json.loads(path.read_text(encoding="utf-8"))


def _samples() -> list[tuple[str, Callable[[], dict[str, Any]], date]]:
    """(id, the Bundle, the day it is evaluated on) for every sample patient of the repository."""
    out: list[tuple[str, Callable[[], dict[str, Any]], date]] = []
    for s in scenarios.SCENARIOS:  # built for today
        out.append((f"scenario-{s.number:02d}", lambda n=s.number: scenarios.build(n, TODAY), TODAY))
    written = json.loads((SAMPLES / "manifest.json").read_text(encoding="utf-8"))  # the scenarios as written
    for s in written["scenarios"]:
        out.append((Path(s["bundle"]).stem, _json(SAMPLES / s["bundle"]), date.fromisoformat(written["as_of"])))
    for c in therapy.CASES:  # built for today
        out.append((c.id, lambda i=c.id: therapy.build(i, TODAY), TODAY))
    written = json.loads((SAMPLES / "therapy" / "manifest.json").read_text(encoding="utf-8"))
    for c in written["cases"]:  # as written, on the day of their manifest
        out.append((f"{c['id']}-written", _json(SAMPLES / "therapy" / f"{c['id']}.json"),
                    date.fromisoformat(written["as_of"])))
    expectations = json.loads((SAMPLES / "synthea" / "expectations.json").read_text(encoding="utf-8"))
    for name, spec in sorted(expectations.items()):  # today and at the end of the record (evaluate --as-of)
        stem = "_".join(name.split("_")[:2])
        out.append((f"{stem}-today", _json(SAMPLES / "synthea" / name), TODAY))
        out.append((f"{stem}-end", _json(SAMPLES / "synthea" / name), date.fromisoformat(spec["last_record"])))
    for path in sorted(REVIEW_RECORDS.glob("*.json")):  # as on the day they were written, and today
        out.append((f"{path.stem[:4]}-review", _json(path), REVIEW_AS_OF))
        out.append((f"{path.stem[:4]}-today", _json(path), TODAY))
    return out


SAMPLE_RUNS = _samples()


@pytest.fixture(scope="module")
def engine(knowledge):
    e = Engine(Settings.from_env(), knowledge)
    yield e
    e.close()


def _order_requests(patient_view: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, service, request): each osteoporosis drug as the one draft order (order-sign, and order-select
    with it selected), and all of them at once (order-sign)."""
    pid = patient_view["context"]["patientId"]
    out = []
    for drug in PRODUCTS:
        for service, hook in ((SIGN_ID, "order-sign"), (SELECT_ID, "order-select")):
            req = copy.deepcopy(patient_view)
            req["hook"] = hook
            req["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                             "entry": [{"resource": draft("d1", drug, pid)}]}
            if hook == "order-select":
                req["context"]["selections"] = ["MedicationRequest/d1"]
            out.append((f"{hook} {drug}", service, req))
    req = copy.deepcopy(patient_view)
    req["hook"] = "order-sign"
    req["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                     "entry": [{"resource": draft(f"d{i}", drug, pid)} for i, drug in enumerate(PRODUCTS)]}
    out.append(("order-sign every drug", SIGN_ID, req))
    return out


def _check_summaries(label: str, composed: list[tuple[str, str]], cards: list[dict[str, Any]]) -> list[str]:
    problems = [f"{label}: {topic} summary of {len(s)} characters needs the cut: {s}"
                for topic, s in composed if len(s) > SUMMARY_MAX]
    assert [s for _, s in composed] == [c["summary"] for c in cards] or problems, \
        f"{label}: the summaries sent are not those composed"
    problems += [f"{label}: cut summary {c['summary']}" for c in cards if c["summary"].endswith("…")]
    return problems


@pytest.mark.parametrize("sample_id,bundle,as_of", SAMPLE_RUNS, ids=[r[0] for r in SAMPLE_RUNS])
def test_every_summary_of_every_sample_is_composed_to_fit(sample_id, bundle, as_of, engine, knowledge,
                                                          response_validator):
    req = bundle_to_request(bundle(), None, prefetch_templates(knowledge), "patient-view")
    problems: list[str] = []
    with composed_summaries() as composed:
        result = engine.call(SERVICE_ID, req, as_of=as_of)
    assert composed or result.facts.patient.deceased, f"{sample_id}: no card was built"
    problems += _check_summaries(f"{sample_id} patient-view", composed, result.cards)
    assert not list(response_validator.iter_errors({"cards": result.cards}))
    for label, service, order_req in _order_requests(req):
        with composed_summaries() as composed:
            result = engine.call(service, order_req, as_of=as_of)
        problems += _check_summaries(f"{sample_id} {label}", composed, result.cards)
        assert not list(response_validator.iter_errors({"cards": result.cards}))
    assert not problems, "\n".join(problems)


def test_the_sweep_holds_every_kind_of_sample():
    ids = [r[0] for r in SAMPLE_RUNS]
    assert len(ids) == len(set(ids))
    assert sum(i.startswith("scenario-") for i in ids) == len(scenarios.SCENARIOS)
    assert sum(i.startswith("therapy-") and not i.endswith("-written") for i in ids) == len(therapy.CASES)
    assert sum(i.endswith("-written") for i in ids) == len(therapy.CASES)
    synthea = [p for p in (SAMPLES / "synthea").glob("*.json") if p.name != "expectations.json"]
    assert sum(i.endswith(("-today", "-end")) and not i.startswith("rv-") for i in ids) == 2 * len(synthea)
    assert sum(i.startswith("rv-") for i in ids) == 2 * len(list(REVIEW_RECORDS.glob("*.json")))


# -- summaries from the knowledge files, whatever the patient --------------------------------------------

ORDER_DRUGS = ("alendronate", "risedronate", "ibandronate", "zoledronic_acid", "denosumab", "teriparatide",
               "abaloparatide", "romosozumab")


def _finding(c: dict[str, Any]) -> Finding:
    return Finding(c["id"], c["message"], c["action"], c["source"], ["a datum (Observation/x)"],
                   list(c.get("blocks", [])), list(c.get("warns", [])), summary=c.get("summary"))


def test_every_contraindication_fits_the_order_card_of_every_drug_it_names(knowledge):
    """The order cards quote a contraindication's message after the drug ("Contraindicated: risedronate —
    …"): each message fits with each drug it blocks or warns about, so no order summary is ever cut (the
    sandbox once showed "…denosumab carries the boxed warning for severe hyp")."""
    fb = FactBuilder(knowledge)
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1950-01-01"}
    facts = fb.build(patient, [], TODAY)
    interp = interpret(facts, knowledge)
    problems = []
    for c in knowledge.treatment["contraindications"]:
        for drug in [d for d in dict.fromkeys(c.get("blocks", []) + c.get("warns", [])) if d in ORDER_DRUGS]:
            drafts = read_drafts({"resourceType": "Bundle", "entry": [{"resource": draft("d1", drug, "p1")}]}
                                 if drug in PRODUCTS else _bundle_of(drug), None, fb, knowledge)
            assert drafts, drug
            issues = [i for i in check_orders(drafts, facts, interp, [_finding(c)], knowledge)
                      if i.kind in ("contraindication", "caution")]
            assert issues, (c["id"], drug)
            with composed_summaries() as composed:
                order_cards(issues, "p1", knowledge)
            problems += [f"{c['id']} × {drug}: {len(s)}: {s}" for _, s in composed if len(s) > SUMMARY_MAX]
    assert not problems, "\n".join(problems)


def _bundle_of(drug: str) -> dict[str, Any]:
    """A draft order named by its drug's label (a drug the order tests' products do not list)."""
    r = {"resourceType": "MedicationRequest", "id": "d1", "status": "draft", "intent": "order",
         "medicationCodeableConcept": {"text": drug.replace("_", " ")}, "subject": {"reference": "Patient/p1"}}
    return {"resourceType": "Bundle", "entry": [{"resource": r}]}


def test_every_safety_title_and_hand_over_summary_fits_on_its_own(knowledge):
    """A safety card's summary is its title, then the data when it fits: the title alone always fits, with
    the longest drug-being-taken head too. A treatment card that hands over says the risk and the reason."""
    t = knowledge.treatment
    titles = [c["message"] for c in t["contraindications"]] + [c["title"] for c in t["secondary_causes"]]
    problems = [x for x in titles if len(capitalised(x)) > SUMMARY_MAX]
    longest = max(len(knowledge.drugs[d].label) for d in ORDER_DRUGS)
    head = "X" * longest + " being taken is contraindicated (correct this before the next dose)"
    assert len(head) <= SUMMARY_MAX - 20, "room for data after the head"
    risks = ("Very high fracture risk", "Osteoporosis", "Low bone mass with high FRAX")
    problems += [c["summary"] for c in t["contraindications"] if c.get("summary")
                 for r in risks if len(f"{r}: {c['summary']}") > SUMMARY_MAX]
    assert not problems, problems


# -- what the sandbox showed, and how a summary gives way ----------------------------------------------------

def test_the_sandbox_risedronate_card_says_the_danger_whole(client, response_validator, scenario_request):
    """Scenario 3 (eGFR 25) with a risedronate draft: the summary names the drug and the danger first and
    ends on a whole word, with the denosumab warning whole."""
    req = copy.deepcopy(scenario_request(3))
    req["hook"] = "order-sign"
    req["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                     "entry": [{"resource": draft("r1", "risedronate", "bone-03")}]}
    found = hook_cards(client, response_validator, req, f"/cds-services/{SIGN_ID}")
    [c] = [c for c in found if c["indicator"] == "critical"]
    assert c["summary"].startswith("Contraindicated: risedronate — eGFR below 30")
    assert c["summary"].endswith("severe hypocalcaemia") and "…" not in c["summary"]


def test_fit_takes_the_fullest_wording_that_fits_and_never_cuts():
    long = "x " * 80
    assert fit("short", "shorter") == "short"
    assert fit(long, "what matters", "less") == "what matters"
    assert fit(long, long + "y") == long + "y", "none fits: the last, which card() then cuts and logs"
    assert fit("a" * SUMMARY_MAX) == "a" * SUMMARY_MAX
    assert fit("a" * 20, "b", limit=10) == "b"


def test_a_cut_is_logged_and_the_composed_summary_is_kept(knowledge, caplog):
    text = "Osteoporosis " + "with a very long and not composed wording " * 4
    with caplog.at_level(logging.WARNING, logger="cds_service.cards"), composed_summaries() as composed:
        c = card(knowledge, topic="safety", indicator="warning", summary=text, detail="d", guidelines=["LABELS"])
    assert composed == [("safety", text)]
    assert c["summary"].endswith("…") and len(c["summary"]) <= SUMMARY_MAX
    assert [r for r in caplog.records if "cut" in r.getMessage() and "safety" in r.getMessage()]
    assert text not in caplog.text, "the log names the card's topic and length, not its text"
    with composed_summaries() as outer:
        with composed_summaries() as inner:
            card(knowledge, topic="safety", indicator="info", summary="inner", detail="d", guidelines=["LABELS"])
        card(knowledge, topic="safety", indicator="info", summary="outer", detail="d", guidelines=["LABELS"])
    assert inner == [("safety", "inner")] and outer == [("safety", "outer")]
    card(knowledge, topic="safety", indicator="info", summary="none", detail="d", guidelines=["LABELS"])
    assert outer == [("safety", "outer")], "outside the context nothing is kept"


def test_a_safety_summary_leaves_out_the_asides_of_a_long_datum_before_the_datum(knowledge):
    """The data that made a rule fire follow the title when they fit: as recorded, else without their
    parentheses (codes, the value as recorded), else not at all (the detail has them); never cut."""
    from cds_service.cards.advice import _data

    evidence = ["creatinine clearance (Cockcroft-Gault, actual body weight), age 65, male: 30.8 mL/min (recorded "
                "creatinine 3.09717 mg/dL, weight 91.4731 kg on 2020-07-07) on 2020-06-04 (Observation/c, Observation/w)"]
    assert _data(evidence) == [evidence[0].rsplit(" (Observation/", 1)[0],
                               "creatinine clearance, age 65, male: 30.8 mL/min on 2020-06-04"]
    assert _data(["Achalasia of cardia (K22.0, Condition/c1)"]) == ["Achalasia of cardia (K22.0)", "Achalasia of cardia"]
    assert _data([]) == []


# -- citations: each guideline in full once per response ---------------------------------------------------

def _citations(k, cards: list[dict[str, Any]]) -> dict[str, list[tuple[int, str]]]:
    """guideline key → [(card index, "full" | "short")] of every card whose Sources paragraph names it."""
    out: dict[str, list[tuple[int, str]]] = {}
    for i, c in enumerate(cards):
        sources = c["detail"].split("\n\n**Sources**\n\n", 1)[1]
        for key, g in k.raw["guidelines"].items():
            if not isinstance(g, dict) or "citation" not in g:
                continue
            if f"- **{g['label']}**: {g['citation']}. <{g['url']}>" in sources:
                out.setdefault(key, []).append((i, "full"))
            elif f"- **{g['label']}** (cited in full on an earlier card) <{g['url']}>" in sources:
                out.setdefault(key, []).append((i, "short"))
    return out


def _check_cited_once(k, cards: list[dict[str, Any]]) -> dict[str, list[tuple[int, str]]]:
    assert cards
    assert len({c["uuid"] for c in cards}) == len(cards)
    assert not [c for c in cards if GUIDELINES_FIELD in c], "the carried guideline keys never leave the service"
    cited = _citations(k, cards)
    assert cited
    for key, uses in cited.items():
        g = k.guideline(key)
        assert uses[0][1] == "full", (key, uses)
        assert [kind for _, kind in uses[1:]] == ["short"] * (len(uses) - 1), (key, uses)
        assert sum(c["detail"].count(g["citation"]) for c in cards) == 1, key
        for i, _ in uses:  # every card that names the guideline still links to it, and opens on its own
            assert {"label": g["label"] + " guideline", "url": g["url"], "type": "absolute"} in cards[i]["links"]
    for i, c in enumerate(cards):  # and names in its Sources every guideline it links to
        linked = {link["url"] for link in c["links"] if link["label"].endswith(" guideline")}
        assert linked == {k.guideline(key)["url"] for key, uses in cited.items() if any(j == i for j, _ in uses)}
    return cited


def test_patient_1_cites_each_guideline_in_full_once(client, response_validator, scenario_request, knowledge):
    found = hook_cards(client, response_validator, scenario_request(1))
    assert len(found) >= 4
    cited = _check_cited_once(knowledge, found)
    assert any(len(uses) >= 3 for uses in cited.values()), "a guideline several cards use: cited in full once"
    first, later = found[0]["detail"], found[-1]["detail"]
    assert "(cited in full on an earlier card)" not in first
    assert "(cited in full on an earlier card)" in later


def test_order_sign_cites_each_guideline_in_full_once(client, response_validator, scenario_request, knowledge):
    req = copy.deepcopy(scenario_request(3))  # eGFR 25: several cards on the labels
    req["hook"] = "order-sign"
    req["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": draft(f"d{i}", drug, "bone-03")} for i, drug in enumerate(("alendronate", "zoledronic_acid",
                                                                                 "denosumab", "risedronate"))]}
    found = hook_cards(client, response_validator, req, f"/cds-services/{SIGN_ID}")
    cited = _check_cited_once(knowledge, found)
    assert len(cited["LABELS"]) >= 3


def test_evaluate_cites_each_guideline_in_full_once(tmp_path, capsys, knowledge):
    from cds_service.cli import main

    path = tmp_path / "patient-1.json"
    path.write_text(json.dumps(scenarios.build(1, TODAY)))
    assert main(["evaluate", str(path)]) == 0
    _check_cited_once(knowledge, json.loads(capsys.readouterr().out)["cards"])


def test_a_card_on_its_own_cites_in_full_and_cite_once_changes_only_repeats(knowledge):
    def make(guidelines: list[str]) -> dict[str, Any]:
        return card(knowledge, topic="safety", indicator="info", summary="s", detail="Body.", guidelines=guidelines)

    alone = make(["BHOF-2022", "LABELS"])
    assert alone[GUIDELINES_FIELD] == ("BHOF-2022", "LABELS")
    full = knowledge.guideline("LABELS")["citation"]
    assert full in alone["detail"] and "earlier card" not in alone["detail"]
    before = {k: v for k, v in alone.items() if k != GUIDELINES_FIELD}
    assert cite_once(knowledge, [alone]) == [before], "one card: only the carried keys go"

    a, b, c = make(["BHOF-2022"]), make(["LABELS", "BHOF-2022"]), make(["LABELS"])
    foreign = {"uuid": "x", "summary": "made elsewhere", "indicator": "info", "detail": "no sources", "source": {}}
    cite_once(knowledge, [a, foreign, b, c])
    assert foreign == {"uuid": "x", "summary": "made elsewhere", "indicator": "info", "detail": "no sources",
                       "source": {}}
    bhof = knowledge.guideline("BHOF-2022")
    assert b["detail"].startswith("Body.\n\n**Sources**\n\n") and full in b["detail"]
    assert f"- **{bhof['label']}** (cited in full on an earlier card) <{bhof['url']}>" in b["detail"]
    assert full not in c["detail"] and "(cited in full on an earlier card)" in c["detail"]
    assert b["detail"].index(knowledge.guideline("LABELS")["label"]) < b["detail"].index(bhof["label"]), \
        "the card's own order of guidelines is kept"
    assert not [x for x in (a, b, c) if GUIDELINES_FIELD in x]


def test_the_cached_parts_stay_cheap(knowledge):
    """The Sources paragraphs are built once per combination of guidelines (README: what the profiles
    showed): a response of many cards formats no citation twice."""
    def response() -> None:
        made = [card(knowledge, topic="safety", indicator="info", summary="s", detail="d", guidelines=g)
                for g in (["BHOF-2022"], ["LABELS", "BHOF-2022"], ["LABELS"])]
        cite_once(knowledge, made)

    response()
    built = cards_module._sources.cache_info().misses
    for _ in range(3):
        response()
    info = cards_module._sources.cache_info()
    assert info.misses == built and info.hits >= 3 * 2, info  # two cards repeat a guideline in each response


def test_the_sources_paragraph_is_the_end_of_every_detail(client, response_validator, scenario_request):
    """What follows the Sources heading is only citations: nothing of the card is hidden below them."""
    for c in hook_cards(client, response_validator, scenario_request(1)):
        tail = c["detail"].split("\n\n**Sources**\n\n", 1)[1]
        assert all(re.fullmatch(r"- \*\*[^*]+\*\*.* <https?://\S+>", line) for line in tail.split("\n")), tail
