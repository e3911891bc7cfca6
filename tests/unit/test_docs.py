"""README and hosts.ini stay true: every key and every task is documented."""

import os
import re
import subprocess
import sys

from tasks.runtime.config import ALIASES, KEYS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def read(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as fh:
        return fh.read()


def test_readme_documents_every_inventory_key_and_alias():
    readme = read("README.md")
    for key in list(KEYS) + list(ALIASES):
        assert f"`{key}`" in readme, f"README.md does not document {key}"


def task_names(program):
    proc = subprocess.run([os.path.join(BIN, program), "--list"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, f"{program} --list: {proc.stderr}"
    names = re.findall(r"^  (\S+)", proc.stdout, re.M)
    assert names, f"{program} --list shows no task"
    return names


def test_readme_has_an_example_for_every_task():
    readme = read("README.md")
    for name in task_names("fab"):
        assert re.search(rf"`fab [^`]*\b{re.escape(name)}\b", readme), f"README.md: no example of fab {name}"
    for name in task_names("inv"):
        assert f"inv {name}" in readme, f"README.md: no example of inv {name}"


def test_quick_start_is_two_commands():
    readme = read("README.md")
    quick = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    block = quick.split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    assert "make test" in read(".ci/run")
