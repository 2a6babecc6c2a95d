"""The reports render in a real browser: headless Chromium loads report.html from disk with the
network disabled, every <img> is an embedded PNG that decodes, and the screenshot shows the page's
styling and the plots' colours (not a blank or unstyled page).

Needs Debian's chromium (`apt-get install -y chromium`; .ci/run installs it); skipped without it.
"""
from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from sim.api import save_result
from sim.plan.sweep import sweep
from sim.report import write_report
from tests.test_sweep import GRID, experiment, fake_run, synthetic_result

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")

WIDTH, HEIGHT = 1280, 4500
HEADER_RGB = (0x17, 0x26, 0x3C)  # the report header's background (sim/report/html.py)
PLOT_BLUE_RGB = (0x1F, 0x77, 0xB4)  # matplotlib's first colour, used by every report plot


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, timeout=120, check=False)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")


def _pixels_near(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> int:
    return int((np.abs(img[..., :3].astype(int) - np.array(rgb)).max(axis=-1) <= tol).sum())


def check_renders(html_path: Path, tmp_path: Path, min_images: int) -> np.ndarray:
    """Load the page in Chromium; assert the DOM's images and the screenshot's content."""
    from PIL import Image

    url = html_path.resolve().as_uri()
    dom = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr.decode()[-2000:]
    parser = _Images()
    parser.feed(dom.stdout.decode())
    assert len(parser.srcs) >= min_images
    assert all(src.startswith("data:image/png;base64,") for src in parser.srcs)

    shot = tmp_path / f"{html_path.parent.name}.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", url)
    assert res.returncode == 0 and shot.is_file(), res.stderr.decode()[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (HEIGHT, WIDTH)
    assert shot.stat().st_size > 50_000  # a rendered page with plots, not a blank canvas
    assert img.std() > 20
    assert len(np.unique(img.reshape(-1, 3)[::7], axis=0)) > 200
    assert _pixels_near(img[:120], HEADER_RGB) > 50_000  # the inline CSS applied
    assert _pixels_near(img, PLOT_BLUE_RGB) > 2_000  # the embedded PNG plots were decoded and drawn
    return img


def test_run_report_renders_in_chromium(tmp_path):
    run_dir = tmp_path / "run"
    save_result(synthetic_result(experiment(replicas=2)), run_dir)
    write_report(run_dir)
    check_renders(run_dir / "report.html", tmp_path, min_images=7)


def test_sweep_report_renders_in_chromium(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep(experiment({**GRID, "target_request_rate": 20}), sweep_dir, jobs=1, point_fn=fake_run)
    write_report(sweep_dir)
    check_renders(sweep_dir / "report.html", tmp_path, min_images=4)
