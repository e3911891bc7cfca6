"""Issue 14's production path on a real (virtual) host: from bare (a power loss, a sudo user), copycds.

Each scenario drives the real `fab` against the VM lab's inventory and checks
the VM around xcatfab: plain OpenSSH, ``ip -j``, ``systemctl``, ``journalctl``,
``docker inspect`` on the VM, TCP from the controller. They run on vm1, in this
order, reusing its states (see :mod:`tests.vmlab.scenario`).
"""

from __future__ import annotations

import json

from tests.lab.test_iso import make_iso

from .scenario import changed, counts

VM = "vm1"
#: A daemon.json key of the admin's, to see the merge and the systemd restart.
DAEMON_JSON = '{"log-opts": {"max-size": "10m"}}'
TIMER = "xcatfab-bridge-rollback.timer"


def test_from_bare_with_the_defaults_through_a_power_loss_during_apt(scenarios, vmlab):
    """From bare with the defaults a user gets, the first run cut by a power loss while dpkg
    installs docker.io (as a site's flaky PDU would): the VM comes back, the next run finishes
    the interrupted install, and the deploy goes on from there, by a non-root user with a sudo
    password, to xcatd answering; then root's deploy of the same host changes nothing."""
    s = scenarios
    s.fresh(VM)
    with s.watch(VM, "pgrep -x dpkg >/dev/null") as dpkg_running:
        cut = s.kill_when(VM, dpkg_running, ("docker",), "dpkg running on the VM")
    assert cut.returncode != 0
    s.boot_after_power_loss(VM)
    # docker: apt-get install docker.io from the lab repository, daemon.json merged, restart by systemd.
    docker = s.fab_ok(VM, "docker", "--set", f"docker_daemon_json={DAEMON_JSON}")
    assert f"{VM} | changed: [docker]" in docker.stdout
    assert s.ssh(VM, "dpkg --audit").stdout.strip() == "", "dpkg's database is left inconsistent"
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

    plan = s.fab_ok(VM, "deploy", "--plan")
    assert "/etc/netplan/01-eth0.yaml" in plan.stdout, "the plan must name the host's own netplan file:\n" \
        + plan.stdout
    # A non-root user with a sudo password deploys (real sudo, the VM's own /etc/sudoers).
    password = vmlab.admin_password_file.read_text().strip()
    user = vmlab.admin_user
    first = s.fab_ok(VM, "deploy", "--set", f"user={user}", env={"XCATFAB_SUDO_PASSWORD": password})
    for step in ("bridge", "container"):
        assert f"{VM} | changed: [{step}]" in first.stdout, first.stdout
    assert password not in first.stdout + first.stderr
    assert s.journal(VM, f"sshd.*Accepted publickey for {user}")
    assert s.journal(VM, f"sudo.*{user} : .*USER=root")
    assert password not in s.ssh(VM, "journalctl -b --no-pager").stdout
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

    second = s.fab_ok(VM, "deploy")  # as root: the same host, converged
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
