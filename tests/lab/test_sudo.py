"""A non-root sudo user (the lab's ``labadmin``) deploys and administers a lab host.

Every privileged step goes through sudo with the password on stdin, never on
a command line; a wrong password is one line naming the host and step, and
changes nothing. Checked independently: plain OpenSSH as root, the docker CLI
on the host's own socket, the lab's snapshot, and the machine's process table
(lab hosts share it) sampled while xcatfab runs.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.lab.fabrun import CmdlineSampler, fab, normalized, recap


@pytest.fixture(scope="module")
def sudo_host(lab, test_hosts, tmp_path_factory):
    """(host, inventory with user=labadmin for it, sudo password, snapshot before deploy), host reset."""
    name = test_hosts[-1]
    lab.reset_host(name, images=True)  # a bare host: no xCAT image either
    lines = lab.inventory.read_text().splitlines()
    host_line = next(line for line in lines if line.startswith(name + " "))
    start = lines.index("[lab:vars]")
    inventory = tmp_path_factory.mktemp("sudo") / "hosts.ini"
    inventory.write_text("\n".join(["[lab]", host_line + f" user={lab.admin_user}", ""] + lines[start:]) + "\n")
    password = lab.admin_password_file.read_text().strip()
    yield name, str(inventory), password, lab.snapshot(name)
    lab.reset_host(name)


def test_a_wrong_sudo_password_is_one_line_and_changes_nothing(lab, sudo_host):
    name, inv, _password, before = sudo_host
    wrong = "not-the-password-" + os.urandom(4).hex()
    proc = fab("-H", name, "deploy", "--inventory", inv, env={"XCATFAB_SUDO_PASSWORD": wrong},
               sampler=(sampler := CmdlineSampler()))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failures = [line for line in proc.stdout.splitlines() if "failed:" in line]
    assert failures == [f"{name} | failed: [connect] sudo failed for user {lab.admin_user}: wrong sudo password?"]
    assert recap(proc, name) == (0, 0, 1)
    assert "Traceback" not in proc.stderr and wrong not in proc.stdout + proc.stderr
    assert not [c for c in sampler.seen if wrong in c]
    assert lab.snapshot(name) == before
    # The admin tasks say the same, in their own way.
    status = fab("-H", name, "status", "--inventory", inv, env={"XCATFAB_SUDO_PASSWORD": wrong})
    assert status.returncode == 1 and "connect: sudo failed for user labadmin" in status.stdout
    node = fab("-H", name, "node", "cn01", "--bmc", "198.18.0.250", "--bmc-user", "ADMIN", "--inventory", inv,
               env={"XCATFAB_SUDO_PASSWORD": wrong, "XCATFAB_BMC_PASSWORD": "bmc-secret-1"})
    assert node.returncode == 1 and recap(node, name) == (0, 0, 1)
    assert lab.snapshot(name) == before


def test_no_sudo_password_at_all_is_a_clear_line(sudo_host):
    name, inv, _password, _before = sudo_host
    proc = fab("-H", name, "status", "--inventory", inv)
    assert proc.returncode == 1
    assert "needs a sudo password: use --prompt-for-sudo-password or set XCATFAB_SUDO_PASSWORD" in proc.stdout


def test_write_file_puts_a_root_owned_file_in_place_through_sudo(lab, sudo_host, ssh_run):
    from tasks.runtime.inventory import load_hosts
    from tasks.runtime.secret import Secret
    from tasks.runtime.ssh import ConnectOptions, connect

    name, inv, password, _before = sudo_host
    directory = f"{lab.host(name).xcatfab_state_dir}/sudo-write"
    ssh_run(name, f"install -d -m 700 -o root -g root {directory}")
    assert ssh_run(name, f"touch {directory}/x", user=lab.admin_user, check=False).returncode != 0
    cfg = load_hosts(inv, names=[name])[0]
    remote = connect(cfg, ConnectOptions(sudo_password=Secret(password)))
    try:
        assert remote.become and remote.sudo_needs_password
        # A first line that looks like a password, and every byte value: all of it must land.
        content = b"first line\n" + bytes(range(256)) + b"\nlast"
        remote.write_file(f"{directory}/file", content, mode=0o640)
    finally:
        remote.close()
    assert ssh_run(name, f"stat -c '%U %G %a' {directory}/file").stdout.split() == ["root", "root", "640"]
    digest = ssh_run(name, f"sha256sum {directory}/file").stdout.split()[0]
    import hashlib

    assert digest == hashlib.sha256(content).hexdigest()
    assert ssh_run(name, f"ls -A {directory}").stdout.split() == ["file"]  # no temp file left
    ssh_run(name, f"rm -rf {directory}")


def test_deploy_and_administer_as_a_sudo_user(lab, sudo_host, ssh_run, docker_on):
    name, inv, password, before = sudo_host
    h = lab.host(name)
    env = {"XCATFAB_SUDO_PASSWORD": password}
    proc = fab("-H", name, "deploy", "--inventory", inv, env=env, sampler=(sampler := CmdlineSampler()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert recap(proc, name)[2] == 0
    # Independently: the container runs with its address, the host's address is on the bridge,
    # the files xcatfab wrote are root's.
    assert docker_on(name, "inspect", "--format", "{{.State.Running}}", "xcatmn").stdout.strip() == "true"
    addrs = json.loads(ssh_run(name, "ip -j -4 addr show dev mydocker0").stdout)[0]["addr_info"]
    assert [a["local"] for a in addrs] == [h.ip]
    owner = ssh_run(name, f"stat -c '%U' {h.data_dir}/xcatfab/hosts {h.xcatfab_state_dir}/network-before.json")
    assert owner.stdout.split() == ["root", "root"]
    # The privileged commands ran through sudo reading the password from stdin, which no
    # command line showed.
    assert any(c.startswith("sudo -S -k -p  -- sh -c ") for c in sampler.seen)
    assert not [c for c in sampler.seen if password in c]
    assert password not in proc.stdout + proc.stderr

    # status, node, xcat and teardown, as the same user (Fabric's prompt for the password this time).
    proc = fab("--prompt-for-sudo-password", "-H", name, "status", "--inventory", inv, input=password + "\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"answering on {h.container_ip}:3001" in proc.stdout
    proc = fab("-H", name, "node", "cn01", "--bmc", "198.18.0.250", "--bmc-user", "ADMIN", "--inventory", inv,
               env=dict(env, XCATFAB_BMC_PASSWORD="bmc-secret-2"))
    assert proc.returncode == 0 and recap(proc, name) == (1, 1, 0), proc.stdout + proc.stderr
    proc = fab("-H", name, "xcat", "--inventory", inv, "--", "lsdef", "cn01", "-i", "bmc", env=env)
    assert proc.returncode == 0 and "    bmc=198.18.0.250" in proc.stdout.splitlines()
    image_id = docker_on(name, "image", "inspect", "--format", "{{.Id}}", "xcatfab/xcat:standin-lab").stdout.strip()
    proc = fab("-H", name, "teardown", "--restore-network", "--purge-data", "--inventory", inv, env=env)
    assert proc.returncode == 0 and recap(proc, name) == (3, 2, 0), proc.stdout + proc.stderr
    assert normalized(lab.snapshot(name), [image_id]) == normalized(before)
