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
import json
import os
import re
import shlex
from typing import Optional

from .cache import Cache, make_key
from .secret import Secret

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "templates")


def _shell_quote(value) -> str:
    """``{{ x | q }}``: quote a value for POSIX sh."""
    return shlex.quote(str(value))


def _heredoc_end(content, base: str = "XCATFAB_EOF") -> str:
    """``{{ text | eof }}``: a here-document delimiter that is no line of ``text`` (``XCATFAB_EOF`` when free).

    Text from a host or a container (an /etc/hosts line, a table's cell) could hold the
    usual delimiter as a line of its own, which would end the here-document early and
    run what follows as commands."""
    lines = set(str(content).splitlines())
    end, n = base, 0
    while end in lines:
        n += 1
        end = f"{base}_{n}"
    return end


#: A YAML 1.1 scalar (netplan's) that reads back as the same string when written plain.
_YAML_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*|[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?:/[0-9]{1,2})?")
#: Words YAML 1.1 reads as booleans or null.
_YAML_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}


def _yaml_scalar(value, quote: bool = False) -> str:
    """``{{ x | yaml }}``: a YAML scalar that reads back as the string ``x``: plain when that is safe, else
    (or with ``quote=True``) double-quoted, so a name like ``on`` or ``1.5`` is not a boolean or a number."""
    text = str(value)
    if not quote and _YAML_PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)


def _unit_word(value) -> str:
    """``{{ x | unit_word }}``: one word of a systemd ``Exec*=`` line: specifiers (``%``) and
    variables (``$``) escaped, quoted when it holds a blank, a quote or a backslash."""
    text = str(value).replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_./+@:=,%$-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


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
    env.filters["eof"] = _heredoc_end
    env.filters["yaml"] = _yaml_scalar
    env.filters["unit_word"] = _unit_word
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
