"""Secrets (sudo and BMC passwords) never show: not in ps, output, logs, caches or tracebacks.

The run under watch is the real thing as a site would do it: a rollout as the
lab's non-root sudo user ``labadmin`` (sudo and BMC passwords from the environment),
then ``fab node`` putting the BMC password into xCAT (``chdef -z`` on stdin).
While it runs, a thread samples every process's command line (the lab hosts
share this machine's process table: /proc covers them all) and the
environment of every process in the test hosts' namespaces, and ``ps`` on
every test host over plain ssh. Afterwards every captured output, every file
xcatfab and the stand-in write on the hosts and on the controller is
searched. Each search is shown able to find a secret (controls), so "nothing
found" means something.
"""

from __future__ import annotations

import os
import pty
import re
import secrets
import threading
import time
import traceback
from pathlib import Path

import pytest

from tests.lab.fabrun import FAB, ROOT, fab_env, first_error, make_inventory, recap_line, run_fab, succeeded

#: What xcatfab's sudo looks like with a password (tasks/remote.py): the sampler must see it.
SUDO_WITH_PASSWORD = b"sudo -S -k -p"


class Sampler(threading.Thread):
    """Samples process command lines (and lab-namespace environments) for ``needles``.

    ``hits`` collects every sighting (never the secret itself: the pid and
    which needle); ``sudo_seen`` counts command lines of xcatfab's password
    sudo, proving the sampler watched the run's remote commands.
    """

    def __init__(self, lab, hosts, needles, ssh_run):
        super().__init__(daemon=True)
        self.needles = [n.encode() for n in needles]
        self.hosts = hosts
        self.ssh_run = ssh_run
        self.netns = {os.stat(lab.host(h).netns_path).st_ino for h in hosts}
        self.stop = threading.Event()
        self.hits, self.sudo_seen, self.ps_samples, self.scans = [], 0, 0, 0

    def check(self, where, data: bytes):
        for index, needle in enumerate(self.needles):
            if needle in data:
                self.hits.append(f"{where}: secret #{index}")

    def scan_proc(self):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            self.check(f"/proc/{entry.name}/cmdline", cmdline)
            if SUDO_WITH_PASSWORD in cmdline:
                self.sudo_seen += 1
            try:
                if os.stat(f"/proc/{entry.name}/ns/net").st_ino in self.netns:
                    self.check(f"/proc/{entry.name}/environ", Path(f"/proc/{entry.name}/environ").read_bytes())
            except OSError:
                pass
        self.scans += 1

    def run(self):
        # ps over ssh is slow (a login each time): it gets its own thread so
        # the /proc scan keeps its pace and catches short-lived commands.
        remote = threading.Thread(target=self.sample_ps, daemon=True)
        remote.start()
        while not self.stop.is_set():
            self.scan_proc()
        remote.join()

    def sample_ps(self):
        while not self.stop.is_set():
            for host in self.hosts:
                ps = self.ssh_run(host, "ps -eww -o args", check=False)
                self.check(f"ps on {host}", ps.stdout.encode())
                self.ps_samples += 1
            self.stop.wait(0.5)


def files_containing(roots, needles, exclude=(), newer_than=None):
    """``path: secret #i`` for every file under ``roots`` holding a needle (read in overlapping chunks).

    ``newer_than``: only files modified since that time (``time.time()``).
    """
    needles = [n.encode() for n in needles]
    overlap = max(len(n) for n in needles)
    found = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            continue
        # os.walk skips what vanishes under it (other sessions' temporary files); rglob raises.
        paths = [root] if root.is_file() else (Path(d, f) for d, _, files in os.walk(root) for f in files)
        for path in paths:
            if any(str(path).startswith(str(e)) for e in exclude):
                continue
            try:
                if not path.is_file() or path.is_symlink():
                    continue
                if newer_than is not None and path.stat().st_mtime < newer_than:
                    continue
                with open(path, "rb") as fh:
                    tail = b""
                    while chunk := fh.read(1 << 22):
                        data = tail + chunk
                        for index, needle in enumerate(needles):
                            if needle in data:
                                found.append(f"{path}: secret #{index}")
                        tail = data[-overlap:]
            except OSError:
                continue
    return sorted(set(found))


@pytest.fixture
def hosts(lab, test_hosts):
    for host in test_hosts[:3]:
        lab.reset_host(host)
    return list(test_hosts[:3])


def test_no_secret_shows_anywhere_during_and_after_a_sudo_rollout_and_node(
        lab, hosts, ssh_run, docker_on, tmp_path):
    sudo_password = lab.admin_password_file.read_text().strip()
    bmc_password = "bmc-" + secrets.token_urlsafe(18)
    needles = [sudo_password, bmc_password]
    inventory = make_inventory(lab, tmp_path / "hosts.ini", hosts, group_vars={"user": lab.admin_user})
    env = fab_env({"XCATFAB_SUDO_PASSWORD": sudo_password, "XCATFAB_BMC_PASSWORD": bmc_password})
    outputs, started = [], time.time()
    sampler = Sampler(lab, hosts, needles, ssh_run)
    sampler.start()
    try:
        for args in (["rollout", "--inventory", str(inventory), "--plan"],
                     ["rollout", "--inventory", str(inventory)],
                     ["-H", ",".join(hosts), "node", "compute1", "--bmc", "198.18.0.250", "--bmc-user", "ADMIN",
                      "--inventory", str(inventory)],
                     ["-H", ",".join(hosts), "xcat", "--inventory", str(inventory), "--", "lsdef", "compute1"]):
            outputs.append((args, *run_fab(*args, env=env)))
    finally:
        sampler.stop.set()
        sampler.join()

    # The runs did what they claim (as labadmin, through sudo with the password).
    (_, rc_plan, plan_out, _), (_, rc, out, err), (_, rc_node, node_out, node_err), (_, _, lsdef_out, _) = outputs
    assert rc_plan == 0 and rc == 0, plan_out + out + err
    for host in hosts:
        assert succeeded(out, host), out
        assert first_error(out, host) == ""
        assert ssh_run(host, "ps -o user= -p $$", user=lab.admin_user).stdout.strip() == lab.admin_user
    assert rc_node == 0, node_out + node_err
    # The BMC password really reached xCAT on every host (read there, independently).
    for host in hosts:
        stored = docker_on(host, "exec", "xcatmn", "sh", "-c", ". /etc/profile.d/xcat.sh; tabdump ipmi")
        assert bmc_password in stored.stdout, stored.stdout
    assert "compute1" in lsdef_out

    # Sampling watched the run: it saw xcatfab's password sudo, and ps on every host.
    assert sampler.sudo_seen > 0 and sampler.ps_samples >= len(hosts)
    assert sampler.hits == []

    # Nothing in any output of the four runs.
    for args, _, stdout, stderr in outputs:
        for needle in needles:
            assert needle not in stdout and needle not in stderr, f"a secret in the output of fab {args}"

    # Nothing in what xcatfab and the stand-in leave on the hosts and on the controller.
    roots, exclude = [], []
    for host in hosts:
        lab_host = lab.host(host)
        upper = docker_on(host, "inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", "xcatmn").stdout.strip()
        roots += [lab_host.dir, lab_host.etc_dir, upper]
        # The xCAT database (where the BMC password must be) and the engine's image layers.
        exclude += [lab_host.data_dir / "etc-xcat", lab_host.data_dir / "dbbackup", lab_host.docker_root / "overlay2",
                    lab_host.docker_root / "image", lab_host.docker_root / "buildkit"]
        container_logs = docker_on(host, "logs", "xcatmn").stdout + docker_on(host, "logs", "xcatmn").stderr
        assert not any(n in container_logs for n in needles)
        # The stand-in logged the node stanza it read on stdin (masked): the log searched below
        # (data_dir/log, the container's /var/log/xcat) is the one that saw the password go by.
        command_log = docker_on(host, "exec", "xcatmn", "cat", "/var/log/xcat/standin-commands.log").stdout
        assert "stdin|     bmcpassword=********" in command_log
        assert (lab_host.data_dir / "log" / "standin-commands.log").read_text() == command_log
    assert files_containing(roots, needles, exclude) == []
    # The controller's cache: all of xcatfab's renders and stamps, and whatever this run wrote
    # among the big things others keep there (benchmark venvs, the lab's base image).
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xcatfab"
    big = [cache / "bench", cache / "bench-venvs", cache / "bookworm-minbase.tar"]
    assert files_containing([cache], needles, exclude=big) == []
    assert files_containing(big, needles, newer_than=started) == []
    # Temporary files of remote commands land in the machine's /tmp (lab hosts share it). The
    # sudo password is the lab's and may sit in other tests' files there: look for this run's
    # own secrets, in the files written while it ran.
    assert files_containing(["/tmp", "/var/tmp"], [bmc_password], exclude=[tmp_path],
                            newer_than=started) == []

    # Control: the same search finds a secret that is there (past the first chunk's boundary, too).
    canary = lab.host(hosts[0]).xcatfab_state_dir / "canary"
    canary.write_bytes(b"x" * ((1 << 22) - 3) + bmc_password.encode() + b"y")
    try:
        assert files_containing([canary.parent], needles, newer_than=started) == [f"{canary}: secret #1"]
    finally:
        canary.unlink()


def test_a_wrong_sudo_password_fails_at_connect_and_never_shows(lab, hosts, ssh_run, tmp_path):
    wrong = "wrong-" + secrets.token_urlsafe(18)
    inventory = make_inventory(lab, tmp_path / "hosts.ini", hosts[:1], group_vars={"user": lab.admin_user})
    sampler = Sampler(lab, hosts[:1], [wrong], ssh_run)
    sampler.start()
    try:
        rc, out, err = run_fab("rollout", "--inventory", str(inventory),
                               env=fab_env({"XCATFAB_SUDO_PASSWORD": wrong}))
    finally:
        sampler.stop.set()
        sampler.join()
    assert rc == 1
    assert first_error(out, hosts[0]) == f"connect: sudo failed for user {lab.admin_user}: wrong sudo password?"
    assert wrong not in out + err and sampler.hits == []


def test_the_sudo_password_from_the_prompt(lab, hosts, tmp_path):
    """--prompt-for-sudo-password on a terminal: the password works and is never echoed."""
    password = lab.admin_password_file.read_text().strip()
    inventory = make_inventory(lab, tmp_path / "hosts.ini", hosts[:1], group_vars={"user": lab.admin_user})
    argv = [FAB, "--prompt-for-sudo-password", "rollout", "--inventory", str(inventory), "--plan"]
    pid, fd = pty.fork()
    if pid == 0:  # the child: fab on a terminal of its own
        os.chdir(ROOT)
        os.execve(argv[0], argv, fab_env())
    transcript, sent = b"", False
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        transcript += chunk
        if not sent and b"sudo.password" in transcript:
            os.write(fd, password.encode() + b"\n")
            sent = True
    _, status = os.waitpid(pid, 0)
    text = transcript.decode(errors="replace").replace("\r\n", "\n")
    assert sent, text
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert password not in text
    assert recap_line(text, hosts[0]).endswith("failed=0")


def test_a_secret_masks_itself_in_tracebacks_logs_and_formatting(caplog):
    """Whatever prints a Secret (repr, str, format, traceback locals, logging, rich) prints the mask."""
    import logging
    import pickle

    from rich.console import Console
    from rich.traceback import Traceback

    from tasks.runtime.secret import MASK, Secret

    value = "tb-" + secrets.token_urlsafe(18)
    secret = Secret(value, "$XCATFAB_BMC_PASSWORD")

    def fails(password):
        local_copy = {"password": password}  # noqa: F841  (shown by capture_locals)
        raise RuntimeError(f"could not log in with {password}")

    def caught(password):
        # Caught here, so the traceback holds this frame and fails' (where the
        # Secret is a local), not the test's own (where the plain value is).
        try:
            fails(password)
        except RuntimeError as exc:
            text = "".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())
            with open(os.devnull, "w") as sink:
                console = Console(record=True, width=200, file=sink)
                console.print(Traceback.from_exception(type(exc), exc, exc.__traceback__, show_locals=True))
            logging.getLogger("xcatfab.test").exception("failed for %s", password)
            return text, console.export_text()
        raise AssertionError("fails() did not raise")

    text, rich_text = caught(secret)
    assert value not in text and MASK in text
    assert value not in rich_text and MASK in rich_text
    assert value not in caplog.text and MASK in caplog.text
    assert value not in f"{secret} {secret!r} {secret:>20} %s" % (secret,) + "{}".format(secret)
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert secret.reveal() == value and re.fullmatch(r"\*+", str(secret))
