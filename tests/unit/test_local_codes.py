"""A site's own codes and names (local-codes.yaml in CDS_KNOWLEDGE_DIR) and a site's knowledge files
layered on the packaged ones: loaded, checked, and used by the service and the command line."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service import create_app
from cds_service.clinical.facts import FactBuilder
from cds_service.knowledge import KnowledgeError, load_knowledge, packaged_directory
from cds_service.knowledge.explain import describe, lookup
from fhir_samples import scenarios
from tests.conftest import post_hook

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
LOCAL_SYSTEM = "urn:oid:1.2.840.99999.7.1"  # the site's formulary
LOCAL_CODE = "FORM-0042"
LOCAL_NAME = "Alendromax"
SOURCE = "St Example formulary 2026-01"


def write_local(site: Path, codes: list[dict[str, Any]] | None = None, names: list[dict[str, Any]] | None = None) -> Path:
    doc: dict[str, Any] = {"source": SOURCE}
    if codes is not None:
        doc["codes"] = codes
    if names is not None:
        doc["names"] = names
    path = site / "local-codes.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    """A site folder with only local-codes.yaml: one formulary code and one house name for alendronate."""
    folder = tmp_path / "site"
    folder.mkdir()
    write_local(folder,
                codes=[{"valueset": "alendronate", "system": LOCAL_SYSTEM, "code": LOCAL_CODE,
                        "display": "Alendronate 70 mg weekly (house)"}],
                names=[{"drug": "alendronate", "name": LOCAL_NAME}])
    return folder


# -- loading ------------------------------------------------------------------------------------
def test_local_code_and_name_are_recognised(site):
    k = load_knowledge(site_directory=site)
    assert k.site_directory == str(site)
    assert k.match_drug([{"system": LOCAL_SYSTEM, "code": LOCAL_CODE}], "") == "alendronate"
    assert k.match_drug([], f"{LOCAL_NAME} 70 mg weekly") == "alendronate"
    assert k.match_drug([], LOCAL_NAME.upper()) == "alendronate"
    vs = k.valuesets["alendronate"]
    assert [(c.system, c.code) for c in vs.local] == [(LOCAL_SYSTEM, LOCAL_CODE)]
    assert vs.local[0].sources == (f"local: {SOURCE}",) and f"local: {SOURCE}" in vs.sources
    # the published codes are all still there
    assert len(vs.codes) == len(load_knowledge().valuesets["alendronate"].codes)
    assert k.match_drug([{"system": RXNORM, "code": "904419"}], "") == "alendronate"
    # through the fact builder, as a record carries it
    fb = FactBuilder(k)
    assert fb.match_drug({"coding": [{"system": LOCAL_SYSTEM, "code": LOCAL_CODE}]}) == "alendronate"
    assert fb.match_drug({"text": f"{LOCAL_NAME} 70 mg"}) == "alendronate"


def test_without_the_site_folder_the_local_code_and_name_are_unknown(knowledge):
    assert knowledge.match_drug([{"system": LOCAL_SYSTEM, "code": LOCAL_CODE}], "") is None
    assert knowledge.match_drug([], LOCAL_NAME) is None


def test_local_code_is_only_matched_in_its_own_system(site):
    k = load_knowledge(site_directory=site)
    assert k.match_drug([{"system": RXNORM, "code": LOCAL_CODE}], "") is None
    assert k.match_drug([{"system": LOCAL_SYSTEM, "code": "FORM-0043"}], "") is None


def test_local_codes_are_explained(site):
    k = load_knowledge(site_directory=site)
    row = next(r for r in describe(k) if r["valueset"] == "alendronate")
    assert row["local_codes"] == 1 and row["codes"][LOCAL_SYSTEM] == 1
    assert any(SOURCE in s for s in row["sources"])
    found = lookup(k, LOCAL_CODE)
    assert [(c["valueset"], c["system"]) for c in found["codes"]] == [("alendronate", LOCAL_SYSTEM)]
    assert found["codes"][0]["sources"] == [SOURCE]


@pytest.mark.parametrize("system", ["rxnorm", RXNORM, "urn:oid:2.16.840.1.113883.6.88"],
                         ids=["key", "uri", "oid-alias"])
def test_local_code_in_a_standard_system_matches_records_with_the_canonical_uri(tmp_path, system):
    write_local(tmp_path, codes=[{"valueset": "alendronate", "system": system, "code": "99990001"}])
    k = load_knowledge(site_directory=tmp_path)
    for record_system in (RXNORM, "urn:oid:2.16.840.1.113883.6.88"):
        assert k.match_drug([{"system": record_system, "code": "99990001"}], "") == "alendronate", record_system


def test_local_condition_code(tmp_path):
    write_local(tmp_path, codes=[{"valueset": "fracture_hip", "system": LOCAL_SYSTEM, "code": "HIPFX"}])
    k = load_knowledge(site_directory=tmp_path)
    assert [(m.concept, m.site) for m in k.match_condition([{"system": LOCAL_SYSTEM, "code": "HIPFX"}])] == [
        ("fragility_fracture", "hip")]


def test_local_code_naming_an_unknown_value_set_stops_loading(tmp_path):
    path = write_local(tmp_path, codes=[{"valueset": "alendronate", "system": LOCAL_SYSTEM, "code": "A"},
                                        {"valueset": "alendronat", "system": LOCAL_SYSTEM, "code": "B"}])
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(site_directory=tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "codes/1" in msg and "'alendronat'" in msg and "unknown value set" in msg


def test_local_name_of_an_unknown_drug_stops_loading(tmp_path):
    path = write_local(tmp_path, names=[{"drug": "fosamax", "name": "Fosamax Generic"}])
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(site_directory=tmp_path)
    assert str(path) in str(err.value) and "'fosamax'" in str(err.value)


def test_local_codes_file_that_breaks_the_schema_is_named(tmp_path):
    path = tmp_path / "local-codes.yaml"
    path.write_text(yaml.safe_dump({"source": SOURCE, "codes": [{"valueset": "alendronate", "code": "X"}]}))
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(site_directory=tmp_path)
    assert str(path) in str(err.value) and "system" in str(err.value)


@pytest.mark.parametrize("entry,owner", [
    ({"valueset": "denosumab", "system": "rxnorm", "code": "904419"}, "alendronate"),  # Synthea's alendronic acid
    ({"valueset": "risedronate", "system": RXNORM, "code": "993452"}, "denosumab"),
    ({"valueset": "ibandronate", "system": "ndc", "code": "0006-0270-01"}, "alendronate"),  # 00006027001, written 4-4-2
], ids=["rxnorm-key", "rxnorm-uri", "ndc-other-form"])
def test_local_code_already_owned_by_another_drug_is_refused(tmp_path, entry, owner):
    path = write_local(tmp_path, codes=[entry])
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(site_directory=tmp_path)
    msg = str(err.value)
    assert str(path) in msg and entry["code"] in msg and owner in msg and entry["valueset"] in msg


def test_one_local_code_for_two_drugs_is_refused(tmp_path):
    path = write_local(tmp_path, codes=[{"valueset": "alendronate", "system": LOCAL_SYSTEM, "code": "X1"},
                                        {"valueset": "risedronate", "system": LOCAL_SYSTEM, "code": "X1"}])
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(site_directory=tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "X1" in msg and "alendronate" in msg and "risedronate" in msg


def test_local_code_already_in_its_own_drug_or_a_condition_set_is_accepted(tmp_path):
    write_local(tmp_path, codes=[{"valueset": "alendronate", "system": "rxnorm", "code": "904419"},
                                 {"valueset": "osteoporosis", "system": "icd10cm", "code": "M81.0"}])
    k = load_knowledge(site_directory=tmp_path)
    assert k.match_drug([{"system": RXNORM, "code": "904419"}], "") == "alendronate"
    assert {m.concept for m in k.match_condition([{"system": ICD, "code": "M81.0"}])} == {"osteoporosis"}


def test_site_yaml_replaces_the_packaged_file_of_the_same_name(tmp_path):
    data = yaml.safe_load((packaged_directory() / "thresholds.yaml").read_text(encoding="utf-8"))
    assert data["exam_window_days"]["value"] == 30
    data["exam_window_days"]["value"] = 45
    (tmp_path / "thresholds.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    k = load_knowledge(site_directory=tmp_path)
    assert k.threshold("exam_window_days") == 45
    assert k.directory == str(packaged_directory())  # every other file is the packaged one
    assert k.threshold("t_score_osteoporosis_max") == -2.5
    assert load_knowledge().threshold("exam_window_days") == 30


def test_site_value_set_file_replaces_the_packaged_one(tmp_path):
    (tmp_path / "valuesets").mkdir()
    data = json.loads((packaged_directory() / "valuesets" / "paget.json").read_text(encoding="utf-8"))
    data["codes"] = [["icd10cm", "M88.0", "Osteitis deformans of skull", ["written:clinical-rules-1-no-published-expansion-found-terminology-in"]]]
    (tmp_path / "valuesets" / "paget.json").write_text(json.dumps(data), encoding="utf-8")
    k = load_knowledge(site_directory=tmp_path)
    assert [c.code for c in k.valuesets["paget"].codes] == ["M88.0"]
    assert k.match_condition([{"system": ICD, "code": "M88.1"}]) == []
    assert {m.concept for m in load_knowledge().match_condition([{"system": ICD, "code": "M88.1"}])} == {"paget"}


def test_site_folder_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(site_directory=tmp_path / "nope")
    assert "nope" in str(err.value) and "CDS_KNOWLEDGE_DIR" in str(err.value)


# -- through the service ------------------------------------------------------------------------
def scenario_6_with(request: dict[str, Any], concept: dict[str, Any]) -> dict[str, Any]:
    """Scenario 6 (alendronate for 6 years) whose alendronate order carries only ``concept``."""
    req = copy.deepcopy(request)
    entries = req["prefetch"]["medicationRequests"]["entry"]
    assert len(entries) == 1 and entries[0]["resource"]["medicationCodeableConcept"]["coding"][0]["code"] == "904431"
    entries[0]["resource"]["medicationCodeableConcept"] = concept
    return req


def therapy_cards(client, response_validator, req: dict[str, Any]) -> list[dict[str, Any]]:
    resp = post_hook(client, req)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert not list(response_validator.iter_errors(body))
    return body["cards"]


def on_alendronate(cards: list[dict[str, Any]]) -> bool:
    """The cards treat the patient as on alendronate for 6 years: a drug holiday is considered."""
    mgmt = [c for c in cards if c["source"]["topic"]["code"] == "therapy-management"]
    return any("drug holiday" in c["summary"].lower() for c in mgmt) and any("alendronate" in c["detail"].lower() for c in mgmt)


LOCAL_CONCEPTS = {
    "local-code": {"coding": [{"system": LOCAL_SYSTEM, "code": LOCAL_CODE}]},
    "local-name": {"text": f"{LOCAL_NAME} 70 mg tablet"},
}


@pytest.mark.parametrize("how", ["settings", "env"])
@pytest.mark.parametrize("concept", LOCAL_CONCEPTS.values(), ids=LOCAL_CONCEPTS.keys())
def test_patient_view_reads_the_local_code_as_alendronate(site, scenario_request, response_validator, monkeypatch,
                                                          how, concept):
    req = scenario_6_with(scenario_request(6), concept)
    if how == "env":
        monkeypatch.setenv("CDS_KNOWLEDGE_DIR", str(site))
        app = create_app({"hook_deadline": 5.0})
    else:
        app = create_app({"hook_deadline": 5.0, "knowledge_dir": str(site)})
    cards = therapy_cards(app.test_client(), response_validator, req)
    assert on_alendronate(cards), [c["summary"] for c in cards]


@pytest.mark.parametrize("concept", LOCAL_CONCEPTS.values(), ids=LOCAL_CONCEPTS.keys())
def test_patient_view_without_the_site_folder_does_not_see_the_therapy(client, scenario_request, response_validator,
                                                                       concept):
    cards = therapy_cards(client, response_validator, scenario_6_with(scenario_request(6), concept))
    assert not on_alendronate(cards), [c["summary"] for c in cards]
    # and with the published code, the packaged knowledge does
    assert on_alendronate(therapy_cards(client, response_validator, scenario_request(6)))


def _evaluate(tmp_path: Path, site: Path | None) -> subprocess.CompletedProcess:
    bundle = scenarios.build(6, date.today())
    [mr] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "MedicationRequest"]
    mr["medicationCodeableConcept"] = {"coding": [{"system": LOCAL_SYSTEM, "code": LOCAL_CODE}]}
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle))
    env = {k: v for k, v in os.environ.items() if k != "CDS_KNOWLEDGE_DIR"}
    if site is not None:
        env["CDS_KNOWLEDGE_DIR"] = str(site)
    return subprocess.run([sys.executable, "-m", "cds_service", "evaluate", str(path)], capture_output=True,
                          text=True, timeout=120, env=env)


def test_evaluate_cli_uses_the_site_folder(tmp_path, site):
    out = _evaluate(tmp_path, site)
    assert out.returncode == 0, out.stderr
    assert on_alendronate(json.loads(out.stdout)["cards"])
    out = _evaluate(tmp_path, None)
    assert out.returncode == 0, out.stderr
    assert not on_alendronate(json.loads(out.stdout)["cards"])


def test_evaluate_cli_stops_on_a_broken_local_codes_file(tmp_path):
    site = tmp_path / "broken"
    site.mkdir()
    write_local(site, codes=[{"valueset": "no_such_set", "system": LOCAL_SYSTEM, "code": "X"}])
    out = _evaluate(tmp_path, site)
    assert out.returncode == 2
    assert "local-codes.yaml" in out.stderr and "no_such_set" in out.stderr and "Traceback" not in out.stderr


def test_knowledge_lookup_cli_sees_the_local_code(site, monkeypatch, capsys):
    from cds_service.cli import main

    monkeypatch.setenv("CDS_KNOWLEDGE_DIR", str(site))
    assert main(["knowledge", "lookup", LOCAL_CODE]) == 0
    out = capsys.readouterr().out
    assert "alendronate" in out and SOURCE in out
    monkeypatch.delenv("CDS_KNOWLEDGE_DIR")
    assert main(["knowledge", "lookup", LOCAL_CODE]) == 1
