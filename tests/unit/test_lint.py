"""The project's own Python passes ruff (the rules are in pyproject.toml)."""

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_ruff_is_clean():
    ruff = os.path.join(os.path.dirname(sys.executable), "ruff")
    ruff = ruff if os.path.exists(ruff) else shutil.which("ruff")
    assert ruff, "ruff belongs to the test extras"
    paths = [p for p in ("tasks", "tests", "bench", "fabfile.py") if os.path.exists(os.path.join(ROOT, p))]
    proc = subprocess.run([ruff, "check", "--output-format", "concise", *paths], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
