"""The controller-side cache: one root, one key rule, atomic writes.

Three things are cached on the controller, each under its own namespace of
one :class:`Cache`:

* ``render`` — rendered templates (so a converged run need not import Jinja2);
* ``xcat-stamps`` — the stamp of a host's xCAT tables when xcatfab last
  verified them (so a converged run need not read them again);
* ``iso-sums`` — sha256 of local ISO files by identity (path, size, mtime,
  inode), so a converged run never reads a local ISO again.

A key is a digest over the caller's parts plus :data:`CODE_VERSION` — the
digest of xcatfab's own version and of every source file of the package — so
any change to the code that shapes a cached value (a template filter, a
parser) starts from a clean slate. The root is ``$XCATFAB_CACHE_DIR``, else
``$XDG_CACHE_HOME/xcatfab``, else ``~/.cache/xcatfab``. A cache that cannot be
read or written is simply not used.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from typing import Any, Optional

#: xcatfab's own version (pyproject.toml's); part of every cache key.
VERSION = "0.2.0"
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def root() -> str:
    """The cache root (see the module docstring)."""
    explicit = os.environ.get("XCATFAB_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "xcatfab")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A digest of xcatfab's version and every Python source file's name, size and mtime."""
    digest = hashlib.sha256(VERSION.encode())
    for dirpath, _dirs, files in sorted(os.walk(PACKAGE_DIR)):
        for fname in sorted(f for f in files if f.endswith(".py")):
            st = os.stat(os.path.join(dirpath, fname))
            digest.update(f"{dirpath}/{fname}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def make_key(*parts: Any) -> str:
    """A cache key over ``parts`` (their repr) and :func:`code_version`."""
    return hashlib.sha256(repr((code_version(),) + parts).encode()).hexdigest()


class Cache:
    """One namespace of the cache: text or JSON entries by key."""

    def __init__(self, namespace: str, max_entries: int = 512):
        self.namespace, self.max_entries = namespace, max_entries

    def path(self, key: str) -> str:
        return os.path.join(root(), self.namespace, key)

    def get(self, key: str) -> Optional[str]:
        try:
            with open(self.path(key), encoding="utf-8") as fh:
                return fh.read()
        except OSError:
            return None

    def get_json(self, key: str) -> Any:
        text = self.get(key)
        try:
            return json.loads(text) if text is not None else None
        except ValueError:
            return None

    def put(self, key: str, text: str) -> None:
        """Write an entry atomically (a private temp file per writer, then rename)."""
        path = self.path(key)
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(text)
                os.replace(tmp, path)
            except OSError:
                os.unlink(tmp)
                raise
            self._trim(directory)
        except OSError:
            pass  # a cache that cannot be written is just not used

    def put_json(self, key: str, data: Any) -> None:
        self.put(key, json.dumps(data, sort_keys=True))

    def _trim(self, directory: str) -> None:
        """Keep the namespace to ``max_entries`` (the oldest half goes when it overflows)."""
        entries = os.listdir(directory)
        if len(entries) <= self.max_entries:
            return
        entries.sort(key=lambda e: os.stat(os.path.join(directory, e)).st_mtime)
        for old in entries[: len(entries) // 2]:
            try:
                os.unlink(os.path.join(directory, old))
            except OSError:
                pass
