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
