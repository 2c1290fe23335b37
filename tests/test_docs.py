"""The docs site builds without warnings, renders in a real browser, links resolve, and its
reference pages follow the spec."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from kvm_fwspec.codegen.generate import render_all
from kvm_fwspec.spec.loader import load_spec
from tests.checkout import KVM_FWSPEC, ROOT

pytestmark = pytest.mark.tools  # Sphinx builds of the site, rendered in Chromium

ARTIFACTS = ROOT / "reports" / "docs"
CHROMIUM = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Each xdist worker builds its own copy; .ci/run builds the one kept in reports/docs/html.
    html = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", str(ROOT / "docs"), str(html)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return html


def browser(args: list[str], tmp_path: Path) -> str:
    assert shutil.which("chromium"), "chromium is not installed; .ci/run installs it with apt-get"
    result = subprocess.run(
        [*CHROMIUM, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        if tag == "a" and values.get("href"):
            self.hrefs.append(str(values["href"]))


def parse(path: Path) -> Links:
    links = Links()
    links.feed(path.read_text(encoding="utf-8"))
    return links


def broken_links(root: Path) -> list[str]:
    """Every relative link of every page must reach a file, and its anchor an id in it."""
    broken = []
    pages = {p: parse(p) for p in root.rglob("*.html")}
    for page, links in pages.items():
        for href in links.hrefs:
            parts = urlsplit(href)
            if parts.scheme or href.startswith("//"):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(root)}: {href}")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else parse(target).ids
                if parts.fragment not in ids:
                    broken.append(f"{page.relative_to(root)}: {href} (no such anchor)")
    return broken


def test_register_pages_render_with_diagram_and_tables(site: Path, tmp_path: Path) -> None:
    spec = load_spec()
    for register in spec.registers:
        page = site / "reference" / "registers" / f"{register.name}.html"
        dom = browser(["--dump-dom", page.as_uri()], tmp_path)
        assert 'class="reg-id-diagram"' in dom, register.name
        assert dom.count("<table") >= 2, register.name
        assert f"{register.ids['arm64']:#018x}" in dom


def test_migration_grid_has_a_cell_for_every_pair(site: Path, tmp_path: Path) -> None:
    releases = len(load_spec().releases)
    dom = browser(["--dump-dom", (site / "reference" / "migration-matrix.html").as_uri()], tmp_path)
    grid = dom[
        dom.index('class="migration-matrix"') : dom.index(
            "</table>", dom.index('class="migration-matrix"')
        )
    ]
    assert grid.count("<td") == releases * releases
    assert grid.count('href="#verdict-') == releases * releases


def test_no_internal_link_is_broken(site: Path) -> None:
    assert broken_links(site) == []


def test_screenshot_of_the_psci_version_page(site: Path, tmp_path: Path) -> None:
    shot = ARTIFACTS / "psci-version.png"
    shot.unlink(missing_ok=True)
    page = site / "reference" / "registers" / "psci-version.html"
    browser([f"--screenshot={shot}", "--window-size=1300,1800", page.as_uri()], tmp_path)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_certification_report_renders_and_links(tmp_path: Path) -> None:
    report = ARTIFACTS / "certification-report"
    result = subprocess.run(
        [*KVM_FWSPEC, "certify", "--kernel", "6.12", "--report", str(report)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]
    dom = browser(["--dump-dom", (report / "report.html").as_uri()], tmp_path)
    assert 'id="verdict"' in dom and "host=mitigated: yes</h1>" in dom
    assert broken_links(report) == []
    shot = ARTIFACTS / "certification-report.png"
    browser(
        [f"--screenshot={shot}", "--window-size=1200,1400", (report / "report.html").as_uri()],
        tmp_path,
    )
    assert shot.read_bytes()[:4] == b"\x89PNG"


def test_a_failing_report_shows_each_failure_with_its_program(tmp_path: Path) -> None:
    """What a reader needs to rerun a failure by hand is on the rendered page: the case, why,
    and its program in hex; the cases not judged are said to be so."""
    report = ARTIFACTS / "failing-report"
    agent = shlex.join([*KVM_FWSPEC, "agent", "--kernel", "6.12", "--host", "vulnerable"])
    result = subprocess.run(
        [*KVM_FWSPEC, "certify", "-q", "--adapter", "agent", "--option", f"command={agent}",
         "--option", "batch=64", "--kernel", "6.12", "--report", str(report)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    dom = browser(["--dump-dom", (report / "report.html").as_uri()], tmp_path)
    assert "host=mitigated: no</h1>" in dom
    assert "kvm-fwspec replay results.json CASE" in dom
    assert "reg=0x6030000000140001" in dom  # SMCCC_ARCH_WORKAROUND_1, which a vulnerable host lacks
    assert broken_links(report) == []


def test_changing_the_spec_changes_the_reference_pages(tmp_path: Path) -> None:
    spec_copy = tmp_path / "spec"
    shutil.copytree(ROOT / "spec", spec_copy)
    registers = spec_copy / "registers.yaml"
    text = registers.read_text()
    old = "        doc: The guest must call SMCCC_ARCH_WORKAROUND_1 to be mitigated."
    registers.write_text(
        text.replace(old, "        doc: The guest must call SMCCC_ARCH_WORKAROUND_1 (edited).", 1)
    )
    before = render_all(load_spec())
    after = render_all(load_spec(spec_copy))
    page = "docs/reference/registers/smccc-arch-workaround-1.rst"
    assert "SMCCC_ARCH_WORKAROUND_1 (edited)" in after[page] and "(edited)" not in before[page]
    assert "SMCCC_ARCH_WORKAROUND_1 (edited)" in after["docs/kernel/fw-pseudo-registers.rst"]
