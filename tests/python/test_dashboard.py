"""The usage dashboard in headless Chromium, against `tollgate serve`.

infra/test.sh installs Debian's chromium and chromium-driver, starts the gateway and passes its
URL and the demo keys through the environment (as for the OpenAI SDK suite). The test makes
real calls with the OpenAI SDK (a response-cache hit and a failed call among them, so no chart
is empty), opens /dashboard, types the key, and checks that the charts are drawn from that data
with the API's values, that the totals are the API's, and that the latest requests are listed.
A screenshot is kept in target/artifacts/ (dashboard.png; dashboard-<suite>.png for the other
suites). With CI=true a missing Chromium fails the run instead of skipping.
"""

import datetime
import json
import os
import shutil
import tempfile
import time
import urllib.request
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import openai
import pytest

BASE_URL = os.environ["TOLLGATE_BASE_URL"]
ACME_KEY = os.environ["TOLLGATE_ACME_KEY"]
GLOBEX_KEY = os.environ["TOLLGATE_GLOBEX_KEY"]
ROOT = Path(__file__).parents[2]
ARTIFACTS = Path(os.environ.get("TOLLGATE_ARTIFACTS_DIR", ROOT / "target" / "artifacts"))
SUITE = os.environ.get("TOLLGATE_SUITE", "memory")
CHROMIUM = os.environ.get("TOLLGATE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TOLLGATE_CHROMEDRIVER", "/usr/bin/chromedriver")

# The machine notes' flags: headless as root, and no background connections (the network is
# closed; Chromium would otherwise keep trying to reach Google's hosts).
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,2600",
]


def require_chromium():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        message = f"headless Chromium test needs {', '.join(missing)} (infra/test.sh installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="tollgate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def api(path, key):
    req = urllib.request.Request(f"{BASE_URL}{path}", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read())


def chat_calls(key, models):
    """Real calls through the OpenAI SDK; returns their request ids."""
    client = openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=key, max_retries=0)
    ids = []
    for i, model in enumerate(models):
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": f"Dashboard question {i} at {time.time()}"}],
            extra_headers={"Cache-Control": "no-cache"},
        )
        raw.parse()
        ids.append(raw.headers["x-request-id"])
    stream = client.chat.completions.with_raw_response.create(
        model=models[0],
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": f"A streamed dashboard question {time.time()}"}],
        extra_headers={"Cache-Control": "no-cache"},
    )
    for _ in stream.parse():
        pass
    ids.append(stream.headers["x-request-id"])
    return ids


# A reply the simulated provider cannot satisfy: it fills strings with "simulated", which this
# pattern refuses, so the call is metered as a `validation` error (a 422 to the client).
DIGITS_SCHEMA = {
    "type": "object",
    "properties": {"code": {"type": "string", "pattern": "^[0-9]{6}$"}},
    "required": ["code"],
    "additionalProperties": False,
}


def failing_call(key):
    """A call that reaches the provider and fails; returns its request id."""
    client = openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"A six-digit code, please ({time.time()})"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "digits", "schema": DIGITS_SCHEMA},
            },
            extra_headers={"Cache-Control": "no-cache"},
        )
    assert err.value.code == "response_validation_failed"
    return err.value.response.headers["x-request-id"]


def cached_pair(key):
    """The same question twice: the second is answered from the response cache (acme opts
    in). Returns both request ids."""
    client = openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=key, max_retries=0)
    question = f"A dashboard question worth caching {time.time()}"
    ids = []
    for expected in ("miss", "hit"):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
        )
        raw.parse()
        assert raw.headers["x-tollgate-cache"] == expected
        ids.append(raw.headers["x-request-id"])
    return ids


def wait_for_events(key, ids, timeout=10.0):
    """The listing reads an index that DynamoDB updates asynchronously: wait for the ids."""
    deadline = time.time() + timeout
    while True:
        listed = {e["request_id"] for e in api("/v1/usage/events?limit=100", key)["data"]}
        if set(ids) <= listed or time.time() > deadline:
            return listed
        time.sleep(0.2)


def the_dashboards_report(key):
    """The report the page asks for by default: the last 30 days (UTC dates), by day."""
    today = datetime.datetime.now(datetime.timezone.utc).date()
    start = today - datetime.timedelta(days=29)
    return api(
        f"/v1/usage?from={start.isoformat()}&to={today.isoformat()}&granularity=day&group_by=model",
        key,
    )


def show(browser, key):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{BASE_URL}/dashboard")
    field = browser.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    browser.find_element(By.ID, "load").click()
    WebDriverWait(browser, 20).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("ready", "error")
    )
    state = browser.find_element(By.TAG_NAME, "body").get_attribute("data-state")
    assert state == "ready", browser.find_element(By.ID, "status").text


def percent(rate):
    """A rate as the page formats it (`percent` in app.js: `toFixed(1)` rounds the double's
    exact value half up)."""
    exact = Decimal(rate * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)
    return f"{exact} %"


def count(browser, selector):
    from selenium.webdriver.common.by import By

    return len(browser.find_elements(By.CSS_SELECTOR, selector))


def test_the_dashboard_is_served_with_a_strict_content_security_policy():
    with urllib.request.urlopen(f"{BASE_URL}/dashboard", timeout=10) as res:
        csp = res.headers["Content-Security-Policy"]
        assert res.headers["Content-Type"].startswith("text/html")
        page = res.read().decode()
    assert csp.startswith("default-src 'self'")
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "https://" not in page and "http://" not in page


def test_the_dashboard_draws_the_tenants_usage_from_real_traffic(browser):
    from selenium.webdriver.common.by import By

    ids = chat_calls(ACME_KEY, ["gpt-4o-mini", "gpt-4o", "claude-haiku", "gpt-4o-mini", "gpt-4o"])
    ids += cached_pair(ACME_KEY)
    ids.append(failing_call(ACME_KEY))
    globex_ids = chat_calls(GLOBEX_KEY, ["gpt-4o-mini"])
    listed = wait_for_events(ACME_KEY, ids)
    assert set(ids) <= listed
    assert not set(globex_ids) & listed

    show(browser, ACME_KEY)
    # The key went into an Authorization header only: not the URL, not left in the field.
    assert ACME_KEY not in browser.current_url
    assert browser.find_element(By.ID, "api-key").get_attribute("value") == ""
    assert browser.find_element(By.ID, "tenant").text == "Tenant: acme"

    report = the_dashboards_report(ACME_KEY)
    # The total shown is the API's, to the last digit.
    shown = browser.find_element(By.ID, "total-cost").get_attribute("data-value")
    assert Decimal(shown) == Decimal(report["totals"]["cost_usd"])
    assert browser.find_element(By.ID, "total-cost").text == "$" + report["totals"]["cost_usd"]
    assert browser.find_element(By.ID, "total-requests").text == f"{report['totals']['requests']:,}"
    our_cost = sum(
        Decimal(e["cost_usd"])
        for e in api("/v1/usage/events?limit=100", ACME_KEY)["data"]
        if e["request_id"] in ids
    )
    assert Decimal(shown) >= our_cost > 0

    # Charts drawn from the data: one cost bar per day, today's with today's cost; stacked token
    # bars per model; three percentile bars per model; cache-rate points.
    assert count(browser, "#chart-cost svg rect.bar") == len(report["buckets"]) == 30
    today = browser.find_elements(By.CSS_SELECTOR, "#chart-cost svg rect.bar")[-1]
    assert Decimal(today.get_attribute("data-cost")) == Decimal(report["buckets"][-1]["cost_usd"])
    assert float(today.get_attribute("height")) > 0
    models_today = report["buckets"][-1]["models"]
    assert count(browser, "#chart-tokens svg rect.bar") >= len(models_today) >= 3
    assert count(browser, "#chart-latency svg rect.bar") == 3 * len(report["models"])
    # The cache chart: one point per day with requests and series, at the API's rates, plotted
    # at that height on the chart's 0-100 % axis (its grid lines).
    grid = browser.find_elements(By.CSS_SELECTOR, "#chart-cache svg line.grid-line")
    zero = max(float(g.get_attribute("y1")) for g in grid)
    full = min(float(g.get_attribute("y1")) for g in grid)
    for series in ("cache_hit_rate", "cached_token_share"):
        points = browser.find_elements(
            By.CSS_SELECTOR, f"#chart-cache svg circle.point[data-series='{series}']"
        )
        drawn = [(p.get_attribute("data-start"), float(p.get_attribute("data-rate")))
                 for p in points]
        expected = [(b["start"], b[series]) for b in report["buckets"] if b["requests"] > 0]
        assert drawn == expected, series
        for point, (_, rate) in zip(points, expected):
            height = zero - rate * (zero - full)
            assert abs(float(point.get_attribute("cy")) - height) < 0.01, (series, rate)
    assert report["buckets"][-1]["cache_hit_rate"] > 0, "today has a response cache hit"
    totals = report["totals"]
    assert browser.find_element(By.ID, "cache-rate").text == percent(totals["cache_hit_rate"])
    # The errors chart: one bar per error type, with the API's counts; ours is among them.
    bars = browser.find_elements(By.CSS_SELECTOR, "#chart-errors svg rect.bar")
    drawn = {b.get_attribute("data-kind"): int(b.get_attribute("data-count")) for b in bars}
    assert drawn == totals["errors_by_type"]
    assert drawn.get("validation", 0) >= 1
    assert all(float(b.get_attribute("width")) > 0 for b in bars)
    assert browser.find_element(By.ID, "error-rate").text == percent(totals["error_rate"])
    legend = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#chart-tokens .legend li")]
    assert {"gpt-4o-mini", "gpt-4o", "claude-haiku"} <= set(legend)
    assert "12 %" in browser.find_element(By.ID, "latency-note").text

    # The latest requests: ours, newest first, and none of globex's.
    rows = browser.find_elements(By.CSS_SELECTOR, "#events-table tbody tr[data-request-id]")
    shown_ids = [r.get_attribute("data-request-id") for r in rows]
    assert set(ids) <= set(shown_ids)
    assert shown_ids[: len(ids)] == list(reversed(ids))
    assert not set(globex_ids) & set(shown_ids)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    name = "dashboard.png" if SUITE == "memory" else f"dashboard-{SUITE}.png"
    assert browser.save_screenshot(str(ARTIFACTS / name))

    # The page obeyed its own Content-Security-Policy (a violation is a console error).
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

    # Another tenant's key shows that tenant only.
    browser.find_element(By.ID, "forget").click()
    show(browser, GLOBEX_KEY)
    assert browser.find_element(By.ID, "tenant").text == "Tenant: globex"
    rows = browser.find_elements(By.CSS_SELECTOR, "#events-table tbody tr[data-request-id]")
    shown_ids = {r.get_attribute("data-request-id") for r in rows}
    assert set(globex_ids) <= shown_ids
    assert not set(ids) & shown_ids


def test_the_dashboard_ranks_end_users_and_lists_the_one_picked(browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    client = openai.OpenAI(base_url=f"{BASE_URL}/v1", api_key=ACME_KEY, max_retries=0)
    tag = str(int(time.time() * 1000))
    ann, bo = f"dash-ann-{tag}", f"dash-bo-{tag}"
    ids = {ann: [], bo: []}
    for user in (ann, ann, bo):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            user=user,
            messages=[{"role": "user", "content": f"An end user's question {time.time()}"}],
            extra_headers={"Cache-Control": "no-cache"},
        )
        raw.parse()
        ids[user].append(raw.headers["x-request-id"])
    wait_for_events(ACME_KEY, ids[ann] + ids[bo])

    show(browser, ACME_KEY)
    today = datetime.datetime.now(datetime.timezone.utc).date()
    start = today - datetime.timedelta(days=29)
    report = api(f"/v1/usage?group_by=user&limit=20&from={start}&to={today}", ACME_KEY)
    expected = {u["user"]: u["cost_usd"] for u in report["data"]}
    assert {ann, bo} <= set(expected)
    from selenium.common.exceptions import StaleElementReferenceException

    def users_shown(d):
        # The table is redrawn when the page reloads its data: read it whole or not at all.
        try:
            return {
                row.find_elements(By.TAG_NAME, "td")[0].text:
                    row.find_elements(By.TAG_NAME, "td")[4].text
                for row in d.find_elements(By.CSS_SELECTOR, "#users-table tbody tr")
            }
        except StaleElementReferenceException:
            return None

    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: users_shown(d) == expected)

    def pick(d):
        try:
            for b in d.find_elements(By.CSS_SELECTOR, "#users-table button"):
                if b.text == ann:
                    b.click()
                    return True
        except StaleElementReferenceException:
            return False
        return False

    # Picking a user lists that user's requests only.
    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(pick)
    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: {r.get_attribute("data-request-id")
                   for r in d.find_elements(By.CSS_SELECTOR, "#events-table tbody tr[data-request-id]")}
        == set(ids[ann])
    )
    assert ann in browser.find_element(By.ID, "events-user").text
    browser.find_element(By.ID, "all-users").click()
    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: set(ids[bo]) <= {r.get_attribute("data-request-id")
                                   for r in d.find_elements(By.CSS_SELECTOR, "#events-table tbody tr[data-request-id]")}
    )
