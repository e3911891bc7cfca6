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
    proc = subprocess.run([ruff, "check", "--output-format", "concise", "tasks", "tests", *(["bench"] if os.path.isdir(os.path.join(ROOT, "bench")) else []),
                           "fabfile.py"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
