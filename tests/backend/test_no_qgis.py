"""The engine must import and run where QGIS is not installed."""

import subprocess
import sys

from tests.helpers import REPO

PROBE = """
import sys
import backend.cli.main, backend.predict.job, backend.cluster.job  # the entry points
import backend.demo.run, backend.demo.scene
print(sorted(m for m in sys.modules if m == "qgis" or m.startswith("qgis.")))
"""


def test_importing_the_engine_pulls_in_no_qgis_module():
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
