"""Loading and checking the knowledge files (a broken file stops start-up, naming the file)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from cds_service.knowledge import FILES, Knowledge, KnowledgeError, load_knowledge

SOURCE_DIR = Path(__file__).resolve().parents[2] / "cds_service" / "knowledge"


@pytest.fixture()
def kdir(tmp_path: Path) -> Path:
    for f in SOURCE_DIR.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    shutil.copytree(SOURCE_DIR / "valuesets", tmp_path / "valuesets")
    return tmp_path


def edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_shipped_knowledge_loads():
    k = load_knowledge()
    assert isinstance(k, Knowledge)
    assert set(k.raw) == set(FILES)
    assert k.dxa_by_code["38265-5"].ambiguous_site is True
    assert k.threshold("t_score_osteoporosis_max") == -2.5
    assert k.threshold("exam_window_days") == 30
    assert "1860480" in k.excluded_drug_codes
    rx = k.system["rxnorm"]
    assert k.lookup(rx, "1860480") == []  # docetaxel is in no value set
    assert [h.valueset for h in k.lookup(rx, "1046398")] == ["denosumab_oncology"]  # Xgeva: its own concept


def test_copy_of_the_knowledge_directory_loads(kdir):
    k = load_knowledge(kdir)
    assert k.directory == str(kdir)
    assert k.threshold("very_high_risk_t_below") == -3.0


def test_every_threshold_used_by_the_rules_has_a_source(knowledge):
    for key, entry in knowledge.raw["thresholds"].items():
        if key == "source":
            continue
        assert isinstance(entry.get("source"), str) and len(entry["source"]) >= 3, key


def test_threshold_change_in_the_files_reaches_the_rules(kdir):
    edit(kdir / "thresholds.yaml", lambda d: d["exam_window_days"].update(value=45))
    assert load_knowledge(kdir).threshold("exam_window_days") == 45


@pytest.mark.parametrize("name", FILES)
def test_missing_file_is_named(kdir, name):
    (kdir / f"{name}.yaml").unlink()
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    assert f"{name}.yaml" in str(err.value)
    assert "missing" in str(err.value)


def test_invalid_yaml_is_named(kdir):
    (kdir / "labs.yaml").write_text("analytes: [unclosed\n  calcium: {label: x\n", encoding="utf-8")
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    assert "labs.yaml" in str(err.value)
    assert "not valid YAML" in str(err.value)


def test_dxa_code_with_unknown_site_is_named(kdir):
    edit(kdir / "dxa.yaml", lambda d: d["codes"].append(
        {"code": "12345-6", "kind": "t_score", "site": "elbow", "source": "test"}))
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    msg = str(err.value)
    assert "dxa.yaml" in msg
    assert "'elbow'" in msg


def test_threshold_without_source_is_named(kdir):
    edit(kdir / "thresholds.yaml", lambda d: d["t_score_osteoporosis_max"].pop("source"))
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    msg = str(err.value)
    assert "thresholds.yaml" in msg
    assert "t_score_osteoporosis_max" in msg
    assert "source" in msg


def test_excluded_code_used_as_therapy_is_named(kdir):
    path = kdir / "valuesets" / "abaloparatide.json"
    vs = json.loads(path.read_text())
    vs["codes"].append(["rxnorm", "1860480", "docetaxel", ["test"]])
    path.write_text(json.dumps(vs))
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    assert "medications.yaml" in str(err.value) and "1860480" in str(err.value)


def test_empty_file_is_named(kdir):
    (kdir / "guidelines.yaml").write_text("", encoding="utf-8")
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    assert "guidelines.yaml" in str(err.value)
