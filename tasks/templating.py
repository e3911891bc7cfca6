"""The one Jinja2 environment: every file xcatfab puts on a host or in an image.

Templates live under ``templates/`` at the top of the project, so each script
and config file can be read whole and linted (hadolint, shellcheck) after
rendering. ``StrictUndefined`` turns a missing variable into an error instead
of an empty string in a shell script.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shlex
import tempfile

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "templates")


def _shell_quote(value) -> str:
    """``{{ x | q }}``: quote a value for POSIX sh."""
    return shlex.quote(str(value))


@functools.lru_cache(maxsize=1)
def environment():
    """The shared :class:`jinja2.Environment` (built once, on first use)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["q"] = _shell_quote
    return env


def render(template_name: str, /, **context) -> str:
    """Render ``templates/<template_name>`` with ``context``.

    Results are cached on disk, keyed by the template tree and the context,
    so a run that renders what an earlier run rendered (every converged
    deploy) does not even import Jinja2. Contexts holding a secret are never
    cached (a secret has no business in a template anyway).
    """
    key = _cache_key(template_name, context)
    if key is not None:
        path = os.path.join(_cache_dir(), key)
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        except OSError:
            pass
    text = environment().get_template(template_name).render(**context)
    if key is not None:
        _store(path, text)
    return text


@functools.lru_cache(maxsize=1)
def _tree_version() -> str:
    """A digest of every template's name, size and mtime (one directory walk per process)."""
    digest = hashlib.sha256()
    for dirpath, _dirs, files in sorted(os.walk(TEMPLATE_DIR)):
        for fname in sorted(files):
            st = os.stat(os.path.join(dirpath, fname))
            digest.update(f"{dirpath}/{fname}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _cache_dir() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(root, "xcatfab", "render")


def _cache_key(template_name: str, context: dict):
    from .secret import Secret

    if os.environ.get("XCATFAB_NO_RENDER_CACHE"):
        return None
    if any(isinstance(v, Secret) for v in context.values()):
        return None
    blob = f"{template_name}\0{_tree_version()}\0{sorted(context.items())!r}"
    return hashlib.sha256(blob.encode()).hexdigest()


def _store(path: str, text: str) -> None:
    """Write a cache entry atomically; keep the cache to a few hundred entries."""
    try:
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        # A private temp name per writer: rollout renders the same entry from several threads.
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except OSError:
            os.unlink(tmp)
            raise
        entries = os.listdir(directory)
        if len(entries) > 512:
            entries.sort(key=lambda e: os.stat(os.path.join(directory, e)).st_mtime)
            for old in entries[:256]:
                os.unlink(os.path.join(directory, old))
    except OSError:
        pass  # a cache that cannot be written is just not used


def template_names(prefix: str) -> list[str]:
    """Names of the templates under ``templates/<prefix>``, sorted."""
    root = os.path.join(TEMPLATE_DIR, prefix)
    names = []
    for dirpath, _dirs, files in os.walk(root):
        for fname in files:
            rel = os.path.relpath(os.path.join(dirpath, fname), TEMPLATE_DIR)
            names.append(rel.replace(os.sep, "/"))
    return sorted(names)
