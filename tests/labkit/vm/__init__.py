"""The VM lab: Debian 12 virtual machines (QEMU) as real docker hosts for xcatfab's tests.

Each VM has systemd, netplan (networkd renderer, eth0's static address in
``/etc/netplan/01-eth0.yaml``), openssh-server with its own host key, a sudo
user, its own kernel and no docker; the controller serves it a signed apt
repository with docker.io and its closure and the stand-in xCAT repositories.
See docs/VMLAB.md.

Library API: :func:`vmlab_up`, :func:`vmlab_down`, :func:`vmlab_status`,
:func:`current_vmlab`, :class:`VmLab`. Invoke tasks: :mod:`.tasks` (``ns``).
"""

from .lifecycle import current_vmlab, healthy, vmlab_down, vmlab_status, vmlab_up
from .vmlab import VmLab

__all__ = ["VmLab", "current_vmlab", "healthy", "vmlab_down", "vmlab_status", "vmlab_up"]
