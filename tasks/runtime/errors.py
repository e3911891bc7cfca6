"""The failures xcatfab reports, each as one line.

* :class:`BadInput` — the user's input (inventory, flags, secrets) cannot be
  used: ``file:line: key: why``, exit status 2, and nothing has been contacted.
* :class:`RemoteError` — a command on one host failed: ``host: step: why``.
* :class:`ConnectError` — a host could not be connected to (step ``connect``).
* :class:`StepFailed` — a step could not do its job; the message is one line
  for the recap.
"""

from __future__ import annotations

from typing import Optional

#: Exit status for bad input (inventory, flags, usage).
EXIT_BAD_INPUT = 2
#: Exit status when any host failed or was not attempted.
EXIT_FAILED = 1
#: Exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
EXIT_INTERRUPTED = 130


class BadInput(Exception):
    """Bad input, located: ``where`` is ``file:line``, ``--flag``, ``-H host`` or a host name."""

    def __init__(self, where: str, key: Optional[str], message: str):
        self.where, self.key, self.message = where, key, message
        super().__init__(str(self))

    def __str__(self) -> str:
        key = f" {self.key}:" if self.key else ""
        return f"{self.where}:{key} {self.message}"


#: The name the inventory code and its tests have always used for bad input.
BadInput = BadInput


class RemoteError(Exception):
    """A failure on one host, in one step: ``host: step: message``."""

    def __init__(self, host: str, step: str, message: str):
        self.host, self.step, self.message = host, step, message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.host}: {self.step}: {self.message}"


class ConnectError(RemoteError):
    """The host could not be connected to (step ``connect``)."""

    def __init__(self, host: str, message: str):
        super().__init__(host, "connect", message)


class StepFailed(Exception):
    """A step could not do its job; the message is one line for the recap."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (for one-line failures in a recap)."""
    if isinstance(exc, RemoteError):
        return exc.message
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
