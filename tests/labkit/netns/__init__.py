"""The netns lab: real docker hosts on one machine, for `make demo` and every integration test.

Each lab host ``labN`` is a network namespace on this machine with

- an ``eth0`` (one end of a veth pair; the other end, ``labN-h``, is a port of
  the lab switch bridge ``xfablab0`` in the root namespace, which holds the
  controller's lab address 198.18.0.1/24), address 198.18.0.(10+N)/24, a
  pinned MAC, a default route via the controller and no IPv6;
- its own UTS namespace (hostname ``labN``), so ``hostname`` in an SSH session
  and ``docker info`` name the host they run on;
- its own OpenSSH ``sshd`` (Debian openssh-server) with its own ed25519 host
  key, key-only login with the lab client key, listening on the lab address
  only, started with ``ip netns exec`` so its sessions see a per-host /etc
  (``/etc/netns/labN/``: hosts, hostname, resolv.conf, docker/daemon.json);
- its own ``dockerd`` (Debian docker.io) with its own data-root, exec-root,
  socket and pidfile, started with ``nsenter --net`` (``ip netns exec`` remounts
  /sys, which hides the cgroup mounts dockerd needs); sshd hands its socket to
  every session as ``DOCKER_HOST``.

One more namespace, ``labctl`` (198.18.0.2), holds the controller's local engine
(no sshd) that ``inv build-image`` uses through ``STATE/env``.

Isolation: iptables rules in the root namespace, tagged with the comment
``xcatfab-lab``, drop anything from the lab bridge that would be forwarded to
another interface or delivered to an address of the machine other than the
controller's lab address, and accept bridged lab traffic. The lab never
changes the machine's own interfaces, addresses or routes.

The base image comes from ``debootstrap --variant=minbase bookworm`` into a
cache directory (no registry is reachable), is ``docker import``-ed into each
engine and reused. The stand-in xCAT package (tests/standin, NOT real xCAT) is
served from signed apt repositories on http://198.18.0.1:8089/. A Docker
registry (Debian's docker-registry, plain HTTP, storage in the state
directory) listens on 198.18.0.2:5000 for ``image_source=pull``.

The lab writes an inventory (``STATE/hosts.ini``), a known_hosts file, an
OpenSSH client config and the controller engine's ``STATE/env``; see
:class:`Lab`. Everything it starts is recorded by pid and stopped by pid by
:func:`lab_down`, which also removes every namespace, link, rule, mount, file
and the ``labadmin`` user it made. See docs/LAB.md.

The modules, each importing only from those above it in this list (and from
``tests.labkit.common``, the helpers the netns and VM labs share):

- :mod:`.hosts`: the lab's names, addresses and paths; :class:`LabHost`, one host;
- :mod:`.network`: the bridge, namespaces and veths, the isolation rules, a host's network reset;
- :mod:`.engines`: a dockerd per host and the controller's, the Docker API probe,
  the base image import, what engines leave on the machine;
- :mod:`.files`: a host's /etc under /etc/netns, its sshd config and key, its restart-dockerd;
- :mod:`.services`: sshd per host, the stand-in repository server, the registry, the sudo test user;
- :mod:`.processes`: the lab's processes found without pidfiles; the sweep; orphans of SSH sessions;
- :mod:`.lab`: :class:`Lab`, a running lab, with ``reset_host`` and ``snapshot`` for tests;
- :mod:`.lifecycle`: :func:`lab_up`, :func:`lab_down`, :func:`lab_status`, :func:`current_lab`,
  :func:`healthy`;
- :mod:`.measure`: :class:`EgressCounter`, :func:`received_bytes` (the kernel's byte counters);
- :mod:`.tasks`: the Invoke collection ``ns``: ``inv lab.up [--hosts N]``, ``inv lab.status``,
  ``inv lab.down``.
"""

from .hosts import LabHost, state_dir
from .lab import Lab
from .lifecycle import current_lab, healthy, lab_down, lab_status, lab_up

__all__ = ["Lab", "LabHost", "current_lab", "healthy", "lab_down", "lab_status", "lab_up", "state_dir"]
