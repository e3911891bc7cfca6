"""Helpers of the VM lab's scenario tests: the real `fab` against a VM, and VM states reused by snapshot.

A scenario starts from one of three states of a VM:

- ``fresh``: as ``vmlab.up`` made it (bare: no docker; first boot);
- ``image-ready``: docker.io installed by xcatfab's ``docker`` step, the lab
  preset's FROM image imported (a site would pull it from its registry; the
  VM lab has none, see docs/VMLAB.md) and the xCAT image built on the VM by the
  ``image`` step. Made from ``fresh`` the first time a scenario needs it (only
  when the test before it failed: a passing tier goes from state to state live)
  and kept as an internal snapshot of the VM's disk, so the slow part (apt, the
  build) is paid at most once more; taking it costs a shutdown and a boot, which
  a passing tier does not pay;
- ``deployed``: ``image-ready`` plus a ``deploy`` with the defaults, live (never
  a snapshot: booting it would be a reboot, which scenarios test on purpose).

A test that leaves the VM in a state the next one can start from says so with
:meth:`Scenarios.mark` (``deployed``, ``deployed-netns``, ``network-restored`` ...);
the next test reuses it when :meth:`Scenarios.is_live` agrees and otherwise
makes its start state itself, so a failed test never leaves the next one on a
VM in an unknown state: every `fab` run forgets the mark until a test sets it again.

Every check goes around xcatfab: plain OpenSSH (:meth:`VmLab.ssh`), ``ip -j``,
``systemctl``, ``journalctl``, ``docker inspect`` on the VM, TCP from the controller.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import subprocess
import threading
import time

from tests.lab import fabrun
from tests.lab.fabrun import recap, tcp_answers
from tests.labkit.vm._shared import _tcp_banner, _wait_for

IMAGE_READY = "image-ready"
#: The minbase tarball becomes the lab preset's FROM image on the VM, under both its tags.
BASE_IMAGE_REPO = "xcatfab/bookworm-minbase"
#: What a VM prints on its console when eth0 joins the bridge (the kernel's own line).
ETH0_JOINED = re.compile(r"mydocker0: port \d+\(eth0\) entered (blocking|forwarding) state")
#: ... and when the container's veth joins it (the container step, bridge mode).
VETH_JOINED = re.compile(r"mydocker0: port \d+\(veth\w+\) entered")
#: Power loss and reboots may hit a host that never comes back: give up well before the default.
BOOT_TIMEOUT = 180


class Scenarios:
    """The scenario tests' view of one VM lab: `fab` runs, VM states, independent checks."""

    def __init__(self, lab):
        self.lab = lab
        #: vm -> label of the state it is known to be in right now ("deployed"), else absent.
        self.live: dict[str, str] = {}

    # -- fab
    def fab(self, vm: str, *args: str, env=None, timeout: float = 900) -> subprocess.CompletedProcess:
        """``fab -H vm ARGS --inventory <the VM lab's>``, its recap ending in connection/command counts."""
        self.live.pop(vm, None)
        started = time.monotonic()
        proc = fabrun.fab("-H", vm, *args, "--inventory", str(self.lab.inventory), env=env, counts=True,
                          timeout=timeout)
        if proc.returncode != 0:  # it may have cut the VM off (a rollback, a power loss)
            self.lab.disconnect(vm)
        print(f"[vmlab] {vm} fab {' '.join(args)}: {time.monotonic() - started:.1f}s, exit {proc.returncode}",
              flush=True)
        return proc

    def fab_ok(self, vm: str, *args: str, env=None, timeout: float = 900) -> subprocess.CompletedProcess:
        """:meth:`fab` that must succeed with no failed step."""
        proc = self.fab(vm, *args, env=env, timeout=timeout)
        assert proc.returncode == 0 and recap(proc, vm)[2] == 0, proc.stdout + proc.stderr
        return proc

    # -- states
    def fresh(self, vm: str) -> None:
        """The VM as ``vmlab.up`` made it (bare), booted: kept when it is known to be so (booted
        from its fresh disk this session, no `fab` since), else reset to its fresh disk."""
        if self.live.pop(vm, None) == "fresh" and self.lab.pid(vm) is not None:
            return
        self.lab.reset(vm)

    def import_base_image(self, vm: str) -> None:
        """The lab preset's FROM image into the VM's docker, streamed from the lab's HTTP server."""
        fetch = ("python3 -c 'import shutil, sys, urllib.request; "
                 "shutil.copyfileobj(urllib.request.urlopen(sys.argv[1]), sys.stdout.buffer, 1 << 20)' "
                 f"{self.lab.base_tarball_url}")
        self.lab.ssh(vm, f"{fetch} | docker import --change 'CMD [\"/bin/bash\"]' - {BASE_IMAGE_REPO}:latest"
                         f" && docker tag {BASE_IMAGE_REPO}:latest {BASE_IMAGE_REPO}:bookworm", timeout=600)

    def save_image_ready(self, vm: str) -> None:
        """Power the VM off cleanly, keep its disk as ``image-ready``, boot it again."""
        self.live.pop(vm, None)
        self.lab.shutdown(vm)
        self.lab.snapshot(vm, IMAGE_READY)
        self.lab.boot(vm)

    def image_ready(self, vm: str) -> None:
        """The VM with docker.io and the xCAT image, nothing else of xcatfab (made once, then restored)."""
        self.live.pop(vm, None)
        if not self.lab.has_snapshot(vm, IMAGE_READY):
            self.fresh(vm)
            self.fab_ok(vm, "docker")
            self.import_base_image(vm)
            self.fab_ok(vm, "image")
            self.save_image_ready(vm)
        else:
            self.lab.reset(vm, IMAGE_READY)

    def deployed(self, vm: str) -> None:
        """The VM deployed with the defaults (reused when the last test left it so)."""
        if self.live.get(vm) == "deployed":
            return
        self.image_ready(vm)
        self.fab_ok(vm, "deploy")
        self.live[vm] = "deployed"

    def mark_deployed(self, vm: str) -> None:
        """The calling test left ``vm`` deployed with the defaults and checked it."""
        self.mark(vm, "deployed")

    def mark(self, vm: str, state: str) -> None:
        """The calling test left ``vm`` in ``state`` and checked it."""
        self.live[vm] = state

    def is_live(self, vm: str, *states: str) -> bool:
        """Whether the last test left ``vm`` in one of ``states`` (and no `fab` ran since)."""
        return self.live.get(vm) in states

    # -- power loss
    def kill_when(self, vm: str, condition, fab_args: tuple, what: str) -> subprocess.CompletedProcess:
        """Run `fab ARGS` in the background, SIGKILL the VM's QEMU once ``condition()`` holds; return fab's result.

        Fails when `fab` ends before the condition held (the power loss would have hit nothing).
        """
        result: dict = {}
        runner = threading.Thread(target=lambda: result.setdefault("proc", self.fab(vm, *fab_args)), daemon=True)
        runner.start()
        _wait_for(lambda: condition() or not runner.is_alive(), 900, what, interval=0.2)
        if not runner.is_alive():
            proc = result.get("proc")
            raise AssertionError(f"fab ended before {what}:\n" + (proc.stdout + proc.stderr if proc else "(no result)"))
        self.lab.kill(vm)
        runner.join(900)
        assert "proc" in result, f"fab {' '.join(fab_args)} did not end after the power loss"
        return result["proc"]

    def boot_after_power_loss(self, vm: str) -> None:
        """Power on after a power loss: SSH answers, the address on eth0 or mydocker0 (one of them), one route."""
        self.lab.boot(vm, timeout=BOOT_TIMEOUT)
        assert self.holders(vm) in (["eth0"], ["mydocker0"]), self.addresses(vm)
        assert len(self.default_routes(vm)) == 1, self.default_routes(vm)

    @contextlib.contextmanager
    def watch(self, vm: str, condition: str):
        """A callable telling whether the shell ``condition`` has held on the VM (``pgrep -x dpkg``).

        The VM polls it itself (every 0.2 s) in one SSH session opened here: a new SSH
        connection every 0.2 s would take the guest's CPU (key exchange under TCG) from the
        very work the condition waits for.
        """
        proc = subprocess.Popen(self.lab.ssh_argv(vm, f"until {condition}; do sleep 0.2; done; echo met"),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        seen: list[str] = []

        def met() -> bool:
            if not seen and proc.poll() is not None:
                seen.append(proc.stdout.read().strip())
            return seen == ["met"]

        try:
            yield met
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(30)
            proc.stdout.close()

    # -- independent checks
    def ssh(self, vm: str, cmd: str, **kw) -> subprocess.CompletedProcess:
        return self.lab.ssh(vm, cmd, **kw)

    def addresses(self, vm: str) -> dict:
        """{ifname: [cidr, ...]} of global IPv4 addresses (``ip -j addr`` over plain ssh)."""
        links = json.loads(self.ssh(vm, "ip -j -4 addr show").stdout)
        return {link["ifname"]: [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                                 if a.get("scope") == "global"] for link in links}

    def holders(self, vm: str) -> list[str]:
        """Interfaces holding the VM's own address."""
        cidr = self.lab.host(vm).host_ip
        return sorted(name for name, cidrs in self.addresses(vm).items() if cidr in cidrs)

    def default_routes(self, vm: str) -> list[str]:
        """Devices of the VM's IPv4 default routes."""
        return [r.get("dev", "") for r in json.loads(self.ssh(vm, "ip -j -4 route show default").stdout)]

    def journal(self, vm: str, pattern: str) -> list[str]:
        """Lines of this boot's journal matching ``pattern`` (grep -E)."""
        proc = self.ssh(vm, f"journalctl -b --no-pager -o short-monotonic | grep -E {shlex.quote(pattern)} || true")
        return proc.stdout.splitlines()

    def container(self, vm: str, name: str = "xcatmn") -> dict:
        """``docker inspect`` of the container on the VM ({} when there is none)."""
        proc = self.ssh(vm, f"docker inspect {name}", check=False)
        return json.loads(proc.stdout)[0] if proc.returncode == 0 else {}

    def xcatd_answers(self, vm: str, timeout: float = 120) -> str:
        """The xcatd banner read from the controller at the container's address ('' if none in time)."""
        ip = self.lab.host(vm).container_ip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if tcp_answers(ip, 3001, timeout=3):
                return _tcp_banner(ip, 3001, timeout=5)
            time.sleep(1)
        return ""

    def console_since(self, vm: str, offset: int) -> str:
        """What the VM printed on its console after byte ``offset``."""
        with open(self.lab.console_log(vm), "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")

    def console_size(self, vm: str) -> int:
        return self.lab.console_log(vm).stat().st_size


def counts(proc: subprocess.CompletedProcess, vm: str) -> tuple[int, int]:
    """(SSH connections, remote commands) `fab` reports for ``vm`` (XCATFAB_COUNTS)."""
    match = re.search(rf"^{re.escape(vm)}: connections=(\d+) commands=(\d+)", proc.stdout, re.M)
    assert match, proc.stdout
    return int(match.group(1)), int(match.group(2))


def changed(proc: subprocess.CompletedProcess, vm: str) -> int:
    """The ``changed=`` count of ``vm``'s recap line."""
    return recap(proc, vm)[1]
