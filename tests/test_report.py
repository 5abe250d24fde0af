"""The project report: built from saved outputs, self-contained, and rendered by headless Chromium without errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ethoscribe.report.project import build_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic project: 2 animals, 240 frames, a top body video, reference pose and behaviour outputs."""
    from ethoscribe.analytics.reference import write_reference_outputs
    from ethoscribe.synth.rig import synthesize

    root = tmp_path_factory.mktemp("project")
    s = synthesize(root, animals=2, frames=240, cameras=3, render="body", views_for_body=["top"], seed=11)
    write_reference_outputs(s.root)
    return s.root


@pytest.fixture(scope="module")
def report(project: Path) -> Path:
    return build_report(project)


def _chromium(url: str, tmp: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """Load ``url`` in headless Chromium: (the DOM after load, console messages). Optionally save a screenshot."""
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp / 'chromium-profile'}",
            "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--hide-scrollbars"]
    run = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line]
    if screenshot is not None:
        shot = subprocess.run([*base, "--window-size=1280,2400", f"--screenshot={screenshot}", url], capture_output=True,
                              text=True, timeout=120)
        console += [line for line in shot.stderr.splitlines() if "CONSOLE" in line]
    return run.stdout, console


def _image_counts(dom: str) -> tuple[int, int]:
    body = re.search(r"<body[^>]*>", dom)
    assert body, "no <body> in the DOM Chromium returned"
    n = re.search(r'data-images="(\d+)"', body.group(0))
    broken = re.search(r'data-images-broken="(\d+)"', body.group(0))
    assert n and broken, "the report's image check did not run (scripts blocked or load never fired)"
    return int(n.group(1)), int(broken.group(1))


def test_report_holds_every_page_and_is_self_contained(report: Path, project: Path) -> None:
    assert report == project / "output" / "report.html"
    html = report.read_text(encoding="utf-8")
    for anchor in ("overview", "pose", "review", "behaviour", "dictionary", "examples", "social", "provenance"):
        assert f'id="{anchor}"' in html, anchor
    # nothing is loaded from anywhere: every src/href is a data URL or an in-page anchor
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs if not r.startswith(("data:", "#"))]
    assert "Content-Security-Policy" in html
    assert "data:image/gif;base64," in html  # a looping clip per behaviour
    assert "data:image/jpeg;base64," in html  # review thumbnails and example strips
    assert "The animal runs fast right behind another animal" in html  # the chase definition in the dictionary
    assert "reference (synthetic truth)" in html
    assert "no reasoner_usage.json" in html


def test_report_regenerates_from_outputs_without_writing_anything_else(project: Path, report: Path, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (project / "output").rglob("*") if p.is_file() and p.name != "report.html"}
    out = build_report(project, tmp_path / "again.html", max_examples=1, clips=False, review_thumbnails=2)
    after = {p: p.stat().st_mtime_ns for p in (project / "output").rglob("*") if p.is_file() and p.name != "report.html"}
    assert before == after
    html = out.read_text(encoding="utf-8")
    assert "data:image/gif" not in html and 'id="social"' in html


def test_missing_parts_are_named(project: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("session.toml", "skeleton.json", "calibration.toml"):
        shutil.copy(project / name, bare / name)
    (bare / "videos").symlink_to(project / "videos")
    (bare / "output" / "behavior").mkdir(parents=True)
    for p in (project / "output" / "behavior").iterdir():
        if p.is_file():
            shutil.copy(p, bare / "output" / "behavior" / p.name)
    usage = {"calls": 12, "cache_hits": 5, "cache_misses": 7, "prompt_tokens": 3400, "completion_tokens": 410,
             "cache_hit_rate": 0.4167, "steps": {"caption": {"calls": 12, "cache_hits": 5, "cache_misses": 7}}}
    (bare / "output" / "behavior" / "reasoner_usage.json").write_text(json.dumps(usage), encoding="utf-8")
    html = build_report(bare).read_text(encoding="utf-8")
    assert 'id="usage"' in html and "12 (5 cache hits)" in html  # reasoner calls and cache hits
    assert "No pose outputs" in html and "Not in this project" in html
    assert "candidates" in html
    # without output/pose, social events come from the pose file the behaviour run recorded
    assert 'id="dictionary"' in html and 'id="social"' in html and "from the saved poses" in html
    empty = tmp_path / "empty"
    empty.mkdir()
    html = build_report(empty).read_text(encoding="utf-8")
    assert "no session.toml" in html and "No behaviour result" in html


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    dom, console = _chromium(report.resolve().as_uri(), tmp_path, screenshot=shot)
    assert not console, "console messages:\n" + "\n".join(console)
    n, broken = _image_counts(dom)
    assert n >= 10 and broken == 0, f"{broken} of {n} images did not load"
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    shutil.copy(shot, report.with_suffix(".png"))  # kept beside the report for a person to look at


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_chromium_check_catches_console_errors_broken_images_and_network(report: Path, tmp_path: Path) -> None:
    html = report.read_text(encoding="utf-8")
    bad = html.replace("</main>", '<img src="data:image/png;base64,AAAA" alt="broken">'
                                  '<img src="https://example.invalid/x.png" alt="remote">'
                                  '<script>console.error("planted error")</script></main>', 1)
    page = tmp_path / "bad.html"
    page.write_text(bad, encoding="utf-8")
    dom, console = _chromium(page.as_uri(), tmp_path)
    _, broken = _image_counts(dom)
    assert broken == 2
    text = "\n".join(console)
    assert "planted error" in text and "Content Security Policy" in text
