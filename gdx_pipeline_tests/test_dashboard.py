"""The hiring dashboard opened in a real headless Chromium (Debian's `chromium`, driven over the
DevTools protocol): it renders, shows the reference numbers, sorts and filters, survives hostile
names, and makes no network request outside its own file."""

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from gdx_pipeline.core.dashboard import collect_dashboard_data, dashboard_path, render_dashboard, write_dashboard
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine
from gdx_pipeline_tests.test_metrics import REFERENCE_ABOVE_MEAN, REFERENCE_QUARTER_TOTALS, load_rows

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
    "--remote-debugging-port=0",
    "--window-size=1280,2000",
]
# Records Content-Security-Policy violations (a blocked fetch still counts as an attempt).
RECORD_VIOLATIONS = "window.__violations = []; document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.blockedURI));"


def chromium_binary() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        message = "Chromium is not installed (Debian package `chromium`; .ci/run installs it)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return binary


class Browser:
    """Just enough of the DevTools protocol: one page, its network requests, script errors and evaluation."""

    def __init__(self, profile: Path):
        self.process = subprocess.Popen(
            [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("Chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self.socket = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30)
        self.events: list[dict] = []
        self._next_id = 0
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable", session=True)
        self.send("Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_VIOLATIONS}, session=True)

    def send(self, method: str, params: dict | None = None, *, session: bool = False) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        while True:
            reply = json.loads(self.socket.recv(timeout=60))
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for seen in self.events:
                if seen.get("method") == event:
                    self.events.remove(seen)
                    return seen
            self.events.append(json.loads(self.socket.recv(timeout=deadline - time.monotonic())))
        raise TimeoutError(event)

    def open(self, url: str) -> None:
        self.send("Page.navigate", {"url": url}, session=True)
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def script_errors(self) -> list[dict]:
        return [e["params"] for e in self.events if e.get("method") == "Runtime.exceptionThrown"]

    def close(self) -> None:
        try:
            if getattr(self, "socket", None):
                self.send("Browser.close")
                self.socket.close()
        except Exception:  # noqa: BLE001 - the browser may already be gone
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def browser(tmp_path) -> Iterator[Browser]:
    chromium = Browser(tmp_path / "chromium-profile")
    yield chromium
    chromium.close()


def open_offline(browser: Browser, path: Path) -> None:
    """Open the file and assert it asked for nothing but itself."""
    browser.open(path.as_uri())
    assert browser.evaluate("document.documentElement.getAttribute('data-ready')") == "true"
    assert browser.requested_urls() == [path.as_uri()]
    assert browser.evaluate("window.__violations") == []
    assert browser.script_errors() == []


def column(browser: Browser, table: str, index: int) -> list[str]:
    return browser.evaluate(f"[...document.querySelectorAll('#{table} tbody tr:not([hidden])')].map(r => r.cells[{index}].textContent)")


def test_the_dashboard_renders_the_reference_offline_and_sorts(engine, globant_landing, browser):
    ingest_landing(engine, globant_landing, run_id="load")
    path = write_dashboard(engine, globant_landing.reports, 2021)
    assert path == dashboard_path(globant_landing.reports, 2021)
    html = path.read_text()
    assert "http://" not in html and "https://" not in html  # nothing to fetch, not even a font

    open_offline(browser, path)
    assert browser.evaluate("document.getElementById('year').textContent") == "2021"
    assert browser.evaluate("document.getElementById('mean-value').textContent") == "136.92"
    assert browser.evaluate("document.getElementById('quarterly-count').textContent") == "933"
    assert browser.evaluate("document.querySelectorAll('#quarterly-table tbody tr').length") == 933
    totals = browser.evaluate("[...document.querySelectorAll('[data-quarter-total]')].map(e => e.textContent)")
    assert totals == [str(t) for t in REFERENCE_QUARTER_TOTALS]
    rows = browser.evaluate("[...document.querySelectorAll('#above-mean-table tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
    assert rows == [[str(i), name, str(hired)] for i, name, hired in REFERENCE_ABOVE_MEAN]
    assert browser.evaluate("document.getElementById('rejected-total').textContent").startswith("70 row(s) were rejected")
    assert browser.evaluate("document.querySelector('[data-rejected-table=hired_employees]').textContent") == "hired_employees 70"
    assert browser.evaluate("document.getElementById('loaded-at').textContent").endswith("UTC")
    # Both charts drew: a bar per hiring department, and the mean line.
    assert browser.evaluate("document.querySelectorAll('#quarter-chart g').length") == 12
    assert browser.evaluate("document.querySelectorAll('#mean-chart g').length") == 12
    assert browser.evaluate("document.querySelectorAll('#mean-chart .mean-line').length") == 1
    visible = browser.evaluate("document.body.innerText")
    for _, name, hired in REFERENCE_ABOVE_MEAN:
        assert name in visible and str(hired) in visible

    browser.evaluate("document.querySelector('#above-mean-table th:nth-child(3) button').click()")
    assert column(browser, "above-mean-table", 2) == [str(h) for *_, h in sorted(REFERENCE_ABOVE_MEAN, key=lambda r: r[2])]
    browser.evaluate("document.querySelector('#above-mean-table th:nth-child(2) button').click()")
    assert column(browser, "above-mean-table", 1) == sorted(name for _, name, _ in REFERENCE_ABOVE_MEAN)
    browser.evaluate("document.querySelector('#quarterly-table th:nth-child(7) button').click()")
    browser.evaluate("document.querySelector('#quarterly-table th:nth-child(7) button').click()")  # descending
    totals_desc = [int(v) for v in column(browser, "quarterly-table", 6)]
    assert totals_desc == sorted(totals_desc, reverse=True) and len(totals_desc) == 933

    pairs = list(zip(column(browser, "quarterly-table", 0), column(browser, "quarterly-table", 1)))
    browser.evaluate("const f = document.getElementById('quarterly-filter'); f.value = 'Support'; f.dispatchEvent(new Event('input'))")
    shown = list(zip(column(browser, "quarterly-table", 0), column(browser, "quarterly-table", 1)))
    assert shown == [(d, j) for d, j in pairs if "support" in f"{d} {j}".lower()]
    assert {d for d, _ in shown} > {"Support"}  # the department's rows, and jobs named "... Support ..." elsewhere
    assert browser.evaluate("document.getElementById('quarterly-count').textContent") == str(len(shown))
    assert browser.requested_urls() == [path.as_uri()]  # sorting and filtering fetched nothing either


def test_hostile_names_are_shown_as_text_and_run_nothing(engine, folders, browser):
    script = "<script>window.__pwned = 1</script>"
    image = '</script><img src="http://127.0.0.1:9/x.png" onerror="window.__pwned = 2">'
    quoted_image = '"' + image.replace('"', '""') + '"'  # a CSV field with quotes inside
    load_rows(engine, folders, f"1,{script}\n", f"1,{quoted_image}\n", "1,Eve,2021-05-01T00:00:00Z,1,1\n")
    path = write_dashboard(engine, folders.reports, 2021)
    open_offline(browser, path)
    assert browser.evaluate("window.__pwned === undefined")
    assert browser.evaluate("document.querySelectorAll('img').length") == 0
    assert column(browser, "quarterly-table", 0) == [script]
    assert column(browser, "quarterly-table", 1) == [image]


def test_a_year_without_hires_renders_an_empty_dashboard(engine, globant_landing, browser):
    ingest_landing(engine, globant_landing, run_id="load")
    path = write_dashboard(engine, globant_landing.reports, 1999)
    open_offline(browser, path)
    text = browser.evaluate("document.body.innerText")
    assert "No hires in 1999" in text
    assert browser.evaluate("document.getElementById('quarterly-count').textContent") == "0"
    assert browser.evaluate("document.querySelectorAll('svg').length") == 0
    # Sorting an empty table is harmless.
    browser.evaluate("document.querySelector('#quarterly-table th button').click()")
    assert browser.script_errors() == []


def test_rendering_is_a_pure_function_of_the_data(sqlite_url):
    engine = create_warehouse_engine(sqlite_url)
    create_schema(engine)
    data = collect_dashboard_data(engine, 2021)
    assert data.loaded_at is None and data.hires == 0
    first, second = render_dashboard(data), render_dashboard(data)
    assert first == second
    assert "never (the warehouse is empty)" in first


def test_the_request_log_catches_a_page_that_fetches(tmp_path, browser):
    """The offline assertions are not vacuous: a page that loads a stylesheet from a CDN is caught."""
    page = tmp_path / "fetches.html"
    page.write_text('<!DOCTYPE html><link rel="stylesheet" href="https://cdn.example.invalid/x.css"><p>hi</p>')
    browser.open(page.as_uri())
    assert "https://cdn.example.invalid/x.css" in browser.requested_urls()
