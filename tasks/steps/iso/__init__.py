"""Step ``iso``: OS media staged into the host's iso_dir, verified, then ``copycds``.

The guide's last step, done so it can be rerun and scaled. Modules:

* :mod:`.local` — the ISOs on the controller: ``--src``/inventory, checksums,
  checks before any connection, local sums cached by file identity;
* :mod:`.hostfacts` — the ``iso`` fact fragment's parser (what a host holds);
* :mod:`.step` — :class:`IsoStep` (plan and apply) and copycds;
* :mod:`.delivery` — staging one ISO on one or many hosts (the chain, peers,
  the relay group of a ``fab iso`` run, fan-out when the chain breaks);
* :mod:`.chain` — one ISO sent once down a chain of hosts, and its verdicts;
* :mod:`.legs` — the relay programs' ends on the controller (OpenSSH, paramiko);
* :mod:`.progress` — live progress;
* :mod:`.sources` — the task's options and the hosts holding an ISO (all a converged run loads).

Staging is correct (a sum the user gives is checked against the local file
before anything connects; ``.part`` + sha256 on the host while streaming,
renamed into place only when the sum agrees with the controller's; the record
holds in the current boot until the file is on disk; resumable; a transfer
that fails never removes a file the host had) and fast (``iso_transport=tcp``:
plain TCP with a one-shot token, ``sendfile`` from the controller, the sums
over SSH; ``ssh``: OpenSSH with AES-GCM first). Many hosts: the controller
sends each ISO once down a chain of hosts (templates/host/iso-relay.py.j2),
routed around a dead one; a host holding the verified file feeds the others.
Every data stream has a stall limit; Ctrl-C leaves resumable parts and says so.
"""

from .sources import IsoOptions
from .step import IsoStep

__all__ = ["IsoOptions", "IsoStep", "RelayGroup"]


def __getattr__(name):
    """``RelayGroup`` on first use: the transfer machinery is not loaded by a converged deploy."""
    if name == "RelayGroup":
        from .delivery import RelayGroup

        return RelayGroup
    raise AttributeError(name)
