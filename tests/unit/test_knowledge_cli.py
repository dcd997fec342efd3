"""`cds-service knowledge`: the value sets with their counts and sources, and where a code or name falls."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cds_service.cli import main


@pytest.fixture(autouse=True)
def _packaged_knowledge(monkeypatch):
    monkeypatch.delenv("CDS_KNOWLEDGE_DIR", raising=False)


def test_lookup_of_synthea_alendronic_acid(capsys):
    assert main(["knowledge", "lookup", "904419"]) == 0
    out = capsys.readouterr().out
    assert "904419" in out and "Alendronic acid 10 MG Oral Tablet" in out
    assert "in value set alendronate, read as drug alendronate (oral_bisphosphonate)" in out


def test_lookup_through_the_installed_command():
    exe = shutil.which("cds-service", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the cds-service script is not installed next to this Python (pip install -e .)")
    out = subprocess.run([exe, "knowledge", "lookup", "904419"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "alendronate" in out.stdout
    out = subprocess.run([exe, "knowledge", "lookup", "no-such-code-42"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "is in no value set" in out.stdout and "Traceback" not in out.stderr


def test_lookup_as_json(capsys):
    assert main(["knowledge", "lookup", "904419", "--format", "json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [(c["valueset"], c["via"], c["confirmed"]) for c in found["codes"]] == [("alendronate", "code", True)]


@pytest.mark.parametrize("query", ["no-such-code-42", "M8", "99999999"])
def test_lookup_of_a_nonsense_code_exits_1(capsys, query):
    assert main(["knowledge", "lookup", query]) == 1
    assert "is in no value set and names no drug" in capsys.readouterr().out


def test_lookup_of_a_relevant_name_says_it_is_not_used(capsys):
    assert main(["knowledge", "lookup", "pamidronate"]) == 1
    assert "listed as not used" in capsys.readouterr().out


def test_lookup_of_a_name_and_of_an_icd_child(capsys):
    assert main(["knowledge", "lookup", "Xgeva 120 mg"]) == 0
    assert "drug denosumab_oncology" in capsys.readouterr().out
    assert main(["knowledge", "lookup", "m80.08xa", "--system", "icd10cm"]) == 0
    out = capsys.readouterr().out
    assert "condition osteoporosis" in out and "condition fragility_fracture (site vertebral)" in out


@pytest.mark.parametrize("argv", [["knowledge", "list", "--format", "json"], ["knowledge", "--format", "json", "list"],
                                  ["knowledge", "--format", "json"]])
def test_list_as_json(capsys, knowledge, argv):
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["valueset"] for r in rows) == sorted(knowledge.valuesets)
    for r in rows:
        assert r["codes"] and all(isinstance(n, int) and n > 0 for n in r["codes"].values()), r["valueset"]
        assert sum(r["codes"].values()) == len(knowledge.valuesets[r["valueset"]].codes)
        assert r["sources"], r["valueset"]
    by_name = {r["valueset"]: r for r in rows}
    assert by_name["alendronate"]["read_as"] == ["drug alendronate (oral_bisphosphonate)"]
    assert by_name["fracture_hip"]["read_as"] == ["condition fragility_fracture (site hip)"]


def test_list_as_a_table(capsys):
    assert main(["knowledge", "list"]) == 0
    out = capsys.readouterr().out
    assert "alendronate: " in out and "read as drug alendronate (oral_bisphosphonate)" in out
    assert "source: RxNorm Current Prescribable Content 2025-10-06" in out
