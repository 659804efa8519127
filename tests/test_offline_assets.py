"""HTML reports load their scripts and styles from local copies, not CDNs (no network here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tasks.services.offline_assets import localize

ROOT = Path(__file__).resolve().parents[1]


def test_dvc_plots_page_is_pointed_at_local_vega(tmp_path: Path):
    """`dvc plots show` (what `make plots` runs) writes a page that loads Vega from jsdelivr."""
    (tmp_path / "loss.csv").write_text("step,loss\n1,3.0\n2,2.5\n3,2.1\n")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "loss.csv", "-o", "dvc_plots"], cwd=tmp_path,
                   check=True, capture_output=True)
    page = tmp_path / "dvc_plots" / "index.html"
    assert "cdn.jsdelivr.net/npm/vega@" in page.read_text()
    done = subprocess.run([sys.executable, "-m", "tasks.services.offline_assets", "dvc_plots"], cwd=tmp_path,
                          check=True, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert "still external" not in done.stdout
    text = page.read_text()
    assert "https://" not in text.split("<body")[0]
    for name in ("vega5.js", "vega-lite5.js", "vega-embed6.js"):
        assert f'src="vendor/{name}"' in text and (tmp_path / "dvc_plots/vendor" / name).stat().st_size > 10_000


def test_an_unknown_external_asset_is_reported_not_hidden(tmp_path: Path):
    (tmp_path / "page.html").write_text('<link href="https://example.org/x.css" rel="stylesheet">'
                                        '<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>')
    left = localize(tmp_path, tmp_path / "vendor")
    assert left == ["https://example.org/x.css"]
    assert 'src="vendor/jquery.min.js"' in (tmp_path / "page.html").read_text()
