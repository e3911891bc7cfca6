"""Secret values (BMC, xCAT and sudo passwords) that must never be shown.

A :class:`Secret` prints as ``********`` in ``str()``, ``repr()``, f-strings,
logs, plan output and tracebacks; the value only comes out through
:meth:`Secret.reveal`, which the code calls at exactly the two places a
secret may go: the stdin of a remote command (``sudo -S``, ``chdef -z``) and
nowhere else.

Sources, first match wins: an environment variable, a file readable only by
its owner (``<NAME>_FILE``), an interactive prompt.
"""

from __future__ import annotations

import getpass
import os
import stat
import sys
from typing import Optional

MASK = "********"


class SecretError(Exception):
    """A secret could not be obtained safely (one line, names the source)."""


class Secret:
    """A string that refuses to be printed."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "value"):
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value
        self.source = source

    def reveal(self) -> str:
        """The secret itself: only for a remote command's stdin."""
        return self._value

    def __str__(self) -> str:
        return MASK

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):
        raise TypeError("a Secret cannot be pickled")


def from_file(path: str) -> Secret:
    """Read a secret from ``path``, which must be readable by its owner only."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SecretError(f"{path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(f"{path}: not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(f"{path}: readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it")
    try:
        with open(path, encoding="utf-8") as fh:
            return Secret(fh.read().rstrip("\n"), path)
    except OSError as exc:
        raise SecretError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SecretError(f"{path}: not UTF-8 text") from None


def prompt_for(prompt: str) -> Secret:
    """A secret typed at a prompt on the terminal (no echo), else one line of stdin.

    With no terminal (a pipe, a job scheduler) getpass would print a warning
    and the prompt to stderr; the line is read from stdin quietly instead,
    and nothing there is a clear error.
    """
    try:
        with open("/dev/tty"):
            pass
    except OSError:
        line = sys.stdin.readline() if sys.stdin else ""
        if not line:
            raise SecretError("no terminal to prompt on and nothing on stdin") from None
        return Secret(line.rstrip("\r\n"), "stdin")
    try:
        return Secret(getpass.getpass(prompt), "prompt")
    except EOFError:
        raise SecretError("nothing typed at the prompt") from None


def lookup(env_name: str, prompt: Optional[str] = None, required: bool = False) -> Optional[Secret]:
    """``$ENV_NAME``, else the file named by ``$ENV_NAME_FILE``, else a prompt."""
    value = os.environ.get(env_name)
    if value:
        return Secret(value, f"${env_name}")
    path = os.environ.get(env_name + "_FILE")
    if path:
        return from_file(path)
    if prompt:
        return prompt_for(prompt)
    if required:
        raise SecretError(f"set ${env_name} (or ${env_name}_FILE naming a chmod-600 file)")
    return None


def mask_in(text: str, secrets) -> str:
    """``text`` with every secret value replaced by the mask (for error paths)."""
    for secret in secrets:
        if secret and secret.reveal():
            text = text.replace(secret.reveal(), MASK)
    return text
