"""The knowledge contract: every key the rules read is there and of its type, or start-up stops
naming the file and the place (issue 13, item 5)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.knowledge import KnowledgeError, load_knowledge
from cds_service.knowledge.contract import CONTRACT, GUIDELINES, MANAGEMENT, NUMBERS, THRESHOLDS, TOPICS

PACKAGE = Path(__file__).resolve().parents[2] / "cds_service"
SOURCE_DIR = PACKAGE / "knowledge"


@pytest.fixture()
def kdir(tmp_path: Path) -> Path:
    for f in SOURCE_DIR.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    if (SOURCE_DIR / "valuesets").is_dir():
        shutil.copytree(SOURCE_DIR / "valuesets", tmp_path / "valuesets")
    return tmp_path


def edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def shipped(name: str) -> Any:
    return yaml.safe_load((SOURCE_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def concrete(node: Any, segments: list[str]) -> list[str] | None:
    """The first path in ``node`` that the place ``segments`` names ("*": any key or item; an
    optional key must be present), or None."""
    if not segments:
        return []
    seg, rest = segments[0], segments[1:]
    if seg == "*":
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, value in items:
            below = concrete(value, rest)
            if below is not None:
                return [str(key)] + below
        return None
    key = seg.removesuffix("?")
    if isinstance(node, dict) and key in node:
        below = concrete(node[key], rest)
        return None if below is None else [key] + below
    return None


def get(node: Any, path: list[str]) -> Any:
    for p in path:
        node = node[int(p)] if isinstance(node, list) else node[p]
    return node


def deletions() -> list[tuple[str, str]]:
    """(file, path) for every key a declared place goes through that must be there: each place, and
    each mapping key on the way to it (not an item of a list or an optional key)."""
    out: dict[tuple[str, str], None] = {}
    for name, places in CONTRACT.items():
        data = shipped(name)
        for place in places:
            segs = place.split("/")
            for i, seg in enumerate(segs):
                if seg == "*" or seg.endswith("?"):
                    continue
                path = concrete(data, segs[: i + 1])
                if path is not None:
                    out[(name, "/".join(path))] = None
    return list(out)


@pytest.mark.parametrize(("name", "path"), deletions(), ids=[f"{n}.yaml:{p}" for n, p in deletions()])
def test_a_missing_key_the_rules_read_stops_loading(kdir, name, path):
    *parent, key = path.split("/")
    edit(kdir / f"{name}.yaml", lambda d: get(d, parent).pop(key))
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    msg = str(err.value)
    assert str(kdir / f"{name}.yaml") in msg
    assert key in msg and "/".join(parent) in msg


def test_missing_threshold_message(kdir):
    edit(kdir / "thresholds.yaml", lambda d: d.pop("exam_window_days"))
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    assert str(err.value) == (f"knowledge file {kdir / 'thresholds.yaml'}: at exam_window_days: "
                              "missing (the rules read it as an integer)")


def test_text_for_a_number_threshold_is_refused(kdir):
    edit(kdir / "thresholds.yaml", lambda d: d["t_score_osteoporosis_max"].update(value="thirty"))
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    assert str(err.value) == (f"knowledge file {kdir / 'thresholds.yaml'}: at t_score_osteoporosis_max/value: "
                              "expected a number, got 'thirty'")


@pytest.mark.parametrize("value", [True, 30.0, "30"])
def test_bool_float_or_text_for_an_integer_is_refused(kdir, value):
    edit(kdir / "thresholds.yaml", lambda d: d["exam_window_days"].update(value=value))
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    msg = str(err.value)
    assert "thresholds.yaml" in msg and "at exam_window_days/value: expected an integer" in msg


def test_bool_for_a_number_is_refused(kdir):
    edit(kdir / "treatment.yaml", lambda d: d["numbers"]["albumin_factor"].update(value=True))
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    assert "treatment.yaml" in str(err.value) and "at numbers/albumin_factor/value: expected a number" in str(err.value)


def test_an_integer_is_a_number(kdir):
    edit(kdir / "thresholds.yaml", lambda d: d["t_score_osteoporosis_max"].update(value=-3))
    assert load_knowledge(kdir).threshold("t_score_osteoporosis_max") == -3


def test_wrong_item_in_a_list_is_named(kdir):
    edit(kdir / "thresholds.yaml", lambda d: d["observation_status_counted"]["value"].append(5))
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    msg = str(err.value)
    assert "thresholds.yaml" in msg and "at observation_status_counted/value/3:" in msg and "got 5" in msg


def test_wrong_type_in_a_regimen_is_named(kdir):
    edit(kdir / "treatment.yaml", lambda d: d["regimens"]["denosumab"]["timing"].update(frequency="once"))
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    assert "treatment.yaml: at regimens/denosumab/timing/frequency: expected an integer, got 'once'" in str(err.value)


def test_number_named_by_a_rule_must_be_a_number(kdir):
    edit(kdir / "treatment.yaml", lambda d: d["numbers"]["egfr_no_alendronate_zoledronate"].update(value="35"))
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    assert "treatment.yaml: at numbers/egfr_no_alendronate_zoledronate/value: expected a number, got '35'" \
        in str(err.value)


@pytest.mark.parametrize("key", ["vfa_age_men", "mi_stroke_months"])  # read by name, and through a `when`
def test_number_without_a_source_is_refused(kdir, key):
    edit(kdir / "treatment.yaml", lambda d: d["numbers"][key].pop("source"))
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    msg = str(err.value)
    assert "treatment.yaml" in msg and key in msg and "source" in msg


@pytest.mark.parametrize("place", ["repeat_dxa", "vfa", "labs_for_workup/0"])
def test_order_without_a_source_is_refused(kdir, place):
    edit(kdir / "treatment.yaml", lambda d: get(d, place.split("/")).pop("source"))
    with pytest.raises(KnowledgeError) as err:
        load_knowledge(kdir)
    assert f"treatment.yaml: at {place}/source: missing" in str(err.value)


def test_shipped_knowledge_loads():
    k = load_knowledge()
    for key in THRESHOLDS:
        k.threshold(key)
    for key in NUMBERS:
        k.number(key)
    for key in MANAGEMENT:
        k.management(key)
    for key in GUIDELINES:
        k.guideline(key)


def test_copy_of_the_knowledge_folder_loads(kdir):
    assert load_knowledge(kdir).directory == str(kdir)


# -- the declared list cannot fall behind the code, nor name keys the files do not have ----------

ACCESSORS = {"threshold": ("thresholds", "{}/value"), "number": ("treatment", "numbers/{}/value"),
             "management": ("treatment", "management/{}/value"), "guideline": ("guidelines", "{}/label")}
CALL = re.compile(r"\.(threshold|number|management|guideline)\(\s*['\"]([^'\"]+)['\"]\s*\)")
ALIAS = re.compile(r"^\s*(\w+)\s*=\s*[\w.]+\.(threshold|number|management|guideline)\s*$", re.M)
SUBSCRIPT = r"((?:\[\s*['\"][^'\"]+['\"]\s*\])+)"
LOOKUP = re.compile(r"\.(treatment|cards)" + SUBSCRIPT + r"|\.raw\[\s*['\"](\w+)['\"]\s*\]" + SUBSCRIPT)


def sources() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in sorted(PACKAGE.rglob("*.py"))}


def accessor_keys() -> set[tuple[str, str]]:
    """(accessor, key) for every literal call, also through a local alias such as ``n = k.number``."""
    found = set()
    for text in sources().values():
        found |= {(m[1], m[2]) for m in CALL.finditer(text)}
        for alias, accessor in ALIAS.findall(text):
            found |= {(accessor, key) for key in re.findall(rf"\b{alias}\(\s*['\"]([^'\"]+)['\"]\s*\)", text)}
    return found


def test_every_key_the_code_reads_by_accessor_is_declared():
    found = accessor_keys()
    assert len(found) > 30  # the scan still finds the calls
    missing = [f"{accessor}({key!r})" for accessor, key in sorted(found)
               if ACCESSORS[accessor][1].format(key) not in CONTRACT[ACCESSORS[accessor][0]]]
    assert not missing, f"read by the code but not declared in knowledge/contract.py: {missing}"


def _declared_below(name: str, path: list[str]) -> bool:
    """Some declared place of ``name`` starts with ``path`` ("*" matching any key)."""
    for place in CONTRACT[name]:
        segs = [s.removesuffix("?") for s in place.split("/")]
        if len(segs) >= len(path) and all(s in ("*", p) for s, p in zip(segs, path)):
            return True
    return False


def test_every_fixed_lookup_the_code_makes_is_declared():
    """k.treatment[...], k.cards[...] and k.raw["file"][...] with literal keys, outside the
    knowledge package (which reads the files to build its own views)."""
    missing, seen = [], 0
    for path, text in sources().items():
        if path.parent == SOURCE_DIR:
            continue
        for m in LOOKUP.finditer(text):
            name, keys = (m[1], m[2]) if m[1] else (m[3], m[4])
            if name not in CONTRACT:
                continue
            seen += 1
            segs = re.findall(r"['\"]([^'\"]+)['\"]", keys)
            if not _declared_below(name, segs):
                missing.append(f"{path.relative_to(PACKAGE)}: {name}.yaml {'/'.join(segs)}")
    assert seen > 20
    assert not missing, f"read by the code but not declared in knowledge/contract.py: {missing}"


def test_every_guideline_and_topic_the_code_names_is_declared():
    from cds_service.cards.orders import TOPIC

    guidelines = set(shipped("guidelines"))
    named, topics = set(), set(TOPIC.values())
    for path, text in sources().items():
        if path.parent == SOURCE_DIR:
            continue
        named |= set(re.findall(r"['\"]([A-Z][\w-]+)['\"]", text)) & guidelines
        topics |= set(re.findall(r"\btopic=['\"]([\w-]+)['\"]", text))
    assert named and topics
    assert named <= set(GUIDELINES), named - set(GUIDELINES)
    assert topics <= set(TOPICS), topics - set(TOPICS)


@pytest.mark.parametrize(("name", "place"), [(n, p) for n, ps in CONTRACT.items() for p in ps])
def test_every_declared_place_is_in_the_shipped_files(name, place):
    data = shipped(name)
    segs = place.split("/")
    if concrete(data, segs) is not None:
        return
    # only a place below a list or mapping that is empty in the shipped file
    assert "*" in segs, f"{name}.yaml has no {place}"
    prefix = concrete(data, segs[: segs.index("*")])
    assert prefix is not None and get(data, prefix) in ([], {}), f"{name}.yaml has no {place}"
