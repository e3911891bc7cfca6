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
* :mod:`.progress` — live progress.

Staging is correct (``.part`` + sha256 on both sides while streaming, renamed
into place only after fsync and when both sums agree with the expected one;
resumable; a mismatch leaves nothing under the ISO's name) and fast (the
OpenSSH client with AES-GCM first, file pages spliced into its pipe, hashing
in its own thread on both sides). Many hosts: the controller sends each ISO
once down a chain of hosts (templates/host/iso-relay.py.j2).
"""

from .delivery import IsoOptions, RelayGroup
from .step import IsoStep

__all__ = ["IsoOptions", "IsoStep", "RelayGroup"]
