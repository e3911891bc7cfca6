"""``--verify deep`` on a lab host: the quick check's records are really bypassed (issue 15).

Both records the quick check trusts are fooled on purpose, by changes that keep
what the record looks at (size, inode, mtime) and change the content:

* xCAT's site table file edited in place, its mtime put back (the controller's
  table stamp still matches): the quick run trusts the stamp and leaves the
  edit; ``--verify deep`` reads the table and sets ``master`` back;
* a staged ISO changed in place, its mtime put back (the host's sha256 record
  still describes the file): the quick run trusts the record; ``--verify deep``
  hashes the file, finds it differs and stages it again.

Every outcome is checked around xcatfab: ``tabdump`` through the docker CLI on
the host's own engine, ``sha256sum``/``stat`` over plain OpenSSH.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).parent / "fab")


def fab(lab, host, *args):
    argv = [FAB, "-H", host, *args, "--inventory", str(lab.inventory)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCATFAB_")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)


def recap(proc, host) -> dict:
    match = re.search(rf"^{re.escape(host)}\s+: ok=(\d+) changed=(\d+) failed=(\d+)", proc.stdout, re.M)
    assert match, proc.stdout + proc.stderr
    return dict(zip(("ok", "changed", "failed"), map(int, match.groups())))


def site(docker_on, host) -> dict:
    out = docker_on(host, "exec", "xcatmn", "sh", "-c", ". /etc/profile.d/xcat.sh; tabdump site").stdout
    return dict(re.findall(r'^"([^"]+)","([^"]*)"', out, re.M))


def same_length_address(address: str) -> str:
    """Another address of the same length (the table file keeps its size)."""
    head, last = address.rsplit(".", 1)
    other = "9" * len(last) if last != "9" * len(last) else "8" * len(last)
    return f"{head}.{other}"


@pytest.fixture(scope="module")
def deployed(lab, test_hosts):
    host = test_hosts[0]
    lab.reset_host(host)
    proc = fab(lab, host, "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield host
    lab.reset_host(host)


def test_deep_rereads_a_table_edited_behind_the_stamp(lab, deployed, ssh_run, docker_on):
    host = deployed
    table = lab.host(host).data_dir / "etc-xcat" / "site.csv"
    want = site(docker_on, host)["master"]
    edited = same_length_address(want)
    # The edit keeps size, inode and mtime: the stamp of the table files cannot see it.
    before = ssh_run(host, f"stat -c '%s %i %y' {table}").stdout
    ssh_run(host, f"cp -p {table} {table}.ref && sed 's/\"master\",\"{want}\"/\"master\",\"{edited}\"/' "
                  f"{table}.ref >{table}.new && cat {table}.new >{table} && touch -r {table}.ref {table} "
                  f"&& rm -f {table}.ref {table}.new")
    assert ssh_run(host, f"stat -c '%s %i %y' {table}").stdout == before
    assert site(docker_on, host)["master"] == edited

    quick = fab(lab, host, "xcat-config")
    assert quick.returncode == 0, quick.stdout + quick.stderr
    assert recap(quick, host)["changed"] == 0  # the stamp was trusted: the tables were not read
    assert site(docker_on, host)["master"] == edited

    deep = fab(lab, host, "xcat-config", "--verify", "deep")
    assert deep.returncode == 0, deep.stdout + deep.stderr
    assert recap(deep, host)["changed"] == 1
    assert "set back: xcatfab owns site master" in deep.stdout
    assert site(docker_on, host)["master"] == want

    again = fab(lab, host, "xcat-config", "--verify", "deep")
    assert again.returncode == 0 and recap(again, host)["changed"] == 0, again.stdout + again.stderr


def test_deep_rehashes_an_iso_changed_in_place(lab, deployed, ssh_run, tmp_path):
    host = deployed
    iso = tmp_path / "Verify-deep-test.iso"
    iso.write_bytes(os.urandom(3 * (1 << 20)))
    digest = hashlib.sha256(iso.read_bytes()).hexdigest()
    staged = lab.host(host).iso_dir / iso.name
    first = fab(lab, host, "iso", "--src", str(iso), "--no-copycds")
    assert first.returncode == 0, first.stdout + first.stderr
    assert ssh_run(host, f"sha256sum {staged}").stdout.split()[0] == digest

    # One byte changed in place; size, inode and mtime kept: xcatfab's record still describes the file.
    before = ssh_run(host, f"stat -c '%s %i %y' {staged}").stdout
    ssh_run(host, f"touch -r {staged} {staged}.ref && printf 'Z' | dd of={staged} bs=1 seek=4096 conv=notrunc "
                  f"status=none && touch -r {staged}.ref {staged} && rm -f {staged}.ref")
    assert ssh_run(host, f"stat -c '%s %i %y' {staged}").stdout == before
    assert ssh_run(host, f"sha256sum {staged}").stdout.split()[0] != digest

    quick = fab(lab, host, "iso", "--src", str(iso), "--no-copycds")
    assert quick.returncode == 0, quick.stdout + quick.stderr
    assert recap(quick, host)["changed"] == 0  # the record was trusted: the file was not read
    assert ssh_run(host, f"sha256sum {staged}").stdout.split()[0] != digest

    deep = fab(lab, host, "iso", "--src", str(iso), "--no-copycds", "--verify", "deep")
    assert deep.returncode == 0, deep.stdout + deep.stderr
    assert recap(deep, host)["changed"] == 1
    assert ssh_run(host, f"sha256sum {staged}").stdout.split()[0] == digest

    again = fab(lab, host, "iso", "--src", str(iso), "--no-copycds", "--verify", "deep")
    assert again.returncode == 0 and recap(again, host)["changed"] == 0, again.stdout + again.stderr
    ssh_run(host, f"rm -f {staged}")
