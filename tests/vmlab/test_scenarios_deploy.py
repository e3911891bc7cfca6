"""Issue 14's production path on a real (virtual) host: deploy from bare, copycds, teardown, rollback, sudo.

Each scenario drives the real `fab` against the VM lab's inventory and checks
the VM around xcatfab: plain OpenSSH, ``ip -j``, ``systemctl``, ``journalctl``,
``docker inspect`` on the VM, TCP from the controller. They run on vm1, in this
order, reusing its states (see :mod:`tests.vmlab.scenario`).
"""

from __future__ import annotations

import json
import time

import pytest

from tests.lab.test_iso import make_iso

from .scenario import changed, counts

VM = "vm1"
#: A daemon.json key of the admin's, to see the merge and the systemd restart.
DAEMON_JSON = '{"log-opts": {"max-size": "10m"}}'
TIMER = "xcatfab-bridge-rollback.timer"


def test_from_bare_with_the_defaults(scenarios, vmlab):
    s = scenarios
    s.fresh(VM)
    # docker: apt-get install docker.io from the lab repository, daemon.json merged, restart by systemd.
    docker = s.fab_ok(VM, "docker", "--set", f"docker_daemon_json={DAEMON_JSON}")
    assert f"{VM} | changed: [docker]" in docker.stdout
    assert s.ssh(VM, "dpkg-query -W -f='${db:Status-Status}' docker.io").stdout == "installed"
    assert "Commandline: apt-get install -y -q docker.io" in s.ssh(VM, "cat /var/log/apt/history.log").stdout
    assert s.ssh(VM, "systemctl is-active docker").stdout.strip() == "active"
    assert json.loads(s.ssh(VM, "cat /etc/docker/daemon.json").stdout)["log-opts"] == {"max-size": "10m"}
    assert s.journal(VM, "Stopping docker.service"), "daemon.json was not followed by a restart through systemd"
    assert len(s.journal(VM, "Started docker.service")) >= 2
    # The lab preset's FROM image (a site pulls it from its registry), then the image built on the VM.
    s.import_base_image(VM)
    image = s.fab_ok(VM, "image")
    assert f"{VM} | changed: [image]" in image.stdout
    s.save_image_ready(VM)  # the later scenarios start here

    first = s.fab_ok(VM, "deploy")
    for step in ("bridge", "container"):
        assert f"{VM} | changed: [{step}]" in first.stdout, first.stdout
    assert counts(first, VM)[0] == 1, "the session that moved the address must survive"
    # The rollback was armed as a transient systemd timer, and stopped (not fired) once confirmed.
    timer = s.journal(VM, TIMER)
    assert any(f"Started {TIMER}" in line for line in timer), timer
    assert any(f"Stopped {TIMER}" in line for line in timer), timer
    assert not s.journal(VM, "Started xcatfab-bridge-rollback.service")
    assert "mydocker0:" in s.ssh(VM, "cat /etc/netplan/90-xcatfab-mydocker0.yaml").stdout
    assert s.holders(VM) == ["mydocker0"] and s.default_routes(VM) == ["mydocker0"]
    ctr = s.container(VM)
    assert ctr["State"]["Running"] and ctr["HostConfig"]["Privileged"] is True
    ips = [n["IPAddress"] for n in ctr["NetworkSettings"]["Networks"].values()]
    assert ips == [vmlab.host(VM).container_ip]
    assert "xcatd" in s.xcatd_answers(VM)

    second = s.fab_ok(VM, "deploy")
    assert changed(second, VM) == 0 and counts(second, VM) == (1, 1), second.stdout
    s.mark_deployed(VM)


def test_real_copycds_mounts_the_iso_through_a_loop_device(scenarios, tmp_path):
    s = scenarios
    s.deployed(VM)
    iso, _digest = make_iso(tmp_path, "Rocky-9.4-x86_64-vmlab.iso", 2)
    before = len(s.ssh(VM, "dmesg").stdout.splitlines())
    proc = s.fab_ok(VM, "iso", "--src", str(iso))
    tree = "/xcatdata/install/rocky9.4/x86_64"
    assert s.ssh(VM, f"sed -n 2p {tree}/.discinfo").stdout.strip() == "Rocky Linux 9.4", proc.stdout
    osimages = s.ssh(VM, "docker exec xcatmn sh -c '. /etc/profile.d/xcat.sh; lsdef -t osimage'").stdout
    assert "rocky9.4-x86_64-install-compute  (osimage)" in osimages
    s.mark_deployed(VM)
    # The VM's kernel mounted an ISO 9660 filesystem during copycds (through a loop device).
    kernel = "\n".join(s.ssh(VM, "dmesg").stdout.splitlines()[before:])
    assert "ISO 9660 Extensions" in kernel, kernel


@pytest.mark.vmlab_full
def test_teardown_restore_network_then_reboot(scenarios, vmlab):
    s = scenarios
    s.deployed(VM)
    s.fab_ok(VM, "teardown", "--restore-network")
    vmlab.reboot(VM, timeout=240)
    assert s.holders(VM) == ["eth0"] and "mydocker0" not in s.addresses(VM)
    assert s.default_routes(VM) == ["eth0"]
    assert s.ssh(VM, "ls /etc/netplan").stdout.split() == ["01-eth0.yaml"]
    assert s.container(VM) == {}
    leftovers = s.ssh(VM, "systemctl list-units --all --no-legend 'xcatfab*'; "
                          "systemctl list-timers --all --no-legend 'xcatfab*'; "
                          "ls /etc/systemd/system /run/systemd/transient | grep xcatfab || true").stdout
    # The VM lab's own first-boot unit is not xcatfab's.
    leftovers = "\n".join(line for line in leftovers.splitlines() if "xcatfab-vmlab-" not in line)
    assert leftovers.strip() == "", leftovers


def test_rollback_by_the_systemd_timer(scenarios, vmlab):
    """A firewall that drops everything arriving on the new bridge cuts xcatfab off; the
    transient systemd timer on the VM puts the address back on eth0."""
    s = scenarios
    s.image_ready(VM)
    s.ssh(VM, "iptables -I INPUT -i mydocker0 -j DROP")
    started = time.monotonic()
    proc = s.fab(VM, "bridge", "--set", "rollback_seconds=30")
    took = time.monotonic() - started
    if "rolled it back" not in proc.stdout:  # say what the VM did, if it answers at all
        vmlab.wait_ssh(VM, 120)
        pytest.fail(proc.stdout + proc.stderr + "\nVM journal:\n" + "\n".join(s.journal(VM, "xcatfab")))
    assert proc.returncode != 0
    assert took >= 30
    assert s.journal(VM, f"Started {TIMER}")
    assert s.journal(VM, "xcatfab-bridge-rollback.service: (Deactivated successfully|Succeeded)"), \
        s.journal(VM, "xcatfab-bridge-rollback")
    assert s.holders(VM) == ["eth0"] and "mydocker0" not in s.addresses(VM)
    assert s.default_routes(VM) == ["eth0"]
    assert s.ssh(VM, "ls /etc/netplan").stdout.split() == ["01-eth0.yaml"]


@pytest.mark.vmlab_full
def test_sudo_user_with_a_password_deploys(scenarios, vmlab):
    s = scenarios
    s.image_ready(VM)
    password = vmlab.admin_password_file.read_text().strip()
    user = vmlab.admin_user
    proc = s.fab_ok(VM, "deploy", "--set", f"user={user}", env={"XCATFAB_SUDO_PASSWORD": password})
    assert f"{VM} | changed: [bridge]" in proc.stdout
    assert password not in proc.stdout + proc.stderr
    # Real sudo on the VM: its own /etc/sudoers (group sudo), asked for the password.
    assert s.journal(VM, f"sshd.*Accepted publickey for {user}")
    assert s.journal(VM, f"sudo.*{user} : .*USER=root")
    assert not s.journal(VM, password)
    ctr = s.container(VM)
    assert ctr["State"]["Running"] and ctr["HostConfig"]["Privileged"] is True
    assert "xcatd" in s.xcatd_answers(VM)
    s.mark_deployed(VM)


