"""report.html in a real browser: Debian's headless Chromium renders verdicts and charts, runs nothing.

Marked ``browser``; skipped when ``/usr/bin/chromium`` is not installed
(``apt-get install chromium``).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from sample_report import poisoned_report, sample_report

from distill_doctor.reports.save import save_report

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_verdicts_and_charts_render_and_screenshot(tmp_path):
    save_report(sample_report(), tmp_path / "run")
    page = (tmp_path / "run" / "report.html").as_uri()
    dom = chromium(tmp_path, "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert len(re.findall(r"<svg\b", html)) == 8
    assert len(re.findall(r"<rect\b", html)) > 20 and "<polyline" in html
    for verdict in ("pass", "warn", "fail", "skipped"):
        assert f'<span class="verdict v-{verdict}">{verdict}</span>' in html
    for mode in ("data_quality", "teacher_error_transfer", "capacity_gap", "exposure_bias", "contamination"):
        assert f'id="mode-{mode}"' in html

    shot = tmp_path / "report.png"
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,3000", page)
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_hostile_text_creates_no_elements_in_the_browser(tmp_path):
    save_report(poisoned_report(), tmp_path / "run")
    dom = chromium(tmp_path, "--dump-dom", (tmp_path / "run" / "report.html").as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout.lower()
    assert "<script" not in html and "<img" not in html and "<textarea" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown as text
    assert len(re.findall(r"<svg\b", html)) == 8
