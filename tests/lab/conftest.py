"""Fixtures for the lab integration tests: real hosts in network namespaces (root only).

Every test under tests/lab is marked ``lab``. Where the tests do not run as
root they are all skipped with the reason shown in the summary (``-rs``);
as root (``.ci/run``) the session brings up one 3-host lab, or reuses a
healthy one, and ``test_zz_lab_down.py`` takes it down last.

The helpers check things independently of xcatfab's own code: ``ssh_run``
uses plain OpenSSH with the lab's ssh_config (host keys checked against the
lab's known_hosts), ``docker_on`` the docker CLI on the host's own socket.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.labkit.netns.hosts import DOCKER_CLIENT

#: Lab size for the session (a healthy bigger lab is reused as it is).
LAB_HOSTS = int(os.environ.get("XCATFAB_LAB_HOSTS", "3"))
HERE = Path(__file__).resolve().parent
NOT_ROOT_REASON = ("lab tests need root (network namespaces, dockerd, sshd, iptables): "
                   "run them as root, as .ci/run does")


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: integration test against the lab (root only)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.lab)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason=NOT_ROOT_REASON))


@pytest.fixture(scope="session")
def lab():
    """The running lab (3 hosts): brought up once, or reused when already healthy.

    A healthy lab with more hosts is reused too, so several people can work on
    one bigger lab, each with their own hosts (see ``test_hosts``).
    """
    from tests.labkit.netns.lifecycle import current_lab, healthy, lab_up

    existing = current_lab()
    if os.environ.get("XCATFAB_TEST_HOSTS"):
        # Sharing a lab with others: never rebuild it (that would take their hosts away,
        # and a host of theirs may be down on purpose while they test).
        assert existing, "XCATFAB_TEST_HOSTS is set but no lab is up: run `inv lab.up` first"
        return existing
    if existing and len(existing.hosts) >= LAB_HOSTS and not healthy(existing):
        return existing
    return lab_up(LAB_HOSTS, log=lambda msg: print(f"[lab] {msg}"))


@pytest.fixture(scope="session")
def test_hosts(lab):
    """The lab hosts the tests may use, in order: ``$XCATFAB_TEST_HOSTS`` (a comma
    list) or the lab's first three. Tests take hosts from here, never by name."""
    names = os.environ.get("XCATFAB_TEST_HOSTS")
    chosen = names.split(",") if names else lab.names[:LAB_HOSTS]
    missing = [n for n in chosen if n not in lab.names]
    assert not missing, f"XCATFAB_TEST_HOSTS names hosts the lab does not have: {missing}"
    return chosen


def _checked(proc: subprocess.CompletedProcess, what: str, check: bool) -> subprocess.CompletedProcess:
    if check and proc.returncode != 0:
        raise AssertionError(f"{what} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def ssh_run(lab):
    """``ssh_run(host, cmd, user="root", check=True, input=None, timeout=120, options=())``.

    Runs ``cmd`` on a lab host with plain OpenSSH and the lab's ssh_config
    (StrictHostKeyChecking yes against the lab's known_hosts); returns the
    CompletedProcess (text), raising AssertionError on a non-zero exit when
    ``check``.
    """

    def run(host: str, cmd: str, user: str = "root", check: bool = True, input: str | None = None,
            timeout: float = 120, options: tuple = ()) -> subprocess.CompletedProcess:
        argv = ["ssh", "-F", str(lab.ssh_config), *options, "-l", user, host, cmd]
        proc = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout)
        return _checked(proc, f"ssh {user}@{host} {cmd!r}", check)

    return run


@pytest.fixture(scope="session")
def docker_on(lab):
    """``docker_on(host, *args, check=True, timeout=600)``: the docker CLI on that host's own engine."""

    def run(host: str, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ, DOCKER_HOST=lab.host(host).docker_host)
        proc = subprocess.run([DOCKER_CLIENT, *args], capture_output=True, text=True, env=env, timeout=timeout)
        return _checked(proc, f"docker {' '.join(args)} on {host}", check)

    return run
