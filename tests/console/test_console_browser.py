"""The card console in headless Chromium against the real service process (gunicorn)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CRITICAL_RED = "rgba(198, 40, 40, 1)"  # --critical in console.css
WARNING_AMBER = "rgba(240, 163, 10, 1)"  # --warning
INJECTED = '<img src=x onerror="window.__xss=1">'

pytestmark = pytest.mark.e2e


def _browser_or_skip() -> None:
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    message = "Chromium is not installed (make test installs it with apt when run as root)"
    if os.environ.get("CDS_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture()
def console_service(tmp_path):
    _browser_or_skip()
    from tests.e2e.conftest import start_service, stop

    svc = start_service(tmp_path, {"CDS_AUTH_DISABLED": "true", "CDS_CONSOLE": "true"})
    try:
        yield svc
    finally:
        stop(svc.proc)


@pytest.fixture()
def browser(tmp_path):
    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1360,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
                              options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_console_shows_the_cards_and_records_feedback(console_service, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(console_service.url + "/console/")
    first = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#patients .patient-btn")))
    assert "bone-01" in first.text
    # no empty patient / hookInstance banner before a patient is chosen (the hidden attribute wins over its flex)
    banner = browser.find_element(By.ID, "banner")
    assert not banner.is_displayed() and banner.value_of_css_property("display") == "none"
    first.click()

    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cards article.card")) > 0)
    assert banner.is_displayed() and banner.value_of_css_property("display") == "flex"
    assert browser.find_element(By.ID, "banner-patient").text == "bone-01"
    assert browser.find_element(By.ID, "banner-hook").text
    cards = browser.find_elements(By.CSS_SELECTOR, "#cards article.card")
    critical = [c for c in cards
                if c.find_element(By.CSS_SELECTOR, ".bar").value_of_css_property("background-color") == CRITICAL_RED]
    assert critical, [c.find_element(By.CSS_SELECTOR, ".bar").value_of_css_property("background-color") for c in cards]
    assert any("\u22124.1" in c.find_element(By.CSS_SELECTOR, ".summary").text for c in critical), \
        [c.text[:200] for c in critical]
    # the detail is markdown rendered as HTML, the source a link
    first_critical = critical[0]
    assert first_critical.find_elements(By.CSS_SELECTOR, ".detail strong")
    # each guideline is cited in full once, on the first card that uses it; later cards name it and link to it
    details = [c.find_element(By.CSS_SELECTOR, ".detail").text for c in cards]
    assert "WHO Scientific Group" in details[0] and "cited in full on an earlier card" not in details[0]
    assert sum("WHO Scientific Group" in d for d in details) == 1
    assert all("cited in full on an earlier card" in d for d in details[1:]), details
    assert all(c.find_elements(By.CSS_SELECTOR, ".links a") for c in cards)
    assert first_critical.find_element(By.CSS_SELECTOR, ".meta a").get_attribute("href").startswith("https://")

    # the T-score chart: one series per site, with a legend
    series = browser.find_elements(By.CSS_SELECTOR, "#chart svg g.series")
    assert {s.get_attribute("data-site") for s in series} == {"lumbar spine (L1-L4)", "total hip"}
    legend = " ".join(t.text for t in browser.find_elements(By.CSS_SELECTOR, "#chart svg g.legend-item text"))
    assert "lumbar spine" in legend and "total hip" in legend

    # a suggestion of a critical card: its draft order as FHIR JSON, then Accept
    with_suggestions = [c for c in critical if c.find_elements(By.CSS_SELECTOR, ".suggestion-btn")]
    assert with_suggestions, "no critical card has a suggestion"
    card = with_suggestions[0]
    card.find_element(By.CSS_SELECTOR, ".suggestion-btn").click()
    pre = wait.until(lambda d: card.find_element(By.CSS_SELECTOR, ".suggestion-panel pre.fhir-json"))
    resource = json.loads(pre.text)
    assert resource["resourceType"] == "MedicationRequest" and resource["subject"]["reference"] == "Patient/bone-01"
    card.find_element(By.CSS_SELECTOR, ".suggestion-panel .accept-btn").click()
    wait.until(lambda d: "Feedback" in card.find_element(By.CSS_SELECTOR, ".suggestion-panel .feedback-msg").text
               and "…" not in card.find_element(By.CSS_SELECTOR, ".suggestion-panel .feedback-msg").text)
    assert card.find_element(By.CSS_SELECTOR, ".suggestion-panel .feedback-msg").text == "Feedback recorded"

    # the page ran without a script error or a blocked resource (CSP)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

    browser.execute_script("window.scrollTo(0, 0)")
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1360, min(max(height + 40, 1000), 6000))
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "console.png"
    assert browser.save_screenshot(str(shot))
    shutil.copy(shot, tmp_path / "console.png")
    assert shot.stat().st_size > 10_000


def _bar(card) -> str:
    from selenium.webdriver.common.by import By

    return card.find_element(By.CSS_SELECTOR, ".bar").value_of_css_property("background-color")


def test_a_pasted_bundle_is_shown_as_text_and_a_card_can_be_dismissed(console_service, browser):
    """Text from patient data (here a Condition's display, which the service quotes in a card) is
    shown as text, never run as HTML; the Dismiss control posts an overridden feedback."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from fhir_samples import scenarios

    bundle = scenarios.build(2)
    for e in bundle["entry"]:
        r = e["resource"]
        if r["resourceType"] == "Condition":
            r["code"]["text"] = INJECTED
            for c in r["code"]["coding"]:
                c["display"] = INJECTED
    wait = WebDriverWait(browser, 30)
    browser.get(console_service.url + "/console/")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#patients .patient-btn"))
    browser.execute_script("document.getElementById('bundle').value = arguments[0]", json.dumps(bundle))
    browser.find_element(By.ID, "patient-id").send_keys("bone-02")
    browser.find_element(By.ID, "run-bundle").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cards article.card")) > 0)
    assert browser.find_element(By.ID, "banner-patient").text == "bone-02"
    cards = browser.find_elements(By.CSS_SELECTOR, "#cards article.card")
    # the safety card quotes the condition's text in its summary (its code left out when long) and whole in its detail
    quoting = [c for c in cards if "<img" in c.find_element(By.CSS_SELECTOR, ".summary").text]
    assert quoting, [c.find_element(By.CSS_SELECTOR, ".summary").text for c in cards]
    assert _bar(quoting[0]) == WARNING_AMBER
    assert INJECTED in quoting[0].find_element(By.CSS_SELECTOR, ".detail").text  # markdown kept it as text
    assert browser.find_elements(By.CSS_SELECTOR, "#cards img") == []
    assert browser.execute_script("return window.__xss === undefined")

    card = quoting[0]
    reasons = Select(card.find_element(By.CSS_SELECTOR, ".dismiss select"))
    assert len(reasons.options) > 1
    reasons.select_by_index(1)
    card.find_element(By.CSS_SELECTOR, ".dismiss input[type=text]").send_keys("reviewed in clinic")
    card.find_element(By.CSS_SELECTOR, ".dismiss-btn").click()
    wait.until(lambda d: "dismissed" in card.get_attribute("class"))
    assert card.find_element(By.CSS_SELECTOR, ".dismiss .feedback-msg").text == "Feedback recorded"
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_a_medication_history_shows_its_therapy_timeline(console_service, browser, tmp_path):
    """Rules §6.1 in the console: a denosumab history given dose by dose shows the timeline the rules read
    (state, doses, last dose) above the cards, and the cards say the patient is on denosumab."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(console_service.url + "/console/")
    btn = wait.until(EC.element_to_be_clickable(
        (By.CSS_SELECTOR, '#histories .patient-btn[data-history="therapy-01-denosumab-on-schedule"]')))
    btn.click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cards article.card")) > 0)
    row = browser.find_element(By.CSS_SELECTOR, '#therapy tr[data-drug="denosumab"]')
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[0] == "denosumab (dose by dose)" and cells[1] == "on therapy" and cells[5] == "6", cells
    summaries = [s.text for s in browser.find_elements(By.CSS_SELECTOR, "#cards .summary")]
    assert any("on denosumab" in s for s in summaries), summaries
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1360, min(max(height + 40, 1000), 6000))
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "console-therapy.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
