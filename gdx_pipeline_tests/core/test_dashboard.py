"""The hiring dashboard opened in a real headless Chromium (Debian's `chromium`, driven over the
DevTools protocol): one file for every year, whose year menu changes the numbers shown to what
plain Python recomputes from the CSV rows; the year before beside each year, departments ranked
by hires, rejected rows labelled as all-time, the files that fed it; sorting, filtering, hostile
names shown as text, nothing requested outside its own file, and every year readable without
JavaScript."""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from websockets.sync.client import connect

from gdx_pipeline.core.dashboard import DASHBOARD_FILE, collect_dashboard_data, dashboard_path, render_dashboard, write_dashboard
from gdx_pipeline.core.ingestion import ingest_landing
from gdx_pipeline.core.warehouse import create_schema, create_warehouse_engine
from gdx_pipeline_tests.paths import GLOBANT_DATA
from gdx_pipeline_tests.published_metrics import REFERENCE_ABOVE_MEAN, REFERENCE_QUARTER_TOTALS

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
RECORD_VIOLATIONS = (
    "window.__violations = []; document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.blockedURI));"
)


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


@dataclass
class YearOracle:
    """One year's figures recomputed in plain Python from the CSV rows the load accepted."""

    quarters: list[int]
    hires_by_department: dict[int, int]
    names: dict[int, str]

    @property
    def hires(self) -> int:
        return sum(self.quarters)

    @property
    def mean(self) -> float | None:
        return self.hires / len(self.hires_by_department) if self.hires_by_department else None

    def above_mean(self) -> list[tuple[int, str, int]]:
        above = [(i, self.names[i], n) for i, n in self.hires_by_department.items() if n > self.mean]
        return sorted(above, key=lambda r: (-r[2], r[1], r[0]))

    def ranked(self) -> list[tuple[int, int]]:
        """(department id, hires), most hires first, ties by name then id."""
        return sorted(self.hires_by_department.items(), key=lambda r: (-r[1], self.names[r[0]], r[0]))


def oracle_from_csv(folder: Path) -> dict[int, YearOracle]:
    """Every year's figures from the real files, read with Python's csv module: a row with a blank
    field is what the load rejects (the published 1,929 / 70)."""
    with open(folder / "departments.csv", newline="", encoding="utf-8") as stream:
        names = {int(i): name for i, name in csv.reader(stream)}
    with open(folder / "hired_employees.csv", newline="", encoding="utf-8") as stream:
        rows = [row for row in csv.reader(stream) if all(field.strip() for field in row)]
    assert len(rows) == 1929
    quarters: dict[int, Counter] = {}
    departments: dict[int, Counter] = {}
    for _, _, when, department_id, _ in rows:
        hired = datetime.fromisoformat(when)
        quarters.setdefault(hired.year, Counter())[(hired.month - 1) // 3] += 1
        departments.setdefault(hired.year, Counter())[int(department_id)] += 1
    return {year: YearOracle([quarters[year][q] for q in range(4)], dict(departments[year]), names) for year in quarters}


def open_offline(browser: Browser, path: Path, fragment: str = "") -> None:
    """Open the file and assert it asked for nothing but itself."""
    browser.open(path.as_uri() + fragment)
    assert browser.evaluate("document.documentElement.getAttribute('data-ready')") == "true"
    assert browser.requested_urls() == [path.as_uri()]
    assert browser.evaluate("window.__violations") == []
    assert browser.script_errors() == []


SHOWN = "document.querySelector('.year-panel:not([hidden])')"


def shown_year(browser: Browser) -> int:
    panels = browser.evaluate("[...document.querySelectorAll('.year-panel')].filter(p => !p.hidden).map(p => p.dataset.year)")
    assert len(panels) == 1, panels
    assert browser.evaluate("document.getElementById('year').textContent") == panels[0]
    return int(panels[0])


def shown_figures(browser: Browser) -> dict:
    """What the reader sees for the year shown, as numbers."""
    return browser.evaluate(
        f"""(() => {{
        const panel = {SHOWN};
        const number = text => Number(text.replace(/,/g, ''));
        return {{
          hires: number(panel.querySelector('[data-card=hires] .card-value').textContent),
          quarters: [...panel.querySelectorAll('[data-quarter-total]')].map(e => number(e.textContent)),
          previous_quarters: [...panel.querySelectorAll('[data-previous-quarter-total]')].map(e => e.textContent),
          mean: panel.querySelector('.mean-value') ? panel.querySelector('.mean-value').textContent : null,
          above_mean: [...panel.querySelectorAll('table[id^=above-mean] tbody tr:not(.empty)')]
            .map(r => [...r.cells].map(c => c.textContent)),
          bars: [...panel.querySelectorAll('g.department-bar')]
            .map(g => [Number(g.dataset.departmentId), Number(g.dataset.hired), Number(g.dataset.hiredBefore)]),
          visible_text: panel.innerText,
        }};
        }})()"""
    )


def assert_shows(browser: Browser, oracle: dict[int, YearOracle], year: int) -> None:
    expected, before = oracle[year], oracle.get(year - 1)
    figures = shown_figures(browser)
    assert shown_year(browser) == year
    assert figures["hires"] == expected.hires
    assert figures["quarters"] == expected.quarters
    assert figures["previous_quarters"] == [f"({year - 1}: {n:,})" for n in (before.quarters if before else [0] * 4)]
    assert figures["mean"] == f"{expected.mean:.2f}"
    assert figures["above_mean"] == [[str(i), name, str(n)] for i, name, n in expected.above_mean()]
    # Bars sorted by hires, each with the same department's hires the year before beside it.
    assert [(i, n) for i, n, _ in figures["bars"]] == expected.ranked()
    assert [b for *_, b in figures["bars"]] == [before.hires_by_department.get(i, 0) if before else 0 for i, _ in expected.ranked()]


def choose_year(browser: Browser, year: int) -> None:
    browser.evaluate(f"{{ const s = document.getElementById('year-select'); s.value = '{year}'; s.dispatchEvent(new Event('change')); }}")


def column(browser: Browser, table: str, index: int) -> list[str]:
    return browser.evaluate(f"[...document.querySelectorAll('#{table} tbody tr:not([hidden])')].map(r => r.cells[{index}].textContent)")


def test_one_file_shows_every_year_and_the_year_menu_changes_the_numbers(engine, globant_landing, browser):
    ingest_landing(engine, globant_landing, run_id="load")
    oracle = oracle_from_csv(GLOBANT_DATA)
    assert sorted(oracle) == [2021, 2022]
    path = write_dashboard(engine, globant_landing.reports)
    assert path == dashboard_path(globant_landing.reports) and path.name == DASHBOARD_FILE
    html = path.read_text()
    assert "http://" not in html and "https://" not in html  # nothing to fetch, not even a font

    open_offline(browser, path)
    assert browser.evaluate("[...document.querySelectorAll('#year-select option')].map(o => o.value)") == ["2022", "2021"]
    assert_shows(browser, oracle, 2022)  # the latest year first, 2021 beside it
    assert browser.evaluate("document.querySelector('#years-table tr.selected').dataset.year") == "2022"

    choose_year(browser, 2021)
    assert_shows(browser, oracle, 2021)  # 2020 had no hires: zeros beside it
    assert [int(n) for n in shown_figures(browser)["quarters"]] == REFERENCE_QUARTER_TOTALS
    assert browser.evaluate("location.hash") == "#2021"
    assert browser.evaluate("document.title") == "Hiring dashboard 2021"
    assert browser.evaluate("document.querySelector('#years-table tr.selected').dataset.year") == "2021"
    assert browser.evaluate("document.querySelector('#years-chart g.year-group.selected').dataset.year") == "2021"

    # Hires per quarter across years, as the table under the chart says.
    rows = browser.evaluate(
        "[...document.querySelectorAll('#years-table tbody tr')].map(r => [...r.cells].slice(0, 6).map(c => c.textContent))"
    )
    assert rows == [[str(y), *(f"{n:,}" for n in oracle[y].quarters), f"{oracle[y].hires:,}"] for y in (2021, 2022)]

    # The rejected rows: counted over all loads and every year, and labelled so.
    assert browser.evaluate("document.querySelector('[data-rejected-table=hired_employees]').textContent") == "70"
    assert "Rows rejected while loading hired_employees, all loads: 70" in browser.evaluate("document.getElementById('left-out').innerText")
    assert browser.evaluate("document.getElementById('rejected-total').textContent") == "70"

    # Provenance: the three files by name and the start of their sha256, with their rows.
    sources = browser.evaluate("[...document.querySelectorAll('#sources-table tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
    expected = {
        (table, "file", f"{table}.csv", hashlib.sha256((GLOBANT_DATA / f"{table}.csv").read_bytes()).hexdigest()[:12])
        for table in ("departments", "jobs", "hired_employees")
    }
    assert {tuple(row[:4]) for row in sources} == expected
    assert {row[0]: row[6] for row in sources}["hired_employees"] == "70"
    assert browser.evaluate("document.getElementById('loaded-at').textContent").endswith("UTC")

    # Sorting and filtering work on the year shown.
    table = "above-mean-table-2021"
    browser.evaluate(f"document.querySelector('#{table} th:nth-child(3) button').click()")
    assert column(browser, table, 2) == [str(h) for *_, h in sorted(REFERENCE_ABOVE_MEAN, key=lambda r: r[2])]
    browser.evaluate(f"document.querySelector('#{table} th:nth-child(2) button').click()")
    assert column(browser, table, 1) == sorted(name for _, name, _ in REFERENCE_ABOVE_MEAN)
    table = "quarterly-table-2021"
    assert len(column(browser, table, 0)) == 933
    browser.evaluate(f"document.querySelector('#{table} th:nth-child(7) button').click()")
    browser.evaluate(f"document.querySelector('#{table} th:nth-child(7) button').click()")  # descending
    totals = [int(v) for v in column(browser, table, 6)]
    assert totals == sorted(totals, reverse=True) and len(totals) == 933
    pairs = list(zip(column(browser, table, 0), column(browser, table, 1)))
    browser.evaluate(
        f"{{ const f = document.querySelector('input[data-table={table}]'); f.value = 'Support'; f.dispatchEvent(new Event('input')); }}"
    )
    shown = list(zip(column(browser, table, 0), column(browser, table, 1)))
    assert shown == [(d, j) for d, j in pairs if "support" in f"{d} {j}".lower()]
    assert browser.evaluate(f"document.querySelector('.row-count[data-table={table}]').textContent") == str(len(shown))

    choose_year(browser, 2022)
    assert_shows(browser, oracle, 2022)
    assert browser.requested_urls() == [path.as_uri()]  # switching, sorting and filtering fetched nothing
    assert browser.script_errors() == []


def test_a_link_to_a_year_opens_on_that_year(engine, globant_landing, browser):
    ingest_landing(engine, globant_landing, run_id="load")
    path = write_dashboard(engine, globant_landing.reports)
    open_offline(browser, path, "#2021")
    assert_shows(browser, oracle_from_csv(GLOBANT_DATA), 2021)


def test_without_javascript_every_year_is_on_the_page(sqlite_url, globant_landing, browser):
    engine = create_warehouse_engine(sqlite_url)
    create_schema(engine)
    ingest_landing(engine, globant_landing, run_id="load")
    path = write_dashboard(engine, globant_landing.reports)
    browser.send("Emulation.setScriptExecutionDisabled", {"value": True}, session=True)
    browser.open(path.as_uri())
    assert browser.evaluate("document.documentElement.getAttribute('data-ready')") is None  # the script did not run
    text = browser.evaluate("document.body.innerText")
    oracle = oracle_from_csv(GLOBANT_DATA)
    for year in (2021, 2022):
        assert f"{year}, beside {year - 1}" in text
        assert f"Employees hired in {year}\n{oracle[year].hires:,}" in text


def test_hostile_names_are_shown_as_text_and_run_nothing(engine, folders, browser):
    script = "<script>window.__pwned = 1</script>"
    image = '</script><img src="http://127.0.0.1:9/x.png" onerror="window.__pwned = 2">'
    quoted_image = '"' + image.replace('"', '""') + '"'  # a CSV field with quotes inside
    hostile_file = "departments_<img src=x onerror=window.__pwned=3>.csv"
    (folders.landing / hostile_file).write_text(f"1,{script}\n2,{script}\n")
    (folders.landing / "jobs.csv").write_text(f"1,{quoted_image}\n")
    (folders.landing / "hired_employees.csv").write_text("1,Eve,2021-05-01T00:00:00Z,1,1\n2,Al,2022-05-01T00:00:00Z,2,1\n")
    assert [o.rows_rejected for o in ingest_landing(engine, folders, run_id="hostile")] == [0, 0, 0]
    path = write_dashboard(engine, folders.reports, 2021)
    open_offline(browser, path)
    assert browser.evaluate("window.__pwned === undefined")
    assert browser.evaluate("document.querySelectorAll('img').length") == 0
    assert column(browser, "quarterly-table-2021", 0) == [script]  # two departments of that name: the one hiring in 2021
    assert column(browser, "quarterly-table-2021", 1) == [image]
    choose_year(browser, 2022)
    assert shown_year(browser) == 2022
    assert browser.evaluate("window.__pwned === undefined")
    files = browser.evaluate("[...document.querySelectorAll('#sources-table tbody tr')].map(r => r.cells[2].textContent)")
    assert hostile_file in files


def test_a_year_without_hires_is_shown_empty_beside_the_others(engine, globant_landing, browser):
    ingest_landing(engine, globant_landing, run_id="load")
    path = write_dashboard(engine, globant_landing.reports, 1999)
    open_offline(browser, path)
    assert shown_year(browser) == 1999
    text = browser.evaluate(f"{SHOWN}.innerText")
    assert "No hires in 1999" in text and "No hires in 1998 or 1999" in text
    assert browser.evaluate("document.querySelectorAll('.year-panel[data-year=\"1999\"] svg').length") == 0
    assert browser.evaluate("[...document.querySelectorAll('#year-select option')].map(o => o.value)") == ["2022", "2021", "1999"]
    # Sorting an empty table is harmless.
    browser.evaluate("document.querySelector('#quarterly-table-1999 th button').click()")
    assert browser.script_errors() == []


def test_rendering_is_a_pure_function_of_the_data(sqlite_url):
    engine = create_warehouse_engine(sqlite_url)
    create_schema(engine)
    data = collect_dashboard_data(engine)
    assert data.loaded_at is None and data.selected.hires == 0 and data.provenance.is_empty
    first, second = render_dashboard(data), render_dashboard(data)
    assert first == second
    assert "never (the warehouse is empty)" in first and "Nothing has been loaded yet." in first
    embedded = json.loads(first.split('<script id="dashboard-data" type="application/json">')[1].split("</script>")[0])
    assert embedded == {
        "selected": data.selected_year,
        "years": {str(data.selected_year): {"hires": 0, "quarters": [0, 0, 0, 0], "mean": None, "above_mean": 0}},
    }


def test_the_request_log_catches_a_page_that_fetches(tmp_path, browser):
    """The offline assertions are not vacuous: a page that loads a stylesheet from a CDN is caught."""
    page = tmp_path / "fetches.html"
    page.write_text('<!DOCTYPE html><link rel="stylesheet" href="https://cdn.example.invalid/x.css"><p>hi</p>')
    browser.open(page.as_uri())
    assert "https://cdn.example.invalid/x.css" in browser.requested_urls()
