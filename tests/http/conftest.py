"""The fake FHIR server of the HTTP fault tests: example patient 1's data behind pytest-httpserver."""
from __future__ import annotations

import pytest

from tests.http.fake_fhir import FakeFhir


@pytest.fixture()
def fhir(httpserver, scenario_request):
    base = scenario_request(1)
    fake = FakeFhir(httpserver, base["prefetch"], base["context"]["patientId"])
    fake.request = base
    yield fake
    fake.finish()
    httpserver.clear()
