"""Step ``container``: the xCAT container running with its static address.

What the guide does by hand after ``docker run -it --privileged``, done so it
lasts, with any xCAT image (the image contract is in the README):

* ``docker run -d`` with the name, hostname, restart policy, the host's
  ``iso_dir`` bind-mounted at /iso (the guide's ``VOLUME`` was never the
  host's /iso), persistent /install, /etc/xcat, /.dbbackup and /var/log/xcat
  under ``data_dir`` (seeded from the image the first time, when empty),
  ``--privileged`` or the configured capabilities (plus the loop-device
  cgroup rules copycds needs when not privileged);
* /etc/hosts and /etc/resolv.conf: files on the host, bind-mounted
  read-write (:mod:`.etcfiles` says which lines xcatfab owns);
* the static address, by ``network_mode``:

  - ``bridge`` (default): a Docker network on the existing ``mydocker0``
    (``-o com.docker.network.bridge.name``, ``inhibit_ipv4`` so Docker leaves
    the host's address alone) and ``docker run --network --ip``; Docker keeps
    it across restarts.
  - ``netns``: the guide's way, with the step it forgets: the container is
    plugged into ``mydocker0`` with a veth (pipework style), then addressed
    inside its namespace with ``nsenter``. A namespace address dies with the
    container, so a host-side watcher (a systemd unit, or a detached process
    where systemd is absent) re-applies it on every ``start`` event.
  - ``macvlan``: a macvlan Docker network on the bridge, plus a host-side
    macvlan shim so the host itself can reach the container. The shim has an
    address of its own (``macvlan_shim_ip``) and answers ARP only for it.

  The container has the same MAC in every mode, so switching modes keeps the
  neighbours' ARP caches right; a switch removes the old mode's pieces
  (watcher, veth, shim, Docker network) and says so.
* loop devices made in the container's /dev from the host (copycds), and
  readiness: xcatd listening on 3001, within ``ready_timeout``; an image with
  no xCAT in it fails then, saying so.

Modules: :mod:`.spec` (what the container should be), :mod:`.compare` (does it
match), :mod:`.hostfacts` (the ``container`` fact fragment's parser),
:mod:`.etcfiles` (its /etc files), :mod:`.step` (plan and apply).
"""

from .compare import container_diff, network_diff, normal_bind
from .etcfiles import hosts_text, resolv_text
from .hostfacts import container_addresses, shim_ok
from .spec import (
    DEVICE_RULES,
    MANAGED_LABEL,
    binds,
    container_ip,
    host_dirs,
    mac_address,
    network_spec,
    run_args,
    shim_name,
    veth_names,
)
from .step import ContainerStep, netns_context

__all__ = ["DEVICE_RULES", "MANAGED_LABEL", "ContainerStep", "binds", "container_addresses", "container_diff",
           "container_ip", "host_dirs", "hosts_text", "mac_address", "netns_context", "network_diff",
           "network_spec", "normal_bind", "resolv_text", "run_args", "shim_name", "shim_ok", "veth_names"]
