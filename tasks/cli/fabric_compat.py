"""Every place xcatfab works around Fabric 3.2 / Invoke 2.x, each naming what it works around.

1. **One call per task, with every ``-H`` host** (:class:`HostsExecutor`).
   Fabric's executor turns ``fab -H a,b deploy`` into one call per host, run
   one after the other, and stops at the first host that fails: no parallel
   execution (invoke#63, fabric#2156, #2173), no skip-bad-hosts (fabric#1809).
   xcatfab's tasks take all their hosts at once and run them in its own host
   executor (tasks/runtime/executor.py). The executor is Fabric's documented
   extension point (``Program(executor_class=...)``); ``fab`` has no flag for
   it, so :func:`install` sets it on Fabric's program object when the fabfile
   is loaded (before any task runs). The ``-H`` value is read where Fabric's
   own executor reads it (``core[0].args.hosts``) and handed to the task in
   its hidden ``_targets`` argument.
2. **The ``--`` remainder.** Fabric 3.2.3's ``Executor.expand_calls`` raises
   NothingToDo ("not given any hosts") for any task given with a ``--``
   remainder (its recursion for pre-/post-tasks runs without the ``-H``
   hosts), and would otherwise add an anonymous task that ``c.run()``s the
   remainder on every host over Fabric's own connection, which accepts any
   host key (fabric#1804). :class:`HostsExecutor` hands the remainder's words
   (exactly as the shell passed them: Invoke keeps only a space-joined string)
   to the task in its hidden ``_remainder`` argument instead.
3. **Usage errors exit 2.** Invoke's ``Program.run`` exits 1 on a
   ``ParseError`` (an unknown flag, a missing value), the status xcatfab uses
   for "a host failed"; :func:`install` makes task-level usage errors exit 2,
   like every other kind of bad input. (An error in Fabric's own core flags,
   before the fabfile is loaded, still exits 1: nothing of xcatfab's runs yet.)
4. **Short flags.** Invoke gives every task argument a short flag made of its
   first free letter, so ``-p`` meant ``--plan`` in one task and
   ``--purge-data`` in another, and ``-i`` ``--inventory`` after the task but
   Fabric's key file before it. :class:`XTask` gives no automatic short flags;
   the few short flags xcatfab has are in :data:`SHORT_FLAGS` and mean the
   same in every task. Arguments named with a leading underscore are hidden
   (not flags): the executor fills them.

The host-key policy that replaces Fabric's AutoAddPolicy (fabric#1804, #2071)
is :func:`tasks.runtime.knownhosts.guard`; Fabric's missing keepalive
(fabric#1807) is set in :mod:`tasks.runtime.ssh`.
"""

from __future__ import annotations

import inspect
import shlex
import sys
from typing import Optional

from fabric import Executor as FabricExecutor
from invoke import Call, Task
from invoke.exceptions import Exit, ParseError

from ..runtime.errors import EXIT_BAD_INPUT

#: Short flags, the same in every task that has the long one.
SHORT_FLAGS = {"verbose": "v"}


class XTask(Task):
    """An Invoke task with xcatfab's flag grammar: no automatic short flags, hidden ``_`` arguments."""

    def __init__(self, *args, **kwargs):
        kwargs["auto_shortflags"] = False
        super().__init__(*args, **kwargs)

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name)
        if short and short not in taken_names:
            opts["names"] = list(opts["names"]) + [short]
        return opts

    def get_arguments(self, ignore_unknown_help=None):
        return [arg for arg in super().get_arguments(ignore_unknown_help)
                if not (arg.attr_name or arg.name).startswith("_")]


def remainder_words(remainder: str, argv: Optional[list] = None) -> list:
    """The words after ``--``, exactly as the shell passed them.

    Invoke keeps the remainder as one string joined with spaces, which loses
    the user's quoting (``"groups=a b"``); the program's argv still has the
    words. Falls back to splitting the string when argv does not match it.
    """
    argv = list(sys.argv if argv is None else argv)
    if "--" in argv[1:]:
        words = argv[argv.index("--", 1) + 1:]
        if " ".join(words) == remainder:
            return words
    return shlex.split(remainder)


class HostsExecutor(FabricExecutor):
    """Fabric's executor, but one call per task, handed every ``-H`` entry and the ``--`` remainder."""

    def expand_calls(self, calls, apply_hosts=True):
        entries = [e.strip() for e in (self.core[0].args.hosts.value or "").split(",") if e.strip()]
        remainder = self.core.remainder or ""
        expanded = []
        for call in calls:
            if isinstance(call, Task):
                call = Call(task=call)
            expanded.extend(self.expand_calls(call.pre))
            names = inspect.signature(call.task.body).parameters
            if "_targets" in names:
                call.kwargs["_targets"] = entries
            if "_remainder" in names:
                call.kwargs["_remainder"] = remainder_words(remainder) if remainder else None
            elif remainder:
                raise Exit(f"xcatfab: usage: {call.called_as or call.task.name} takes no command after --",
                           code=EXIT_BAD_INPUT)
            expanded.append(call)
            expanded.extend(self.expand_calls(call.post))
        return expanded


def install() -> None:
    """Make the running ``fab`` use :class:`HostsExecutor` and exit 2 on usage errors (see above)."""
    try:
        from fabric.main import program
    except ImportError:  # pragma: no cover - Fabric is a dependency
        return
    if getattr(program, "_xcatfab_installed", False):
        return
    program.executor_class = HostsExecutor
    parse_tasks = program.parse_tasks

    def parse_tasks_exit_2() -> None:
        try:
            parse_tasks()
        except ParseError as exc:
            raise Exit(f"xcatfab: usage: {exc} (see fab --help TASK)", code=EXIT_BAD_INPUT) from None

    program.parse_tasks = parse_tasks_exit_2
    program._xcatfab_installed = True
