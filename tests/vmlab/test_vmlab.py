"""Smoke tests of the VM lab itself: real VMs, checked with plain ssh, ``ip -j`` and ``systemctl``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.labkit.vm.config import CONTROLLER_IP, PREFIX

from .conftest import FIRST_BOOT


def _ssh_with_known_hosts(vmlab, vm: str, known_hosts: Path) -> subprocess.CompletedProcess:
    """``ssh vm hostname`` with the lab's config but another known_hosts file."""
    return subprocess.run(["ssh", "-F", str(vmlab.ssh_config), "-o", f"UserKnownHostsFile={known_hosts}",
                           vm, "hostname"], capture_output=True, text=True, timeout=60)


def test_each_vm_answers_with_its_own_host_key(vmlab, vm_names, vm_ssh, tmp_path):
    keys = {}
    for vm in vm_names:
        assert vm_ssh(vm, "hostname").stdout.strip() == vm
        keys[vm] = vm_ssh(vm, "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
        listed = [line.split()[2] for line in vmlab.known_hosts.read_text().splitlines()
                  if line.split()[0].split(",")[0] == vm]
        assert listed == [keys[vm]], "known_hosts must hold the key the VM serves"
    assert len(set(keys.values())) == len(keys), f"VMs share a host key: {keys}"
    # Strict checking is real: vm1 under another VM's key is refused.
    if len(vm_names) > 1:
        wrong = tmp_path / "known_hosts"
        ip = vmlab.host(vm_names[0]).ip
        wrong.write_text(f"{vm_names[0]},{ip} ssh-ed25519 {keys[vm_names[1]]}\n")
        proc = _ssh_with_known_hosts(vmlab, vm_names[0], wrong)
        assert proc.returncode != 0 and "HOST IDENTIFICATION HAS CHANGED" in proc.stderr, proc.stderr


def test_systemd_is_running(vm_names, vm_ssh):
    for vm in vm_names:
        state = vm_ssh(vm, "systemctl is-system-running --wait", check=False, timeout=300).stdout.strip()
        assert state == "running", vm_ssh(vm, "systemctl --failed --no-legend", check=False).stdout
        assert vm_ssh(vm, "cat /proc/1/comm").stdout.strip() == "systemd"


def test_eth0_has_its_static_address_from_its_netplan_file(vmlab, vm_names, vm_ssh):
    for vm in vm_names:
        host = vmlab.host(vm)
        netplan = vm_ssh(vm, "cat /etc/netplan/01-eth0.yaml").stdout
        assert f'"{host.ip}/{PREFIX}"' in netplan and "renderer: networkd" in netplan
        link = json.loads(vm_ssh(vm, "ip -j addr show dev eth0").stdout)[0]
        inet = [(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["family"] == "inet"]
        assert inet == [(host.ip, PREFIX)]
        assert link["address"] == host.mac
        routes = json.loads(vm_ssh(vm, "ip -j -4 route show default").stdout)
        assert [(r["gateway"], r["dev"]) for r in routes] == [(CONTROLLER_IP, "eth0")]
        status = vm_ssh(vm, "networkctl status eth0").stdout
        assert "10-netplan-eth0.network" in status, status


def test_docker_is_not_installed(vm_names, vm_ssh):
    for vm in vm_names:
        assert vm_ssh(vm, "command -v docker dockerd", check=False).returncode != 0
        installed = vm_ssh(vm, "dpkg-query -W -f='${db:Status-Status}' docker.io", check=False).stdout
        assert installed != "installed"


def test_apt_uses_only_the_lab_repository_and_resolves_docker_from_it(vmlab, vm_names, vm_ssh):
    vm = vm_names[-1]  # not vm1 (unless it is the only one): the deploy from bare starts from it
    FIRST_BOOT.discard(vm)  # apt's state changes here: not "as vmlab.up made it" any more
    sources = vm_ssh(vm, "grep -rhv '^[[:space:]]*\\(#\\|$\\)' /etc/apt/sources.list /etc/apt/sources.list.d/ "
                         "|| true").stdout.splitlines()
    assert sources == [f"deb [signed-by=/etc/apt/keyrings/xcatfab-vmlab.asc] {vmlab.repo_url}/debian bookworm main"]
    try:
        vm_ssh(vm, "apt-get update -q", timeout=300)
        out = vm_ssh(vm, "apt-get install --download-only -y -q docker.io", timeout=600).stdout
        assert "Download complete and in download only mode" in out, out
        policy = vm_ssh(vm, "apt-cache policy docker.io").stdout
        assert f"{vmlab.repo_url}/debian bookworm/main amd64 Packages" in policy, policy
        assert vm_ssh(vm, "ls /var/cache/apt/archives/ | grep -c '^docker.io_.*\\.deb$'").stdout.strip() == "1"
    finally:
        # Back to bare: no package lists, no downloaded packages.
        vm_ssh(vm, "apt-get clean && rm -rf /var/lib/apt/lists/*")


def test_sudo_user_works_with_its_password(vmlab, vm_names, vm_ssh):
    password = vmlab.admin_password_file.read_text().strip()
    assert oct(vmlab.admin_password_file.stat().st_mode & 0o777) == "0o600"
    vm = vm_names[-1]
    user = vmlab.admin_user
    assert vm_ssh(vm, "id -un", user=user).stdout.strip() == user
    # -k: no cached credential; the password on stdin, never on a command line.
    ok = vm_ssh(vm, "sudo -k -S -p '' id -u", user=user, input=password + "\n")
    assert ok.stdout.strip() == "0"
    refused = vm_ssh(vm, "sudo -k -n id -u", user=user, check=False)
    assert refused.returncode != 0 and "password is required" in refused.stderr
    wrong = vm_ssh(vm, "sudo -k -S -p '' id -u", user=user, input="not-the-password\n", check=False)
    assert wrong.returncode != 0


def test_status_reports_every_vm_running(vmlab, vm_names):
    from tests.labkit.vm import vmlab_status

    status = vmlab_status()
    assert status["up"], status
    for vm in vm_names:
        entry = status["hosts"][vm]
        assert entry["pid"] == vmlab.pid(vm) and entry["ssh"] == vm and entry["systemd"] == "running"
