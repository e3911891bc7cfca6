"""``make bench``: every benchmark, end to end (a thin dispatcher).

    python bench/run.py                      # all benchmarks with their defaults (`make bench`)
    python bench/run.py --quick              # a 5-minute subset, BENCHMARKS.md untouched (`make bench-quick`)
    python bench/run.py converge [ARGS...]   # one benchmark, ARGS passed on (see its --help)

Before anything runs, the Debian packages the benchmarks need on this machine
are installed when missing (as root, with apt-get; nothing is installed when
all are present). The lab hosts share this machine's filesystem, so the Docker
SDK installed here is the one Ansible's community.docker modules import on
the hosts. Each benchmark brings up the lab itself when no healthy lab with
enough hosts is running.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Benchmarks in the order ``make bench`` runs them: name -> module with ``main(argv) -> int``.
BENCHMARKS = {
    "converge": "bench.converge",
    "scale": "bench.scale",
    "iso": "bench.iso",
}

#: ``make bench``: each benchmark's arguments. The lab is brought up with 16 hosts by the
#: first benchmark when no healthy lab with enough hosts runs. Ansible is run at N <= 4
#: (tuned) and N = 1 (default) only: at 16 hosts its no-op rounds alone take ~10 minutes.
FULL = {
    "converge": ["--n", "1,4,8,16", "--runs", "5", "--max-n", "ansible-tuned=4,ansible-default=1",
                 "--first-tools", "xcatfab,pyinfra,ansible-tuned"],
    "scale": ["--serial-runs", "3", "--relay-n", "8", "--relay-mib", "1024"],
    "iso": [],
}

#: ``make bench-quick`` (about 5 minutes): N = 1 and 4, 3 runs, the floor, xcatfab (quick and
#: deep) and pyinfra, the 64 MiB ISO; no first converge, no counting pass, nothing written
#: into BENCHMARKS.md (the JSON goes to bench/results/).
QUICK = {
    "converge": ["--n", "1,4", "--runs", "3", "--tools", "floor,xcatfab,xcatfab-deep,pyinfra", "--skip-first",
                 "--skip-counts", "--no-markdown"],
}

#: Debian packages -> why the benchmarks need them.
APT_PACKAGES = {
    "python3-docker": "Docker SDK for Python: community.docker's modules on the lab hosts (shared filesystem)",
    "python3-apt": "ansible.builtin.apt on the lab hosts",
    "strace": "counting SSH sessions and commands at the hosts' sshd",
    "xorriso": "building the benchmark's ISO",
    "rsync": "the ISO benchmark's rsync row",
}


def missing_packages(packages) -> list:
    missing = []
    for pkg in packages:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        if "install ok installed" not in proc.stdout:
            missing.append(pkg)
    return missing


def ensure_apt_packages() -> None:
    missing = missing_packages(APT_PACKAGES)
    if not missing:
        return
    for pkg in missing:
        print(f"[bench] needs {pkg}: {APT_PACKAGES[pkg]}", flush=True)
    if os.geteuid() != 0:
        raise SystemExit("[bench] run as root, or install: apt-get install " + " ".join(missing))
    print("[bench] installing (apt-get, as root): " + " ".join(missing), flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env)


def precompile(root: Path = ROOT) -> list:
    """Byte-compile xcatfab's own modules (tasks/, fabfile.py); return the files compiled.

    A wheel install compiles them at install time, as pip did for Fabric, Invoke,
    Paramiko and the peers' packages; an editable install leaves it to the first
    import, which writes nothing when PYTHONDONTWRITEBYTECODE is set (some CI and
    container environments set it): every `fab` would then compile xcatfab from source
    (about 0.5 s here) and the benchmark would time the compiler, not xcatfab.
    """
    import compileall
    import py_compile

    files = [root / "fabfile.py", *sorted((root / "tasks").rglob("*.py"))]
    compiled = []
    for path in files:
        if compileall.compile_file(str(path), quiet=2, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP):
            compiled.append(path)
    return compiled


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("benchmarks: " + ", ".join(BENCHMARKS))
        return 0
    if argv == ["--quick"]:
        selected = dict(QUICK)
    elif argv and not argv[0].startswith("-"):
        name, rest = argv[0], argv[1:]
        if name not in BENCHMARKS:
            raise SystemExit(f"[bench] unknown benchmark {name!r} (have: {', '.join(BENCHMARKS)})")
        selected = {name: rest}
    elif argv:
        raise SystemExit("[bench] name the benchmark the arguments are for: python bench/run.py NAME ARGS "
                         f"(have: {', '.join(BENCHMARKS)})")
    else:
        selected = dict(FULL)
    ensure_apt_packages()
    print(f"[bench] byte-compiled xcatfab's {len(precompile())} modules (as a wheel install does)", flush=True)
    status = 0
    for name, args in selected.items():
        print(f"[bench] === {name}", flush=True)
        status = importlib.import_module(BENCHMARKS[name]).main(args) or status
    return status


if __name__ == "__main__":
    sys.exit(main())
