"""The HTML report opened in real headless Chromium: every figure decodes, one summary row per scheme x network.

Chromium loads a small checker page that embeds report.html in an iframe (file:// pages may read each
other with --allow-file-access-from-files), reads image natural widths and table rows from the report's
DOM, and writes them as JSON into its own DOM, which --dump-dom prints. A screenshot is taken too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import pytest

from testbed.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (scripts/install.sh "
                                                          "installs it; run the README's test command)")

SPEC = """
[experiment]
name = "browser"
duration_s = 4
seeds = [1, 2]

[[video]]
name = "head"
source = "synthetic:talking-head"
size = [96, 96]

[[scheme]]
name = "streaming"
kind = "vp9"
target_kbps = 150
fec = "streaming"
redundancy = 0.5

[[scheme]]
name = "nofec"
kind = "vp9"
target_kbps = 150
fec = "none"

[[network]]
name = "ge-medium"
delay_ms = 50
loss = { model = "gilbert-elliott", p = 0.068, r = 0.852, loss_good = 0.04, loss_bad = 0.5, clock = "frame" }

[[network]]
name = "fifo"
delay_ms = 50
rate = { kbps = 320 }
queue = { bytes = 6000 }
"""

CHECKER = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="report" src="REPORT" width="1200" height="800"></iframe>
<script>
document.getElementById("report").addEventListener("load", () => {
  const doc = document.getElementById("report").contentDocument;
  const images = [...doc.querySelectorAll("figure img")].map(i => ({alt: i.alt, width: i.naturalWidth}));
  const rows = [...doc.querySelectorAll("table.table-summary tbody tr")].map(
      r => [...r.querySelectorAll("td")].slice(0, 2).map(c => c.textContent));
  document.getElementById("result").textContent = JSON.stringify({images, rows});
});
</script></body></html>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files"]


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120, check=True)


def test_report_opens_in_headless_chromium(tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    results = tmp_path / "results"
    assert main(["run", str(spec), "--out", str(results)]) == 0
    assert main(["report", str(results)]) == 0
    report = results / "report.html"
    checker = tmp_path / "check.html"
    checker.write_text(CHECKER.replace("REPORT", report.as_uri()))

    dom = chromium(["--virtual-time-budget=15000", "--dump-dom", checker.as_uri()], tmp_path / "profile-a").stdout
    match = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
    assert match and match.group(1) != "pending", dom[:2000]
    seen = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    figures = sorted(p.stem for p in (results / "figures").glob("*.png"))
    assert len(seen["images"]) == len(figures) >= 3
    assert all(image["width"] > 0 for image in seen["images"]), seen["images"]
    expected_rows = {(scheme, network) for scheme in ("streaming", "nofec") for network in ("ge-medium", "fifo")}
    assert len(seen["rows"]) == len(expected_rows)
    assert {tuple(row) for row in seen["rows"]} == expected_rows

    screenshot = tmp_path / "report.png"
    chromium(["--window-size=1280,2000", "--hide-scrollbars", f"--screenshot={screenshot}", report.as_uri()],
             tmp_path / "profile-b")
    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 0.05  # not a blank page
