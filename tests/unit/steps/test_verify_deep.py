"""``--verify deep``: the quick check's records bypassed, without hosts.

* the flag's grammar (``quick``/``deep``, anything else one line naming ``--verify``);
* what reaches the fact script: no xCAT table stamp, and the ``iso`` fragment asked to hash;
* the ``iso`` fragment's deep section, rendered and RUN locally in a scratch directory
  (it hashes every file xcatfab holds a record of, whatever the record says);
* planning: a staged ISO whose fresh hash disagrees with its record is staged again,
  one whose record no longer describes the file is checked as before;
* the CLI: every deploy task takes ``--verify``; a bad value is exit 2, nothing contacted.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.ops.deploy import DeployOptions, fact_context, parse_verify
from tasks.runtime.errors import BadInput
from tasks.runtime.facts import Facts, parse_sections
from tasks.runtime.hostrun import HostRun
from tasks.runtime.inventory import load_hosts
from tasks.runtime.templating import render
from tasks.steps.iso import delivery, hostfacts, step
from tasks.steps.iso import local as isolocal
from tasks.steps.xcat import XcatConfigStep, remember_stamp

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
SHA_A = "a" * 64
SHA_B = "b" * 64


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XCATFAB_CACHE_DIR", str(tmp_path / "cache"))


def cfg(*sets):
    base = ["host_ip=198.18.0.11/24", "gateway=198.18.0.1", "container_ip=198.18.0.111/24",
            "state_dir=/st", "data_dir=/data", "iso_dir=/isos"]
    return load_hosts(None, names=["lab1"], overrides=base + list(sets))[0]


# ------------------------------------------------------------------ the flag
@pytest.mark.parametrize("given, mode", [(None, "quick"), ("", "quick"), ("quick", "quick"), ("deep", "deep"),
                                         ("DEEP", "deep"), (" deep ", "deep")])
def test_verify_values(given, mode):
    assert parse_verify(given) == mode


@pytest.mark.parametrize("given", ["full", "1", "deep,quick", "yes"])
def test_verify_bad_value_names_the_flag(given):
    with pytest.raises(BadInput) as info:
        parse_verify(given)
    assert str(info.value).startswith("--verify: ")
    assert "quick, deep" in str(info.value)


def test_default_options_are_quick():
    assert DeployOptions().verify == "quick"


# --------------------------------------------------------- the fact context
def stamped(c):
    facts = Facts({"xcat.stamp": "stamp=s1234\n"})
    remember_stamp(c, facts)
    return c


def test_quick_passes_the_known_stamp_deep_passes_none():
    c = stamped(cfg())
    quick, deep = fact_context(c), fact_context(c, "deep")
    assert quick["xcat_known_stamp"] == "s1234" and quick["iso_deep"] is False
    assert deep["xcat_known_stamp"] == "" and deep["iso_deep"] is True


def test_deep_script_reads_the_tables_even_with_a_stamp():
    c = stamped(cfg())
    quick = render("host/facts.sh.j2", fragments=["container"], **fact_context(c))
    deep = render("host/facts.sh.j2", fragments=["container"], **fact_context(c, "deep"))
    assert "'s1234'" in quick or "s1234" in quick
    assert "s1234" not in deep  # no stamp can equal '': the tables are read (tabdump)
    assert "tabdump site" in deep


def test_unchanged_stamp_plans_nothing_but_deep_facts_are_planned():
    c = cfg()
    run = HostRun(c, None, Facts({"xcat.stamp": "stamp=s\nunchanged=yes\n"}))
    assert XcatConfigStep().plan(run) == []
    # deep: the script never says unchanged, and the tables it read are planned against
    site = '#key,value,comments,disable\n"master","198.18.0.99",,\n'
    run = HostRun(c, None, Facts({"xcat.stamp": "stamp=s\n", "xcat.site": site, "xcat.networks": "#netname\n"}))
    kinds = [a.kind for a in XcatConfigStep().plan(run)]
    assert "site" in kinds


# ------------------------------------------- the iso fragment, run for real
def run_iso_fragment(tmp_path, deep):
    iso_dir, state = tmp_path / "isos", tmp_path / "state"
    (state / "iso").mkdir(parents=True)
    iso_dir.mkdir()
    data = os.urandom(3 * (1 << 20) + 17)
    (iso_dir / "a.iso").write_bytes(data)
    (iso_dir / "b.iso").write_bytes(b"not recorded")
    (iso_dir / "c d.iso").write_bytes(b"c")
    st = (iso_dir / "a.iso").stat()
    # a record that lies: xcatfab's quick check would trust it
    (state / "iso" / "a.iso.sha256").write_text(f"{SHA_A} {st.st_size} {st.st_mtime_ns} {st.st_ino}\n")
    (state / "iso" / "c d.iso.sha256").write_text(f"{SHA_B} 1 1 1\n")
    (state / "iso" / "gone.iso.sha256").write_text(f"{SHA_B} 1 1 1\n")
    script = render("host/facts.sh.j2", fragments=["iso"], iso_dir=str(iso_dir), state_dir=str(state),
                    data_dir=str(tmp_path / "data"), iso_deep=deep)
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return parse_sections(proc.stdout), hashlib.sha256(data).hexdigest()


def test_deep_fragment_hashes_every_recorded_file(tmp_path):
    facts, want = run_iso_fragment(tmp_path, deep=True)
    sums = hostfacts.hashed_sums(facts)
    assert sums == {"a.iso": want, "c d.iso": hashlib.sha256(b"c").hexdigest()}  # b: no record; gone: no file
    assert hostfacts.staged_sum(facts, "a.iso") == want  # the fresh sum, not the record's
    assert hostfacts.host_records(facts)["a.iso"].sha256 == SHA_A


def test_quick_fragment_hashes_nothing(tmp_path):
    facts, _want = run_iso_fragment(tmp_path, deep=False)
    assert hostfacts.hashed_sums(facts) is None
    assert hostfacts.staged_sum(facts, "a.iso") == SHA_A  # the record is trusted


def test_deep_fragment_passes_shellcheck(tmp_path):
    shellcheck = BIN / "shellcheck"
    tool = str(shellcheck) if shellcheck.exists() else "shellcheck"
    script = tmp_path / "facts.sh"
    script.write_text(render("host/facts.sh.j2", fragments=["iso"], iso_dir="/iso", state_dir="/var/lib/xcatfab",
                             data_dir="/xcatdata", iso_deep=True))
    proc = subprocess.run([tool, "-s", "sh", "--severity=style", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------ planning
def local(name="r.iso", size=4096, sha=SHA_A):
    return isolocal.LocalIso(f"/local/{name}", name, size, 1, 1, sha, "inventory")


STAGED = {"iso.boot": "b0", "iso.files": "4096 1700000000.1234567890 77 r.iso",
          "iso.records": f"{SHA_A} 4096 1700000000123456789 77 r.iso.sha256", "iso.parts": "", "iso.copied": ""}


def plan(sections, isos):
    run = HostRun(cfg(), None, Facts(sections),
                  step_options={"iso": delivery.IsoOptions(isos=isos, copycds=False)})
    return [(a.kind, a.summary) for a in step.IsoStep().plan(run)]


def test_quick_trusts_the_record():
    assert plan(STAGED, [local()]) == []


def test_deep_with_the_same_sum_plans_nothing():
    assert plan(dict(STAGED, **{"iso.hashed": f"{SHA_A} r.iso"}), [local()]) == []


def test_deep_finds_a_copy_changed_in_place():
    actions = plan(dict(STAGED, **{"iso.hashed": f"{SHA_B} r.iso"}), [local()])
    assert [k for k, _ in actions] == ["stage"]
    assert "bbbbbbbbbbbb" in actions[0][1]


def test_deep_without_a_hash_of_the_file_does_not_trust_the_record():
    # the fact script could not hash it (read error): check it on the host, as for a file without record
    assert [k for k, _ in plan(dict(STAGED, **{"iso.hashed": ""}), [local()])] == ["check"]


def test_deep_with_a_stale_record_checks_as_before():
    stale = dict(STAGED, **{"iso.files": "4096 1700000001.0 78 r.iso", "iso.hashed": f"{SHA_A} r.iso"})
    assert [k for k, _ in plan(stale, [local()])] == ["check"]


# ------------------------------------------------------------------- the CLI
def fab(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("XCATFAB_")}
    return subprocess.run([str(BIN / "fab"), *args], capture_output=True, text=True, env=env, cwd=str(ROOT),
                          timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("task", ["deploy", "docker", "image", "bridge", "container", "xcat-config", "iso",
                                  "rollout"])
def test_every_deploy_task_documents_verify(task):
    proc = fab("--help", task)
    assert proc.returncode == 0, proc.stderr
    assert "--verify" in proc.stdout and "deep" in proc.stdout


@pytest.mark.parametrize("task", ["deploy", "xcat-config", "iso", "rollout"])
def test_bad_verify_is_one_line_exit_2(tmp_path, task):
    inv = tmp_path / "hosts.ini"
    inv.write_text("[g]\nh1 address=192.0.2.1 container_ip=198.51.100.21/24 host_ip=198.51.100.11/24 "
                   "gateway=198.51.100.1\n")
    selection = [] if task == "rollout" else ["--limit", "all"]
    proc = fab(task, "--inventory", str(inv), *selection, "--verify", "thorough")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--verify" in lines[0] and "thorough" in lines[0], proc.stderr
