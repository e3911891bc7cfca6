"""xcatfab: stand up an xCAT management node in Docker on Ubuntu docker hosts.

The package is layered, each layer importing only from the ones below it:

* ``tasks.cli`` — the ``fab`` and ``inv`` task collections, host selection,
  the flag grammar, and every workaround for Fabric (``fabric_compat``);
* ``tasks.ops`` — what a task does: ``deploy`` (the steps on one host) and
  the day-2 operations (``xcat``, ``node``, ``status``, ``teardown``);
* ``tasks.steps`` — one module (or package) per deploy step: its facts
  parser, plan and apply;
* ``tasks.runtime`` — settings and inventory, SSH connections, remote
  commands, facts, the host executor, the guarded network change,
  templating, caches, secrets, reports.

``inv`` loads this package as its collection (``inv render``, ``inv
build-image``, ``inv lab.*``); ``fab`` loads ``fabfile.py``. See
docs/ARCHITECTURE.md.
"""


def __getattr__(name):
    """``tasks.ns``, the ``inv`` collection, built on first use: ``fab`` imports this
    package too, and should not pay for loading the local tasks (start-up time)."""
    if name == "ns":
        from .cli.local import ns

        return ns
    raise AttributeError(name)
