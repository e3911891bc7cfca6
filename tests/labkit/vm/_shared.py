"""Everything the VM lab borrows from the netns lab, imported in this one place.

The netns lab's helpers live in ``tasks.lab`` today and are about to move
under ``tests/labkit/``: when they do, only the imports below change.
"""

from __future__ import annotations

from tasks.lab import (  # noqa: F401  (re-exported)
    DEBIAN_MIRROR,
    DEBIAN_SUITE,
    PROJECT_DIR,
    REPO_KEY_NAME,
    REPO_SUITE,
    LabError,
    _live_pid,
    _process_table,
    _remove_tree,
    _run,
    _start_server,
    _stop_pid,
    _tcp_banner,
    _wait_for,
    _wait_gone,
    _write,
    build_repos,
    cache_dir,
    ensure_base_tarball,
)

try:  # the templating module is moving to tasks.runtime; either place is the same function
    from tasks.runtime.templating import render  # noqa: F401
except ImportError:  # pragma: no cover - the layout before the move
    from tasks.templating import render  # noqa: F401

__all__ = [
    "DEBIAN_MIRROR", "DEBIAN_SUITE", "PROJECT_DIR", "REPO_KEY_NAME", "REPO_SUITE", "LabError",
    "_live_pid", "_process_table", "_remove_tree", "_run", "_start_server", "_stop_pid", "_tcp_banner",
    "_wait_for", "_wait_gone", "_write", "build_repos", "cache_dir", "ensure_base_tarball", "render",
]
