"""Constants shared by the unit tests' FHIR resource builders."""
from __future__ import annotations

from datetime import date

AS_OF = date(2026, 6, 1)
PID = "p1"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"


# -- the words of a therapy-management finding (rules §6.1: the card builders word them) -----------------
def _knowledge():
    from functools import lru_cache

    from cds_service.knowledge import load_knowledge

    global _KNOWLEDGE_ONCE
    try:
        return _KNOWLEDGE_ONCE()
    except NameError:
        _KNOWLEDGE_ONCE = lru_cache(maxsize=1)(load_knowledge)
        return _KNOWLEDGE_ONCE()


def summary_of(m) -> str:
    """A Management's summary as the card shows it: worded by cards/therapy.py for a §6.1 finding."""
    from cds_service.cards.therapy import words

    return words(m.finding, _knowledge())[0]


def lines_of(m) -> list[str]:
    from cds_service.cards.therapy import words

    return words(m.finding, _knowledge())[1]
