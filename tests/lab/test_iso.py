"""The iso step on lab hosts: staging, copycds, rerun, resume, wrong sums, full disk, relay, faults.

ISOs are real ones, made with ``xorriso -as mkisofs`` from a tree holding an
anaconda ``.discinfo`` (the stand-in copycds reads it, as real copycds does).
Every result is checked around xcatfab: ``sha256sum`` and ``stat`` over plain
OpenSSH, ``lsdef`` through the docker CLI on the host's own socket, and the
bytes the controller sent to each host from iptables counters on the
controller's OUTPUT chain (one counting rule per host address, no target).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.labkit.netns.measure import EgressCounter, received_bytes

ROOT = Path(__file__).resolve().parents[2]
FAB = str(Path(sys.executable).parent / "fab")
MIB = 1 << 20
BIG_MIB = 128
COUNTER_TAG = "xcatfab-iso-test"


# ------------------------------------------------------------------ helpers
def make_iso(directory: Path, name: str, payload_mib: float, distro_name="Rocky Linux 9.4",
             arch="x86_64") -> tuple[Path, str]:
    """An ISO9660 image (xorriso) with a .discinfo and a random payload; returns (path, sha256)."""
    tree = directory / (name + ".tree")
    (tree / "Packages").mkdir(parents=True)
    (tree / ".discinfo").write_text(f"1714000000.000000\n{distro_name}\n{arch}\n1\n")
    with open(tree / "Packages" / "payload.rpm", "wb") as fh:
        left = int(payload_mib * MIB)
        while left:
            block = os.urandom(min(left, 4 * MIB))
            fh.write(block)
            left -= len(block)
    iso = directory / name
    subprocess.run(["xorriso", "-as", "mkisofs", "-V", "XCATFAB_TEST", "-o", str(iso), str(tree)],
                   check=True, capture_output=True)
    digest = hashlib.sha256(iso.read_bytes()).hexdigest()
    return iso, digest


def fab(lab, hosts, *args, timeout=600):
    argv = [FAB, "-H", ",".join(hosts), *args, "--inventory", str(lab.inventory)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def recap(proc, host) -> dict:
    """``host : ok=N changed=N failed=N`` of a run, as a dict."""
    match = re.search(rf"^{re.escape(host)}\s+: ok=(\d+) changed=(\d+) failed=(\d+)", proc.stdout, re.M)
    assert match, proc.stdout + proc.stderr
    return dict(zip(("ok", "changed", "failed"), map(int, match.groups())))


def remote_sha(ssh_run, host, path) -> str:
    return ssh_run(host, f"sha256sum {path}").stdout.split()[0]


def listing(ssh_run, host, directory) -> list[str]:
    return ssh_run(host, f"ls -A {directory}").stdout.split()


@contextmanager
def tmpfs_at(ssh_run, host, directory, size):
    """A tmpfs over the host's iso_dir, mounted in the host's own SSH mount namespace (where it writes)."""
    ssh_run(host, f"mkdir -p {directory} && mount -t tmpfs -o size={size} xcatfab-iso-test {directory}")
    try:
        assert ssh_run(host, f"stat -f -c %T {directory}").stdout.strip() == "tmpfs"
        yield
    finally:
        ssh_run(host, f"umount {directory}", check=False)


def wait_for_size(ssh_run, host, path, at_least, proc, limit=120):
    """Poll the file's size on the host until it reaches ``at_least`` bytes (or the run ended)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        size = ssh_run(host, f"stat -c %s {path} 2>/dev/null || echo 0").stdout.strip()
        if int(size or 0) >= at_least:
            return int(size)
        time.sleep(0.05)
    raise AssertionError(f"{path} on {host} never reached {at_least} bytes (run ended: {proc.poll()})")


# ----------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def isos(tmp_path_factory):
    directory = tmp_path_factory.mktemp("isos")
    return {
        "small": make_iso(directory, "Rocky-9.4-x86_64-test.iso", 2),
        "other": make_iso(directory, "Alma-9.4-x86_64-test.iso", 1, distro_name="AlmaLinux 9.4"),
        "big": make_iso(directory, "Big-9.4-x86_64-test.iso", BIG_MIB),
    }


@pytest.fixture(scope="module")
def deployed(lab, test_hosts):
    """The first test host, reset and deployed (a running xCAT container for copycds)."""
    host = test_hosts[0]
    lab.reset_host(host)
    proc = fab(lab, [host], "deploy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return host


# -------------------------------------------------------------------- tests
def test_stage_copycds_and_a_rerun_that_changes_nothing(lab, deployed, isos, ssh_run, docker_on):
    host = deployed
    cfg = lab.host(host)
    iso, digest = isos["small"]
    with EgressCounter(lab, [host], COUNTER_TAG) as egress:
        proc = fab(lab, [host], "iso", "--src", str(iso))
        first_sent = egress.read()[host]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert first_sent >= iso.stat().st_size  # (the counter sees what goes to the host)
    assert recap(proc, host) == {"ok": 2, "changed": 1, "failed": 0}
    assert remote_sha(ssh_run, host, cfg.iso_dir / iso.name) == digest
    assert listing(ssh_run, host, cfg.iso_dir) == [iso.name]  # no .part left
    # copycds copied the tree into /install/<distro>/<arch> (data_dir/install on the host) ...
    tree = cfg.data_dir / "install" / "rocky9.4" / "x86_64"
    assert ssh_run(host, f"head -n 2 {tree}/.discinfo").stdout.splitlines()[1] == "Rocky Linux 9.4"
    assert ssh_run(host, f"stat -c %s {tree}/Packages/payload.rpm").stdout.strip() == str(2 * MIB)
    # ... and created the osimages, as xCAT itself lists them.
    osimages = docker_on(host, "exec", "xcatmn", "sh", "-c", ". /etc/profile.d/xcat.sh; lsdef -t osimage").stdout
    for method in ("install", "netboot", "statelite"):
        assert f"rocky9.4-x86_64-{method}-compute  (osimage)" in osimages
    assert "rocky9.4 x86_64 -> /install/rocky9.4/x86_64; osimages created: rocky9.4-x86_64-install-compute" \
        in proc.stdout

    # A rerun sends nothing, changes nothing, and reports changed=0.
    before = lab.snapshot(host)
    with EgressCounter(lab, [host], COUNTER_TAG) as egress:
        again = fab(lab, [host], "iso", "--src", str(iso))
        sent = egress.read()[host]
    assert again.returncode == 0, again.stdout + again.stderr
    assert recap(again, host) == {"ok": 2, "changed": 0, "failed": 0}
    assert sent < 256 * 1024, f"a converged run sent {sent} bytes"  # the fact script, not the ISO
    after = lab.snapshot(host)
    assert after["files"] == before["files"]
    started = [(c["Id"], c["State"]["StartedAt"]) for c in before["containers"]]
    assert [(c["Id"], c["State"]["StartedAt"]) for c in after["containers"]] == started

    # Without xcatfab's record the file is hashed where it lies, not sent again.
    record = cfg.xcatfab_state_dir / "iso" / (iso.name + ".sha256")
    ssh_run(host, f"rm {record}")
    with EgressCounter(lab, [host], COUNTER_TAG) as egress:
        check = fab(lab, [host], "iso", "--src", str(iso))
        sent = egress.read()[host]
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"hash {iso.name} on the host (no record of it)" in check.stdout
    assert sent < 256 * 1024
    assert ssh_run(host, f"cat {record}").stdout.split()[0] == digest

    # The same ISO listed in the inventory: deploy runs the iso step, which finds it staged and copied.
    spec = f"isos={iso} sha256={digest} distro=rocky9.4 arch=x86_64"
    deploy = fab(lab, [host], "deploy", "--set", spec)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert "ok: [iso]" in deploy.stdout
    assert recap(deploy, host)["changed"] == 0


def test_copycds_without_a_loop_device_is_a_clear_error(lab, deployed, isos, ssh_run, docker_on):
    host = deployed
    iso, digest = isos["other"]
    docker_on(host, "exec", "xcatmn", "sh", "-c", "rm -f /dev/loop[0-9]*")
    try:
        # (xcatfab makes loop devices from the host before copycds: none here, so it has none.)
        proc = fab(lab, [host], "iso", "--src", str(iso), "--set", "loop_devices=0")
    finally:
        docker_on(host, "restart", "xcatmn")  # the entrypoint creates the loop devices again
    assert proc.returncode == 1
    error = [line for line in proc.stdout.splitlines() if "failed: [iso]" in line]
    assert len(error) == 1, proc.stdout
    assert f"{host}: copycds {iso.name}: no usable loop device in container xcatmn" in error[0]
    # The ISO itself was staged and verified; only copycds is left to do.
    assert remote_sha(ssh_run, host, lab.host(host).iso_dir / iso.name) == digest


def test_interrupted_upload_resumes_with_the_remainder(lab, test_hosts, isos, ssh_run):
    host = test_hosts[1]
    lab.reset_host(host)
    cfg = lab.host(host)
    iso, digest = isos["big"]
    part = cfg.iso_dir / (iso.name + ".part")
    # Slowed down so it can be stopped midway; killed like a lost laptop: the whole process group.
    first = subprocess.Popen([FAB, "-H", host, "iso", "--src", str(iso), "--no-copycds", "--bwlimit", "16",
                              "--inventory", str(lab.inventory)], cwd=ROOT, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_size(ssh_run, host, part, 24 * MIB, first)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # The host's side notices the end of its input and keeps the part; wait until it has exited.
    # ("[r]eceive" matches the relay program's argv, never this pgrep's own command line.)
    deadline = time.monotonic() + 30
    while (ssh_run(host, f"pgrep -f '[r]eceive {cfg.iso_dir} ' || true").stdout.strip()
           and time.monotonic() < deadline):
        time.sleep(0.1)
    kept = int(ssh_run(host, f"stat -c %s {part}").stdout)
    assert 0 < kept < iso.stat().st_size
    assert iso.name not in listing(ssh_run, host, cfg.iso_dir)

    with EgressCounter(lab, [host], COUNTER_TAG) as egress:
        proc = fab(lab, [host], "iso", "--src", str(iso), "--no-copycds")
        sent = egress.read()[host]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    remainder = iso.stat().st_size - kept
    assert remainder * 0.98 < sent < remainder * 1.05 + MIB, (sent, remainder)
    assert f"resumed after {kept / MIB:.1f} MiB" in proc.stdout
    assert remote_sha(ssh_run, host, cfg.iso_dir / iso.name) == digest
    assert listing(ssh_run, host, cfg.iso_dir) == [iso.name]


def test_a_wrong_checksums_file_is_refused_before_any_host_and_costs_no_verified_iso(lab, test_hosts, isos,
                                                                                      ssh_run, tmp_path):
    """Issue 12: a wrong --checksums file is found before anything connects (exit 2, one line naming both
    sums), and the correctly staged, verified ISO on the host is left exactly as it was."""
    host = test_hosts[1]
    cfg = lab.host(host)
    iso, digest = isos["other"]
    staged = fab(lab, [host], "iso", "--src", str(iso), "--no-copycds")
    assert staged.returncode == 0, staged.stdout + staged.stderr
    record = cfg.xcatfab_state_dir / "iso" / (iso.name + ".sha256")
    before = ssh_run(host, f"stat -c '%s %Y %i' {cfg.iso_dir / iso.name}; cat {record}").stdout
    wrong = hashlib.sha256(b"not this iso").hexdigest()
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{wrong}  {iso.name}\n")
    with EgressCounter(lab, [host], COUNTER_TAG) as egress:
        proc = fab(lab, [host], "iso", "--src", str(iso), "--checksums", str(sums), "--no-copycds")
        sent = egress.read()[host]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip() == (f"xcatfab: {sums}: {iso}: sha256 is {digest}, not {wrong} as the checksums "
                                   "file says: wrong sum or wrong file; nothing was sent")
    assert proc.stdout == "" and sent == 0  # not even a connection
    assert ssh_run(host, f"stat -c '%s %Y %i' {cfg.iso_dir / iso.name}; cat {record}").stdout == before
    assert remote_sha(ssh_run, host, cfg.iso_dir / iso.name) == digest


def test_full_disk_is_a_clear_error_and_removes_the_part(lab, test_hosts, isos, ssh_run):
    host = test_hosts[2]
    lab.reset_host(host)
    cfg = lab.host(host)
    iso, _digest = isos["big"]
    size = iso.stat().st_size
    part = cfg.iso_dir / (iso.name + ".part")

    # Too small from the start: refused before a byte of the ISO is sent.
    with tmpfs_at(ssh_run, host, cfg.iso_dir, "32m"):
        with EgressCounter(lab, [host], COUNTER_TAG) as egress:
            proc = fab(lab, [host], "iso", "--src", str(iso), "--no-copycds")
            sent = egress.read()[host]
        assert proc.returncode == 1
        assert re.search(rf"failed: \[iso\] {host}: {re.escape(iso.name)}: no space: {cfg.iso_dir} has \d+ "
                         rf"bytes free, {size} more needed", proc.stdout), proc.stdout
        assert sent < MIB
        assert listing(ssh_run, host, cfg.iso_dir) == []

    # Full midway: the disk fills up while the ISO arrives.
    with tmpfs_at(ssh_run, host, cfg.iso_dir, f"{BIG_MIB + 32}m"):
        run = subprocess.Popen([FAB, "-H", host, "iso", "--src", str(iso), "--no-copycds", "--bwlimit", "32",
                                "--inventory", str(lab.inventory)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        wait_for_size(ssh_run, host, part, 16 * MIB, run)
        ssh_run(host, f"dd if=/dev/zero of={cfg.iso_dir}/filler bs=1M 2>/dev/null || true")
        output, _ = run.communicate(timeout=120)
        assert run.returncode == 1, output
        assert re.search(rf"failed: \[iso\] {host}: {re.escape(iso.name)}: no space left in {cfg.iso_dir} "
                         rf"after \d+ of {size} bytes", output), output
        assert listing(ssh_run, host, cfg.iso_dir) == ["filler"]  # the part is gone


def test_relay_to_three_hosts_sends_each_iso_once(lab, test_hosts, isos, ssh_run):
    for host in test_hosts[1:]:
        lab.reset_host(host)
    ssh_run(test_hosts[0], f"rm -rf {lab.host(test_hosts[0]).iso_dir}/* "
                           f"{lab.host(test_hosts[0]).xcatfab_state_dir}/iso")
    iso, digest = isos["big"]
    size = iso.stat().st_size
    before = {h: received_bytes(lab, h) for h in test_hosts}
    with EgressCounter(lab, test_hosts, COUNTER_TAG) as egress:
        proc = fab(lab, test_hosts, "iso", "--src", str(iso), "--no-copycds")
        sent = egress.read()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in test_hosts:
        assert recap(proc, host)["changed"] == 1
        assert remote_sha(ssh_run, host, lab.host(host).iso_dir / iso.name) == digest
        # Every host did get the bytes, whoever sent them.
        assert received_bytes(lab, host) - before[host] >= size
    total = sum(sent.values())
    assert total <= 1.1 * size, f"controller sent {total} bytes for a {size}-byte ISO to {len(test_hosts)} hosts"
    assert sent[test_hosts[0]] >= size  # the chain's head got it from the controller ...
    for host in test_hosts[1:]:
        assert sent[host] < 4 * MIB  # ... the others from the host before them
    assert f"{test_hosts[1]} | staged {iso.name}" in proc.stdout
    assert f"relayed from {test_hosts[0]}" in proc.stdout
    assert "sent from the controller via tcp" in proc.stdout  # iso_transport's default
    assert "warning" not in proc.stdout


def test_a_host_the_relay_cannot_reach_gets_it_from_a_host_that_holds_it(lab, test_hosts, isos, ssh_run):
    """The second host cannot reach the third (a firewall between hosts): the third gets the ISO from the
    first, which holds it verified, not from the controller (issue 12: route around a broken link)."""
    first, second, third = test_hosts
    for host in test_hosts:
        h = lab.host(host)
        ssh_run(host, f"rm -rf {h.iso_dir}/* {h.xcatfab_state_dir}/iso")
    # The third host takes SSH from anyone but nothing else from the second.
    block = f"INPUT -s {lab.host(second).ip} -p tcp ! --dport 22 -j REJECT -m comment --comment {COUNTER_TAG}"
    ssh_run(third, f"iptables -w -I {block}")
    try:
        iso, digest = isos["big"]
        size = iso.stat().st_size
        with EgressCounter(lab, test_hosts, COUNTER_TAG) as egress:
            proc = fab(lab, test_hosts, "iso", "--src", str(iso), "--no-copycds")
            sent = egress.read()
    finally:
        ssh_run(third, f"iptables -w -D {block}", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in test_hosts:
        assert remote_sha(ssh_run, host, lab.host(host).iso_dir / iso.name) == digest
    warnings = [line for line in proc.stdout.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"{third} | warning: {iso.name} did not arrive through "
                                                         f"{second} ({second}: cannot connect to "), warnings
    assert warnings[0].endswith(f"sending it from {first}")
    assert f"{third} | staged {iso.name}" in proc.stdout and f"relayed from {first}" in proc.stdout
    assert sent[first] >= size  # the controller sent it once, to the first host ...
    assert sent[second] < 4 * MIB and sent[third] < 4 * MIB  # ... and the others got it from hosts


def test_a_dead_host_in_the_relay_fails_alone(lab, test_hosts, isos, ssh_run):
    """The middle host dies mid-transfer (its receiver killed): it fails with one line, and the host after
    it gets the ISO from the first host, which holds it verified (issue 12)."""
    first, second, third = test_hosts
    for host in test_hosts:
        h = lab.host(host)
        ssh_run(host, f"rm -rf {h.iso_dir}/* {h.xcatfab_state_dir}/iso")
    iso, digest = isos["big"]
    part = lab.host(second).iso_dir / (iso.name + ".part")
    with EgressCounter(lab, test_hosts, COUNTER_TAG) as egress:
        run = subprocess.Popen([FAB, "-H", ",".join(test_hosts), "iso", "--src", str(iso), "--no-copycds",
                                "--bwlimit", "32", "--inventory", str(lab.inventory)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for_size(ssh_run, second, part, 16 * MIB, run)
        ssh_run(second, f"pkill -9 -f '[r]eceive {lab.host(second).iso_dir} '")
        output, _ = run.communicate(timeout=300)
        sent = egress.read()
    assert run.returncode == 1, output
    assert "Traceback" not in output
    failed = [line for line in output.splitlines() if "failed: [iso]" in line]
    assert len(failed) == 1 and failed[0].startswith(f"{second} | failed: [iso] {second}: {iso.name}: "), failed
    for host in (first, third):
        assert remote_sha(ssh_run, host, lab.host(host).iso_dir / iso.name) == digest
    assert f"{third} | warning: {iso.name} did not arrive through {second}" in output
    assert f"relayed from {first}" in output
    assert sent[third] < 4 * MIB  # from the first host, not from the controller


def test_a_stalled_host_fails_with_one_line_and_the_others_go_on(lab, test_hosts, isos, ssh_run):
    """The middle host vanishes from the network mid-transfer (every packet dropped, SSH included): the
    first host drops it after the stall limit, the controller gives up on it, the third gets the ISO
    anyway (issue 12: time limits on the data legs)."""
    first, second, third = test_hosts
    for host in test_hosts:
        h = lab.host(host)
        ssh_run(host, f"rm -rf {h.iso_dir}/* {h.xcatfab_state_dir}/iso")
    iso, digest = isos["big"]
    part = lab.host(second).iso_dir / (iso.name + ".part")
    env = dict(os.environ, XCATFAB_ISO_STALL_SECONDS="3")
    rules = [["INPUT", "-j", "DROP", "-m", "comment", "--comment", COUNTER_TAG],
             ["OUTPUT", "-j", "DROP", "-m", "comment", "--comment", COUNTER_TAG]]
    run = subprocess.Popen([FAB, "-H", ",".join(test_hosts), "iso", "--src", str(iso), "--no-copycds",
                            "--bwlimit", "32", "--inventory", str(lab.inventory)], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_size(ssh_run, second, part, 16 * MIB, run)
        for rule in rules:
            lab.host(second).in_netns("iptables", "-w", "-I", *rule)
        output, _ = run.communicate(timeout=300)
    finally:
        for rule in rules:
            lab.host(second).in_netns("iptables", "-w", "-D", *rule, check=False)
    assert run.returncode == 1, output
    assert "Traceback" not in output
    failed = [line for line in output.splitlines() if "failed: [iso]" in line]
    assert len(failed) == 1 and failed[0].startswith(f"{second} | failed: [iso] {second}: {iso.name}: "), failed
    for host in (first, third):
        assert remote_sha(ssh_run, host, lab.host(host).iso_dir / iso.name) == digest


def test_ctrl_c_says_what_is_kept_and_how_to_resume(lab, test_hosts, isos, ssh_run):
    """Ctrl-C mid-transfer: exit 130, the host's note names the .part kept (how much) and the command
    that resumes; the part is on the host with that size (issue 12)."""
    host = test_hosts[1]
    lab.reset_host(host)
    cfg = lab.host(host)
    iso, digest = isos["big"]
    part = cfg.iso_dir / (iso.name + ".part")
    # 4 MiB/s and a third of the ISO at most before the interrupt: seconds of transfer are left when
    # SIGINT arrives. fab gets SIGINT's default disposition, as from a terminal: a suite started in
    # the background by a shell inherits SIGINT ignored, and Python then keeps ignoring it (in two
    # fresh-clone runs the transfer went on to the end and exited 0).
    run = subprocess.Popen([FAB, "-H", host, "iso", "--src", str(iso), "--no-copycds", "--bwlimit", "4",
                            "--inventory", str(lab.inventory)], cwd=ROOT, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_size(ssh_run, host, part, min(8 * MIB, iso.stat().st_size // 3), run)
    os.killpg(run.pid, signal.SIGINT)  # what a terminal sends to the foreground process group
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 130, output
    assert "Traceback" not in output
    kept = int(ssh_run(host, f"stat -c %s {part}").stdout)
    assert 0 < kept < iso.stat().st_size
    note = (f"{host} | interrupted while staging {iso.name}: {iso.name}.part kept on the host "
            f"({kept / MIB:.1f} MiB of {iso.stat().st_size / MIB:.1f} MiB, resumable); "
            f"to resume: fab -H {host} iso --src {iso}")
    assert note in output.splitlines(), output
    resumed = fab(lab, [host], "iso", "--src", str(iso), "--no-copycds")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed after {kept / MIB:.1f} MiB" in resumed.stdout
    assert remote_sha(ssh_run, host, cfg.iso_dir / iso.name) == digest


def test_a_connection_lost_mid_transfer_is_one_line(lab, test_hosts, isos, ssh_run):
    """The host's end of xcatfab's SSH connection dies mid-transfer: one line naming host and step."""
    host = test_hosts[1]
    lab.reset_host(host)
    cfg = lab.host(host)
    iso, _digest = isos["big"]
    part = cfg.iso_dir / (iso.name + ".part")
    run = subprocess.Popen([FAB, "-H", host, "iso", "--src", str(iso), "--no-copycds", "--bwlimit", "16",
                            "--inventory", str(lab.inventory)], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_size(ssh_run, host, part, 16 * MIB, run)
    # The receiver's parent is the sshd process of xcatfab's connection: kill that one.
    receiver = ssh_run(host, f"pgrep -f '[r]eceive {cfg.iso_dir} '").stdout.split()[0]
    session = ssh_run(host, f"ps -o ppid= -p {receiver}").stdout.strip()
    ssh_run(host, f"kill -9 {session}")
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 1, output
    assert "Traceback" not in output
    failed = [line for line in output.splitlines() if "failed: [iso]" in line]
    assert len(failed) == 1, output
    assert re.fullmatch(rf"{host} \| failed: \[iso\] {host}: {re.escape(iso.name)}: the SSH connection to the "
                        r"host was lost \(\d+\.\ds\)", failed[0]), failed[0]


def test_a_rerun_of_several_hosts_pulls_from_the_host_that_holds_it(lab, test_hosts, isos, ssh_run):
    """`fab -H a,b iso` where a already holds the verified ISO: b takes it from a, not the controller."""
    first, second = test_hosts[1], test_hosts[2]
    for host in (first, second):
        h = lab.host(host)
        ssh_run(host, f"rm -rf {h.iso_dir}/* {h.xcatfab_state_dir}/iso")
    iso, digest = isos["big"]
    staged = fab(lab, [first], "iso", "--src", str(iso), "--no-copycds")
    assert staged.returncode == 0, staged.stdout + staged.stderr
    with EgressCounter(lab, [first, second], COUNTER_TAG) as egress:
        proc = fab(lab, [first, second], "iso", "--src", str(iso), "--no-copycds")
        sent = egress.read()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert recap(proc, first)["changed"] == 0 and recap(proc, second)["changed"] == 1
    assert f"{second} | staged {iso.name}" in proc.stdout and f"relayed from {first}" in proc.stdout
    assert sent[second] < 4 * MIB and sent[first] < 4 * MIB
    assert remote_sha(ssh_run, second, lab.host(second).iso_dir / iso.name) == digest


def test_iso_transport_ssh_keeps_every_byte_inside_ssh(lab, test_hosts, isos, ssh_run):
    """iso_transport=ssh: each host gets the ISO from the controller over its own SSH connection."""
    hosts = test_hosts[1:]
    for host in hosts:
        h = lab.host(host)
        ssh_run(host, f"rm -rf {h.iso_dir}/* {h.xcatfab_state_dir}/iso")
    iso, digest = isos["small"]
    with EgressCounter(lab, hosts, COUNTER_TAG) as egress:
        proc = fab(lab, hosts, "iso", "--src", str(iso), "--no-copycds", "--set", "iso_transport=ssh")
        sent = egress.read()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in hosts:
        assert f"{host} | staged {iso.name}" in proc.stdout
        assert remote_sha(ssh_run, host, lab.host(host).iso_dir / iso.name) == digest
        assert sent[host] >= iso.stat().st_size  # from the controller, not relayed
    assert proc.stdout.count("sent from the controller via openssh") == len(hosts)


def test_deploy_of_several_hosts_pulls_from_a_host_that_has_it(lab, test_hosts, isos, ssh_run):
    """The ISO step's staging as a deploy runs it, host after host (what ``fab -H a,b deploy`` does for
    each host in turn), called in-process to isolate it from the other steps: the second host takes
    the ISO from the first, which the controller's egress counter (the kernel's) shows."""
    from tasks.ops.deploy import DeployOptions
    from tasks.runtime.config import IsoSpec
    from tasks.runtime.hostrun import HostRun
    from tasks.runtime.inventory import load_hosts
    from tasks.runtime.report import Output
    from tasks.runtime.ssh import connect
    from tasks.steps.iso.delivery import IsoOptions, stage
    from tasks.steps.iso.local import validate_local

    first, second = test_hosts[1], test_hosts[2]
    for host in (first, second):
        h = lab.host(host)
        ssh_run(host, f"rm -rf {h.iso_dir}/* {h.xcatfab_state_dir}/iso")
    iso, digest = isos["big"]
    [local] = validate_local([IsoSpec(str(iso))])
    options = DeployOptions()
    with EgressCounter(lab, [first, second], COUNTER_TAG) as egress:
        for cfg in load_hosts(str(lab.inventory), names=[first, second]):
            run = HostRun(cfg, connect(cfg, options.connect), out=Output(), connect_options=options.connect)
            try:
                assert stage(run, local, IsoOptions(isos=[local], copycds=False)) == digest
            finally:
                run.remote.close()
        sent = egress.read()
    for host in (first, second):
        assert remote_sha(ssh_run, host, lab.host(host).iso_dir / iso.name) == digest
    assert sent[first] >= iso.stat().st_size
    assert sent[second] < 4 * MIB
