"""Everything the VM lab borrows from the netns lab and the product, imported in this one place.

The shared lab helpers live in ``tests.labkit.common``; the VM lab keeps the
underscored names it was written with by aliasing them here, so a later move
of those helpers is a change to this file only.
"""

from __future__ import annotations

from tasks.runtime.templating import render  # noqa: F401
from tests.labkit.common import (  # noqa: F401  (re-exported)
    DEBIAN_MIRROR,
    DEBIAN_SUITE,
    PROJECT_DIR,
    REPO_KEY_NAME,
    REPO_SUITE,
    LabError,
    build_repos,
    cache_dir,
    ensure_base_tarball,
)
from tests.labkit.common import live_pid as _live_pid  # noqa: F401
from tests.labkit.common import process_table as _process_table  # noqa: F401
from tests.labkit.common import remove_tree as _remove_tree  # noqa: F401
from tests.labkit.common import run as _run  # noqa: F401
from tests.labkit.common import start_server as _start_server  # noqa: F401
from tests.labkit.common import stop_pid as _stop_pid  # noqa: F401
from tests.labkit.common import tcp_banner as _tcp_banner  # noqa: F401
from tests.labkit.common import wait_for as _wait_for  # noqa: F401
from tests.labkit.common import wait_gone as _wait_gone  # noqa: F401
from tests.labkit.common import write as _write  # noqa: F401

__all__ = [
    "DEBIAN_MIRROR", "DEBIAN_SUITE", "PROJECT_DIR", "REPO_KEY_NAME", "REPO_SUITE", "LabError",
    "_live_pid", "_process_table", "_remove_tree", "_run", "_start_server", "_stop_pid", "_tcp_banner",
    "_wait_for", "_wait_gone", "_write", "build_repos", "cache_dir", "ensure_base_tarball", "render",
]
