"""``blocktimesd report --format html``: the page as a person sees it, in headless Chromium.

A few simulated days (slot-ladder deltas, segment headers, bundles, a stall, a gap, a
runtime upgrade, a domain chain, reorgs) are rendered to one HTML file, which Chromium
opens from disk through the DevTools protocol: no console error, no network request,
every section's figure drawn (rendered size and marks), a full-page screenshot, and
the summary's cells equal to ``--format json``'s.  Without Chromium the browser test
is skipped, unless ``CI`` is set: then it fails.  Tiny and empty datasets are checked
on the HTML text: each section says what is missing instead of drawing empty axes.
"""

from __future__ import annotations

import base64
import contextlib
import html.parser
import io
import itertools
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from websockets.sync.client import ClientConnection, connect

from blocktimesd.cli import main
from blocktimesd.dataset.layout import REORGS
from blocktimesd.dataset.schema import REORG_SCHEMA
from tests.handmade import chain_rows, domain_of, write_rows

SECTIONS = ("summary", "distribution", "over_time", "segments", "cross_chain", "reorgs")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# -- a realistic dataset -----------------------------------------------------------------


def simulate(data_dir: Path, days: float = 1.0, seed: int = 7) -> None:
    """Consensus blocks on ~1 s slots won with probability 1/6 (so ~6 s blocks), 1 % with
    segment headers, 0-5 bundles; a 75 s stall and 40 missing blocks on the first
    day; a runtime upgrade halfway; one Auto-EVM block per consensus block with bundles;
    a handful of reorgs of depth 1-3."""
    rng = random.Random(seed)
    count = int(days * 86_400 / 6)
    deltas: list[int | None] = [None]
    for i in range(1, count):
        slots = 1
        while rng.random() >= 1 / 6:
            slots += 1
        deltas.append(75_000 if i == count // 3 else slots * 1000 + rng.randint(-100, 100))
    segments = [rng.random() < 0.01 for _ in deltas]
    rows = [
        r._replace(
            bundle_count=rng.choice((0, 1, 1, 2, 2, 3, 4, 5)),
            spec_version=100 if i < count // 2 else 101,
        )
        for i, r in enumerate(chain_rows("consensus", deltas, segments=segments))
    ]
    gap = slice(count // 4, count // 4 + 40)
    kept = rows[: gap.start] + rows[gap.stop :]
    domain = [r._replace(spec_version=7) for r in domain_of([c for c in kept if c.bundle_count])]
    write_rows(data_dir, [*kept, *domain])
    _write_reorgs(data_dir, rng, [r.timestamp_ms for r in kept[:: max(1, len(kept) // 9)]])


def _write_reorgs(data_dir: Path, rng: random.Random, times: list[int]) -> None:
    records = [
        {
            "chain": "consensus",
            "detected_ts_ms": ts,
            "depth": rng.choice((1, 1, 1, 2, 3)),
            "old_tip_number": 10 + i,
            "old_tip_hash": f"0x{i:064x}",
            "new_tip_number": 11 + i,
            "new_tip_hash": f"0x{i + 1:064x}",
            "common_ancestor_number": 9 + i,
            "common_ancestor_hash": f"0x{i + 2:064x}",
            "beyond_confirmation": False,
        }
        for i, ts in enumerate(times)
    ]
    directory = data_dir / REORGS / "chain=consensus"
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.Table.from_pylist(records, schema=REORG_SCHEMA), directory / "part-1-9-0.parquet"
    )


def run(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", *argv]) == 0
    return out.getvalue()


def render(data_dir: Path, *extra: str) -> str:
    target = data_dir.parent / f"{data_dir.name}-report.html"
    run("--data", str(data_dir), "--format", "html", "--output", str(target), *extra)
    return target.read_text(encoding="utf-8")


# -- the page's structure, without a browser ---------------------------------------------


class _Page(html.parser.HTMLParser):
    """Per section: drawn marks, missing notes; summary cells; anything external."""

    def __init__(self) -> None:
        super().__init__()
        self.section = ""
        self.marks: dict[str, int] = {}
        self.svgs: dict[str, int] = {}
        self.missing: dict[str, list[str]] = {}
        self.in_missing = False
        self.cells: dict[tuple[str, str], Any] = {}
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.section = a["data-section"] or ""
            self.marks[self.section] = self.svgs[self.section] = 0
        elif tag == "svg":
            self.svgs[self.section] += 1
        elif tag in ("path", "rect", "use", "image", "polygon", "polyline"):
            self.marks[self.section] += 1
        elif tag == "p" and a.get("class") == "missing":
            self.in_missing = True
        elif tag == "td" and "data-key" in a:
            self.cells[(a["data-chain"] or "", a["data-key"] or "")] = json.loads(
                a["data-value"] or ""
            )
        if tag in ("script", "link", "iframe") or any(
            k in ("src", "href") and v and not v.startswith(("#", "data:")) for k, v in attrs
        ):
            self.external.append(f"<{tag} {attrs}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self.in_missing = False

    def handle_data(self, data: str) -> None:
        if self.in_missing:
            self.missing.setdefault(self.section, []).append(data)


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("day") / "data"
    simulate(data_dir, days=1.0)
    return data_dir


def test_every_section_drawn_self_contained(day: Path) -> None:
    page = parse(render(day))
    assert list(page.svgs) == list(SECTIONS)
    for section in SECTIONS:
        assert page.svgs[section] >= 1, section
        assert page.marks[section] > 20, section  # axes, ticks, bars, lines
    assert page.missing == {}
    assert page.external == []


def test_summary_cells_equal_json(day: Path) -> None:
    page = parse(render(day))
    summary = json.loads(run("--data", str(day), "--format", "json"))["summary"]
    assert {r["chain"] for r in summary} == {"consensus", "auto-evm"}
    for record in summary:
        for key, value in record.items():
            if key != "chain":
                assert page.cells[(record["chain"], key)] == value, (record["chain"], key)


def test_same_data_same_file(day: Path) -> None:
    assert render(day) == render(day)  # no timestamp, no random ids: diffs show data


def _one_chain_no_reorgs(d: Path) -> None:
    write_rows(d, chain_rows("consensus", [None, *([6000] * 50)]))


def _one_block(d: Path) -> None:
    write_rows(d, chain_rows("consensus", [None]))


def _domain_only(d: Path) -> None:
    write_rows(d, domain_of(chain_rows("consensus", [None, 6000, 12000])))


def _other_chain(d: Path) -> None:
    write_rows(d, chain_rows("rococo", [None, 12000, 12000], consensus=False))


@pytest.mark.parametrize(
    ("build", "missing"),
    [
        (_one_block, {"summary", "distribution", "over_time", "segments", "cross_chain"}),
        (_one_chain_no_reorgs, {"segments", "cross_chain"}),  # no segment headers
        (_domain_only, {"segments", "cross_chain"}),
        (_other_chain, {"segments", "cross_chain"}),
    ],
    ids=["one-block", "one-chain", "domain-only", "generic-chain"],
)
def test_tiny_datasets_say_what_is_missing(tmp_path: Path, build: Any, missing: set[str]) -> None:
    build(tmp_path)
    page = parse(render(tmp_path))
    assert set(page.missing) == missing | {"reorgs"}, page.missing
    assert any("reorgs" in note for note in page.missing["reorgs"])
    for section in SECTIONS:
        # A section draws marks or says why not; never an empty figure.
        assert page.svgs[section] == 0 or page.marks[section] > 20, section
        assert page.svgs[section] or page.missing.get(section), section


def test_time_range_with_no_rows(day: Path) -> None:
    page = parse(render(day, "--since", "2030-01-01"))
    assert set(page.missing) == set(SECTIONS)
    assert all(n == 0 for n in page.svgs.values())


def test_html_draws_every_section(day: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--data", str(day), "--format", "html", "--section", "gaps"]) == 2
    assert "--format html draws every section" in capsys.readouterr().err


def test_output_option_writes_other_formats_too(day: Path, tmp_path: Path) -> None:
    target = tmp_path / "summary.csv"
    run("--data", str(day), "--format", "csv", "--section", "summary", "--output", str(target))
    assert target.read_text().startswith("chain,blocks,")
    assert not list(tmp_path.glob("*.partial"))


# -- in a real browser -------------------------------------------------------------------


class DevTools:
    """The least of the Chrome DevTools protocol: commands on one page's session, and
    the events received meanwhile."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.session = ""

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.0, deadline - time.monotonic())))
            if reply.get("id") == message_id:
                assert "error" not in reply, (method, reply["error"])
                result: dict[str, Any] = reply["result"]
                return result
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(
                json.loads(self.ws.recv(timeout=max(0.0, deadline - time.monotonic())))
            )

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"]["value"]


@contextlib.contextmanager
def chromium() -> Iterator[DevTools]:
    """Headless Chromium on a free port (``DevToolsActivePort`` names it), one page."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it); CI must run this")
        pytest.skip("chromium is not installed (apt-get install chromium); CI does not skip")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        process = subprocess.Popen(
            [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not port_file.exists() or len(port_file.read_text().split()) < 2:
                assert process.poll() is None, "chromium exited"
                assert time.monotonic() < deadline, "chromium did not open its DevTools port"
                time.sleep(0.1)
            port, path = port_file.read_text().split()[:2]
            with connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:
                tools = DevTools(ws)
                target = tools.send("Target.createTarget", url="about:blank")["targetId"]
                tools.session = tools.send("Target.attachToTarget", targetId=target, flatten=True)[
                    "sessionId"
                ]
                yield tools
        finally:
            process.terminate()
            process.wait(timeout=10)


# What the page shows per section: its figure's SVGs with their rendered size and
# drawn marks (a path with a d, a used glyph, a rect, an embedded image).
_SECTIONS_JS = """
Object.fromEntries([...document.querySelectorAll('section')].map(s => [s.dataset.section,
  [...s.querySelectorAll('figure > svg')].map(svg => {
    const box = svg.getBoundingClientRect();
    const marks = [...svg.querySelectorAll('path[d], use, rect, image')]
      .filter(e => { const b = e.getBoundingClientRect(); return b.width + b.height > 0; });
    return {width: box.width, height: box.height, marks: marks.length};
  })]))
"""
_SUMMARY_JS = """
[...document.querySelectorAll('#summary td[data-key]')].map(td =>
  [td.dataset.chain, td.dataset.key, JSON.parse(td.dataset.value), td.textContent])
"""


def test_in_headless_chromium(day: Path, tmp_path: Path) -> None:
    render(day)
    page_file = day.parent / f"{day.name}-report.html"
    url = page_file.as_uri()
    summary = json.loads(run("--data", str(day), "--format", "json"))["summary"]
    with chromium() as tools:
        for domain in ("Page", "Runtime", "Network", "Log"):
            tools.send(f"{domain}.enable")
        tools.send("Emulation.setDeviceMetricsOverride", width=1280, height=800,
                   deviceScaleFactor=1, mobile=False)  # fmt: skip
        tools.send("Page.navigate", url=url)
        tools.wait_for("Page.loadEventFired")
        figures = tools.evaluate(_SECTIONS_JS)
        cells = tools.evaluate(_SUMMARY_JS)
        size = tools.send("Page.getLayoutMetrics")["cssContentSize"]
        shot = tools.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"],
                                "height": size["height"], "scale": 1})  # fmt: skip
        events = list(tools.events)
    png = base64.b64decode(shot["data"])
    (tmp_path / "report.png").write_bytes(png)
    assert png.startswith(b"\x89PNG")
    assert len(png) > 50_000
    assert size["height"] > 2000  # six sections of figures, not a blank page

    requests = [
        e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"
    ]
    assert requests == [url]  # the page itself, nothing else
    errors = [
        e for e in events
        if e["method"] == "Runtime.exceptionThrown"
        or (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error")
        or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")
    ]  # fmt: skip
    assert errors == []

    assert list(figures) == list(SECTIONS)
    for section, svgs in figures.items():
        assert svgs, section
        for svg in svgs:
            assert svg["width"] > 600, (section, svg)
            assert svg["height"] > 100, (section, svg)
            assert svg["marks"] > 20, (section, svg)

    shown = {(chain, key): (value, text) for chain, key, value, text in cells}
    for record in summary:
        for key, value in record.items():
            if key == "chain":
                continue
            got, text = shown[(record["chain"], key)]
            assert got == value, (record["chain"], key)
            if key.endswith("_ms") and value is not None:
                assert text == f"{value / 1000:.3f} s"
