"""Facts: everything the steps need to know about a host, read in ONE round trip.

Each step names the fact *fragments* it reads; a fragment is a template,
``templates/host/facts/<name>.sh.j2``, whose sections are parsed by the step
module of the same name (``docker`` -> :mod:`tasks.steps.docker`; the shared
``host`` fragment -> :mod:`tasks.steps.hostnet`). :func:`gather` renders the
fragments of every step of a run into one script, runs it (the fragments run
in parallel on the host), and splits the output on ``@@xcatfab:<section>``
marker lines into :class:`Facts`.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from .errors import StepFailed
from .templating import render

MARKER = "@@xcatfab:"

#: Fact fragments in the order they run; later fragments may rely on earlier ones.
FRAGMENTS = ("host", "docker", "bridge", "guard", "container", "iso", "admin")


class Facts(dict):
    """Raw fact sections by name, with text, line, JSON and ``key=value`` readers."""

    def text(self, name: str) -> str:
        return self.get(name, "")

    def lines(self, name: str) -> list[str]:
        return [line for line in self.text(name).splitlines() if line.strip()]

    def json(self, name: str, default: Any = None) -> Any:
        text = self.text(name).strip()
        if not text:
            return default
        try:
            return json.loads(text)
        except ValueError:
            return default

    def kv(self, name: str) -> dict:
        """``key=value`` lines of a section as a dict."""
        result = {}
        for line in self.lines(name):
            key, sep, value = line.partition("=")
            if sep:
                result[key.strip()] = value.strip()
        return result


def parse_sections(output: str) -> Facts:
    """Split fact-script output on marker lines into :class:`Facts`."""
    facts, name, buf = Facts(), None, []
    for line in output.splitlines():
        if line.startswith(MARKER):
            if name is not None:
                facts[name] = "\n".join(buf)
            name, buf = line[len(MARKER):].strip(), []
        elif name is not None:
            buf.append(line)
    if name is not None:
        facts[name] = "\n".join(buf)
    return facts


def ordered(fragments: Iterable[str]) -> list[str]:
    """``fragments`` without repeats, in the order they must run."""
    wanted = set(fragments)
    return [f for f in FRAGMENTS if f in wanted]


def fact_script(fragments: Iterable[str], context: dict, extra: str = "") -> str:
    """The one remote script that reads every fragment (plus ``extra``, a template of more sections)."""
    script = render("host/facts.sh.j2", fragments=ordered(fragments), **context)
    return script + ("\n" + render(extra, **context) if extra else "")


def gather(remote, fragments: Iterable[str], context: dict, extra: str = "", end: str = "end") -> Facts:
    """Run the fact script on ``remote`` (one round trip) and parse it.

    ``end`` is the section the script prints last; without it the script did
    not finish and the facts cannot be trusted.
    """
    result = remote.run(fact_script(fragments, context, extra), step="facts")
    facts = parse_sections(result.out)
    if end not in facts:
        raise StepFailed(f"fact script did not finish (exit {result.rc}): {result.tail()}")
    return facts
