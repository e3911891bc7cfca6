"""The xCAT management node on a docker host, as an admin would write it with pyinfra 3.

The same target state as ``fab deploy`` (bench/peers/inventory.py generates the
host data from xcatfab's inventory): pyinfra's own apt, docker, iptables and
files operations, plus two small operations of our own for what pyinfra has
none for (xcat_ops.py: the bridge move, xCAT's site table).

Note what pyinfra 3.10 checks on a rerun: ``docker.container`` and
``docker.network`` only test that the object exists (``ContainerSpec.diff_from_inspect``
returns no differences), so a container with the wrong image, address or
capabilities counts as converged; ``files.put`` re-hashes the remote file (sha1),
and the xCAT operations read the site and networks tables on every run: each
run is "deep" (no record is trusted).

Run from this directory: ``pyinfra -y INVENTORY deploy.py``.
"""

import io

from pyinfra import host
from pyinfra.operations import apt, docker, files, iptables
from xcat_ops import bridge, xcat_networks, xcat_site

d = host.data
ctr = d.xf_container
net = d.xf_network

apt.packages(name="docker.io is installed", packages=["docker.io"])

docker.image(name="the xCAT image is on the host", image=ctr["image"])

bridge(
    name="the host address is on the bridge",
    bridge=d.xf_bridge["name"],
    iface=d.xf_bridge["iface"],
    address=d.xf_bridge["address"],
    gateway=d.xf_bridge["gateway"],
)

iptables.rule(
    name="bridged traffic is not dropped by Docker's FORWARD policy",
    chain="DOCKER-USER",
    jump="ACCEPT",
    in_interface=d.xf_bridge["name"],
    out_interface=d.xf_bridge["name"],
    append=False,
)

for index, path in enumerate(d.xf_dirs):
    files.directory(name=f"data directory {index}", path=path)

for index, item in enumerate(d.xf_files):
    files.put(name=f"container file {index}", src=io.StringIO(item["content"]), dest=item["dest"], mode="644")

docker.network(
    name="the Docker network on the bridge",
    network=net["name"],
    driver=net["driver"],
    subnet=net["subnet"],
    gateway=net["gateway"],
    ip_range=net["ip_range"],
    opts=[f"{k}={v}" for k, v in sorted(net["options"].items())],
)

extra = ["--ip", ctr["ip"], "--mac-address", ctr["mac_address"]]
for cap in ctr["cap_add"]:
    extra += ["--cap-add", cap]
for cap in ctr["cap_drop"]:
    extra += ["--cap-drop", cap]
for rule in ctr["device_cgroup_rules"]:
    extra += ["--device-cgroup-rule", rule]

docker.container(
    name="the xCAT container with its static address",
    container=ctr["name"],
    image=ctr["image"],
    networks=[ctr["network"]],
    volumes=ctr["binds"],
    restart_policy=ctr["restart_policy"],
    hostname=ctr["hostname"],
    privileged=ctr["privileged"],
    extra_args=extra,
)

xcat_site(name="site.master (and nameservers, domain) point at the static address",
          container=ctr["name"], values=d.xf_site)

xcat_networks(name="a networks entry for the container's subnet (usercomment=xcatfab)",
              container=ctr["name"], entries=d.xf_networks)

if d.get("xf_iso"):
    files.put(name="the ISO is staged in iso_dir", src=d.xf_iso["src"], dest=d.xf_iso["dest"], mode="644")
