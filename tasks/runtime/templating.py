"""The one Jinja2 environment: every file xcatfab puts on a host or in an image.

Templates live under ``templates/`` at the top of the project, so each script
and config file can be read whole and linted (hadolint, shellcheck) after
rendering. ``StrictUndefined`` turns a missing variable into an error instead
of an empty string in a shell script.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shlex
from typing import Optional

from .cache import Cache, make_key
from .secret import Secret

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "templates")


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


#: Rendered templates (see tasks/runtime/cache.py).
RENDERED = Cache("render")


def render(template_name: str, /, **context) -> str:
    """Render ``templates/<template_name>`` with ``context``.

    Results are cached on the controller, keyed by the template tree, the
    context and the code (this module's filters included), so a run that
    renders what an earlier run rendered (every converged deploy) does not
    even import Jinja2. Contexts holding a secret are never cached (a secret
    has no business in a template anyway).
    """
    key = _cache_key(template_name, context)
    if key is not None:
        text = RENDERED.get(key)
        if text is not None:
            return text
    text = environment().get_template(template_name).render(**context)
    if key is not None:
        RENDERED.put(key, text)
    return text


@functools.lru_cache(maxsize=1)
def _tree_version() -> str:
    """A digest of every template's name and content, and of the installed Jinja2 (once per process)."""
    digest = hashlib.sha256()
    for dirpath, _dirs, files in sorted(os.walk(TEMPLATE_DIR)):
        for fname in sorted(files):
            with open(os.path.join(dirpath, fname), "rb") as fh:
                digest.update(f"{dirpath}/{fname}\0".encode() + fh.read() + b"\0")
    spec = importlib.util.find_spec("jinja2")
    if spec and spec.origin:
        st = os.stat(spec.origin)
        digest.update(f"jinja2:{spec.origin}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def _cache_key(template_name: str, context: dict) -> Optional[str]:
    if os.environ.get("XCATFAB_NO_RENDER_CACHE"):
        return None
    if any(isinstance(v, Secret) for v in context.values()):
        return None
    return make_key("render", template_name, _tree_version(), sorted(context.items()))


def template_names(prefix: str) -> list[str]:
    """Names of the templates under ``templates/<prefix>``, sorted."""
    root = os.path.join(TEMPLATE_DIR, prefix)
    names = []
    for dirpath, _dirs, files in os.walk(root):
        for fname in files:
            rel = os.path.relpath(os.path.join(dirpath, fname), TEMPLATE_DIR)
            names.append(rel.replace(os.sep, "/"))
    return sorted(names)
