"""examples/captum_round_trip.py runs end to end: Captum's maps imported score as the gradient baseline."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_captum_round_trip_example_runs_and_is_exact(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "captum_round_trip.py"), "--out", str(tmp_path),
                             "--limit", "2", "--iterations", "2", "--step", "7168"], cwd=ROOT, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "2 Captum Saliency maps" in out
    for name in ("captum-saliency", "gradient", "paper-fast"):
        assert f"{name}.h5: 2 images; 2 solved now" in out
    assert re.search(r"captum-saliency against the gradient baseline: max \|difference\| 0\n", out)
    assert re.search(r"insertion_auc\s+paper-fast\s+2\s+0\.\d{4}", out)
    assert (tmp_path / "comparison" / "comparison.csv").is_file()
