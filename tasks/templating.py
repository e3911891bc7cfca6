"""The one Jinja2 environment: every file xcatfab puts on a host or in an image.

Templates live under ``templates/`` at the top of the project, so each script
and config file can be read whole and linted (hadolint, shellcheck) after
rendering. ``StrictUndefined`` turns a missing variable into an error instead
of an empty string in a shell script.
"""

from __future__ import annotations

import functools
import os
import shlex

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


def render(name: str, **context) -> str:
    """Render ``templates/<name>`` with ``context``."""
    return environment().get_template(name).render(**context)


def template_names(prefix: str) -> list[str]:
    """Names of the templates under ``templates/<prefix>``, sorted."""
    root = os.path.join(TEMPLATE_DIR, prefix)
    names = []
    for dirpath, _dirs, files in os.walk(root):
        for fname in files:
            rel = os.path.relpath(os.path.join(dirpath, fname), TEMPLATE_DIR)
            names.append(rel.replace(os.sep, "/"))
    return sorted(names)
