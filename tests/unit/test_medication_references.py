"""Which Medications the medication records refer to, and which the engine reads (rules §6.1);
and ``bundle_to_request`` putting a record's Medication in the request as a search include."""
from __future__ import annotations

import json
from typing import Any

import pytest

from cds_service.cli import bundle_to_request
from cds_service.fhir.client import bundle_resources
from cds_service.fhir.medications import (
    ANOTHER_SERVER,
    NO_SERVER,
    NOT_A_MEDICATION,
    OVER_THE_CAP,
    URN_NOT_IN_REQUEST,
    medication_references,
    plan_medication_reads,
    referenced_id,
)

BASE = "https://ehr.example.org/fhir/r4"
KEY_OF = {"MedicationRequest": "medicationRequests", "MedicationStatement": "medicationStatements",
          "MedicationAdministration": "medicationAdministrations", "MedicationDispense": "medicationDispenses"}


def rec(ref: str | None, rtype: str = "MedicationRequest", rid: str = "r1", pid: str = "p1") -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": rtype, "id": rid, "status": "active", "subject": {"reference": f"Patient/{pid}"}}
    if ref is not None:
        r["medicationReference"] = {"reference": ref}
    return r


def med(mid: str | None, code: str = "904421") -> dict[str, Any]:
    m: dict[str, Any] = {"resourceType": "Medication",
                         "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code}]}}
    if mid is not None:
        m["id"] = mid
    return m


# ---- medication_references ----

def test_references_of_the_four_record_types_in_order_and_distinct():
    resources = [rec("Medication/a", "MedicationRequest"), rec("Medication/b", "MedicationStatement"),
                 rec("Medication/c", "MedicationAdministration"), rec("Medication/d", "MedicationDispense"),
                 rec("Medication/a", "MedicationDispense", rid="r2")]
    assert medication_references(resources) == ["Medication/a", "Medication/b", "Medication/c", "Medication/d"]


def test_references_of_other_resources_and_odd_shapes_are_not_collected():
    odd = [{"resourceType": "Observation", "medicationReference": {"reference": "Medication/x"}},
           rec(None), {"resourceType": "MedicationRequest", "medicationReference": "Medication/y"},
           {"resourceType": "MedicationRequest", "medicationReference": {"reference": 5}},
           {"resourceType": "MedicationRequest", "medicationReference": {"reference": "  "}},
           {"resourceType": "MedicationRequest", "medicationReference": {"display": "alendronate"}},
           "not a resource"]
    assert medication_references(odd) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("ref,ident", [
    ("Medication/m1", "m1"), ("Medication/m1/_history/2", "m1"), (f"{BASE}/Medication/m-1.a", "m-1.a"),
    ("urn:uuid:7f0c9e2a-0000-4000-8000-000000000001", "7f0c9e2a-0000-4000-8000-000000000001"),
    ("#m1", None), ("Substance/s1", None), ("Medication/..", None), ("Medication/a/b", None),
    ("Medication/m1?x=1", None), ("Medication/" + "x" * 65, None), ("MedicationX/m1", None),
])
def test_referenced_id(ref, ident):
    assert referenced_id(ref) == ident


# ---- plan_medication_reads ----

def test_relative_reference_is_read():
    plan = plan_medication_reads([rec("Medication/m1")], BASE, 50)
    assert plan.reads == ["Medication/m1"] and plan.skipped == {}


def test_versioned_reference_reads_that_version():
    assert plan_medication_reads([rec("Medication/m1/_history/3")], BASE, 50).reads == ["Medication/m1/_history/3"]


@pytest.mark.parametrize("ref", [f"{BASE}/Medication/m1",
                                 "https://EHR.example.org:443/fhir/r4/Medication/m1"])
def test_absolute_reference_under_the_fhir_server_base_is_read_relative_to_it(ref):
    assert plan_medication_reads([rec(ref)], BASE + "/", 50).reads == ["Medication/m1"]


@pytest.mark.parametrize("ref", [
    "https://other.example.org/fhir/r4/Medication/m1",      # another host
    "https://ehr.example.org.evil.test/fhir/r4/Medication/m1",
    "http://ehr.example.org/fhir/r4/Medication/m1",         # another scheme
    "https://ehr.example.org:8443/fhir/r4/Medication/m1",   # another port
    "https://ehr.example.org/fhir/Medication/m1",           # same host, not under the base
    "https://ehr.example.org/fhir/r4x/Medication/m1",       # not on a whole path segment
])
def test_absolute_reference_to_another_server_is_not_read(ref):
    plan = plan_medication_reads([rec(ref)], BASE, 50)
    # logged and audited by its Medication id only, never the URL as the record wrote it
    assert plan.reads == [] and plan.skipped == {"Medication/m1": ANOTHER_SERVER}


def test_contained_reference_is_left_to_the_facts_layer():
    plan = plan_medication_reads([rec("#med1")], BASE, 50)
    assert plan.reads == [] and plan.skipped == {}


def test_urn_uuid_is_never_read():
    ref = "urn:uuid:7f0c9e2a-0000-4000-8000-000000000001"
    plan = plan_medication_reads([rec(ref)], BASE, 50)
    assert plan.reads == [] and plan.skipped == {"Medication/7f0c9e2a-0000-4000-8000-000000000001": URN_NOT_IN_REQUEST}


@pytest.mark.parametrize("ref", ["Medication/m1", "Medication/m1/_history/4", f"{BASE}/Medication/m1",
                                 "https://other.example.org/Medication/m1", "urn:uuid:m1"])
def test_a_medication_among_the_resources_resolves_the_reference(ref):
    plan = plan_medication_reads([rec(ref), med("m1")], BASE, 50)
    assert plan.reads == [] and plan.skipped == {}


def test_a_medication_of_another_id_does_not_resolve_it():
    assert plan_medication_reads([rec("Medication/m1"), med("m2"), med(None)], BASE, 50).reads == ["Medication/m1"]


def test_another_resource_type_with_that_id_does_not_resolve_it():
    other = {"resourceType": "Substance", "id": "m1"}
    assert plan_medication_reads([rec("Medication/m1"), other], BASE, 50).reads == ["Medication/m1"]


def test_each_medication_is_read_once():
    resources = [rec("Medication/m1"), rec("Medication/m1", "MedicationDispense", rid="r2"),
                 rec(f"{BASE}/Medication/m1", "MedicationAdministration", rid="r3")]
    assert plan_medication_reads(resources, BASE, 50).reads == ["Medication/m1"]


def test_the_cap_counts_distinct_reads_and_names_the_rest():
    resources = [rec(f"Medication/m{i}", rid=f"r{i}") for i in range(5)] + [rec("Medication/m0", rid="again")]
    plan = plan_medication_reads(resources, BASE, 2)
    assert plan.reads == ["Medication/m0", "Medication/m1"]
    assert plan.skipped == {f"Medication/m{i}": OVER_THE_CAP for i in (2, 3, 4)}
    assert plan_medication_reads(resources, BASE, 0).reads == []


def test_without_a_fhir_server_nothing_is_read_and_each_is_named():
    resources = [rec("Medication/m1"), rec(f"{BASE}/Medication/m2", rid="r2")]
    plan = plan_medication_reads(resources, None, 50)
    assert plan.reads == []
    assert plan.skipped == {"Medication/m1": NO_SERVER, "Medication/m2": NO_SERVER}


@pytest.mark.parametrize("ref", ["Substance/s1", "Medication/../Patient/p1", "Medication/.", "Medication/m1?_format=xml",
                                 "/Medication/m1", "//other.example.org/Medication/m1", f"{BASE}/Medication/m1?x=1",
                                 f"{BASE}/Medication/m1#frag", "Medication/m%2F1", "med1"])
def test_what_is_not_a_plain_medication_reference_is_not_read(ref):
    plan = plan_medication_reads([rec(ref)], BASE, 50)
    assert plan.reads == []
    [(named, why)] = plan.skipped.items()
    assert why == NOT_A_MEDICATION
    # named by a usable Medication id, else by its place: never the record's text (a host, a query, a path)
    assert named == "Medication/m1" or named.startswith("(reference "), named
    assert "?" not in named and "//" not in named and "#" not in named and ".." not in named


def test_a_reference_is_named_by_its_medication_id_only():
    """The log line and the audit record name a reference by its Medication id: a URL with a token or
    free text in it never reaches them (review: the reference as written reached both)."""
    ref = "https://other.example/Medication/xaccess_tokeneyJhbGciOiJIUzI1NiJ9.SECRETPAYLOAD"
    odd = "JaneDoeDOB1950-02-03MRN4471HIV"
    plan = plan_medication_reads([rec(ref), rec(odd, rid="r2"), rec("https://ehr.example.org/x/" + "a/" * 300
                                                                   + "Medication/m1", rid="r3")], BASE, 50)
    assert sorted(plan.skipped) == ["(reference 1)", "(reference 2)", "Medication/m1"]
    assert set(plan.skipped.values()) == {ANOTHER_SERVER, NOT_A_MEDICATION}


# ---- bundle_to_request: a record's Medication goes in as a search include ----

TEMPLATES = {"patient": "Patient/{{context.patientId}}",
             **{key: rtype + "?patient={{context.patientId}}" for rtype, key in KEY_OF.items()},
             "conditions": "Condition?patient={{context.patientId}}"}


def transaction(*entries: tuple[str | None, dict[str, Any]]) -> dict[str, Any]:
    out = [{"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000aa", "resource": {"resourceType": "Patient", "id": "p1"}}]
    for full_url, r in entries:
        e: dict[str, Any] = {"resource": r}
        if full_url:
            e["fullUrl"] = full_url
        out.append(e)
    return {"resourceType": "Bundle", "type": "transaction", "entry": out}


def included(req: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in req["prefetch"][key]["entry"] if e.get("search", {}).get("mode") == "include"]


def matched(req: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in req["prefetch"][key]["entry"] if e.get("search", {}).get("mode") != "include"]


@pytest.mark.parametrize("rtype", list(KEY_OF))
def test_medication_referenced_by_id_is_included_in_its_records_key(rtype):
    m1 = med("m1")
    req = bundle_to_request(transaction((None, rec("Medication/m1", rtype)), (None, m1), (None, med("unused"))),
                            None, TEMPLATES, "patient-view")
    key = KEY_OF[rtype]
    assert included(req, key) == [m1]
    assert req["prefetch"][key]["total"] == 1 and [r["id"] for r in matched(req, key)] == ["r1"]
    for other in set(KEY_OF.values()) - {key}:
        assert included(req, other) == []
    assert req["prefetch"]["conditions"]["entry"] == []


def test_medication_referenced_by_its_urn_uuid_full_url_goes_in_with_that_id():
    uid = "9a1f0d4e-0000-4000-8000-000000000002"
    m = med("local-17")
    bundle = transaction((None, rec(f"urn:uuid:{uid}")), (f"urn:uuid:{uid}", m))
    req = bundle_to_request(bundle, None, TEMPLATES, "patient-view")
    [copy] = included(req, "medicationRequests")
    assert copy["id"] == uid and copy["code"] == m["code"]
    assert m["id"] == "local-17", "the Bundle itself is not changed"


def test_medication_without_id_referenced_by_urn_uuid_gets_that_id():
    uid = "9a1f0d4e-0000-4000-8000-000000000003"
    req = bundle_to_request(transaction((None, rec(f"urn:uuid:{uid}")), (f"urn:uuid:{uid}", med(None))),
                            None, TEMPLATES, "patient-view")
    assert [m["id"] for m in included(req, "medicationRequests")] == [uid]


def test_medication_referenced_both_ways_is_included_under_both_ids():
    uid = "9a1f0d4e-0000-4000-8000-000000000004"
    bundle = transaction((None, rec(f"urn:uuid:{uid}")), (None, rec("Medication/m1", rid="r2")),
                         (f"urn:uuid:{uid}", med("m1")))
    req = bundle_to_request(bundle, None, TEMPLATES, "patient-view")
    assert sorted(m["id"] for m in included(req, "medicationRequests")) == sorted([uid, "m1"])


def test_a_medication_is_included_once_per_key():
    bundle = transaction((None, rec("Medication/m1")), (None, rec("Medication/m1", rid="r2")),
                         (None, rec("Medication/m1", "MedicationDispense", rid="r3")), (None, med("m1")))
    req = bundle_to_request(bundle, None, TEMPLATES, "patient-view")
    assert [m["id"] for m in included(req, "medicationRequests")] == ["m1"]
    assert [m["id"] for m in included(req, "medicationDispenses")] == ["m1"]


def test_contained_unknown_and_other_patients_references_include_nothing():
    bundle = transaction((None, rec("#c1")), (None, rec("Medication/missing", rid="r2")),
                         (None, rec("Medication/m9", rid="r3", pid="someone-else")), (None, med("m9")))
    req = bundle_to_request(bundle, None, TEMPLATES, "patient-view")
    assert all(included(req, key) == [] for key in KEY_OF.values())


def test_the_included_entries_reach_the_service_as_resources():
    """``bundle_resources`` keeps an include entry: the engine then finds the Medication and reads
    nothing."""
    req = bundle_to_request(transaction((None, rec("Medication/m1")), (None, med("m1"))), None, TEMPLATES,
                            "patient-view")
    found, nxt, notes = bundle_resources(req["prefetch"]["medicationRequests"], "prefetch.medicationRequests")
    assert [r["resourceType"] for r in found] == ["MedicationRequest", "Medication"] and nxt is None and not notes
    assert plan_medication_reads(found, BASE, 50).reads == []


def test_requests_without_medication_references_are_unchanged_by_the_includes():
    bundle = transaction((None, {**rec(None), "medicationCodeableConcept": {"text": "alendronate"}}))
    req = bundle_to_request(bundle, None, TEMPLATES, "patient-view")
    assert req["prefetch"]["medicationRequests"]["entry"] == [{"resource": bundle["entry"][1]["resource"]}]
    json.dumps(req)  # still plain JSON
