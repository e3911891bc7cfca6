"""The container's /etc/hosts and /etc/resolv.conf, and which lines of them xcatfab owns.

Both live on the host (``data_dir/xcatfab/``) and are bind-mounted read-write,
so they work with any image and what xCAT writes into them survives restarts.

* ``resolv.conf`` is xcatfab's: ``search <domain>`` and ``nameserver
  <container_dns or the gateway>``, from the inventory.
* ``hosts`` is shared: xcatfab owns one line, the container's own address
  with its FQDN and short name (xCAT reads its domain from it), and removes
  any other line that gives those names another address; every other line
  (``makehosts`` writes the nodes' lines) is the admin's and stays.
"""

from __future__ import annotations

from ...runtime.templating import render
from ..hostnet import gateway_for
from .spec import container_ip


def own_hosts_line(cfg) -> str:
    return f"{container_ip(cfg)}\t{cfg.container_fqdn} {cfg.container_hostname}"


def _names(line: str) -> tuple[str, list]:
    fields = line.split("#", 1)[0].split()
    return (fields[0], fields[1:]) if fields else ("", [])


def hosts_text(cfg, current: str) -> str:
    """The hosts file with xcatfab's line right and every other line kept (a new file: rendered whole)."""
    if not current.strip():
        return render("host/container-hosts.j2", ip=container_ip(cfg), fqdn=cfg.container_fqdn,
                      short=cfg.container_hostname)
    ours = own_hosts_line(cfg)
    want = (container_ip(cfg), [cfg.container_fqdn, cfg.container_hostname])
    kept, found = [], False
    for line in current.splitlines():
        address, names = _names(line)
        if (address, names) == want and not found:
            kept.append(line)
            found = True
        elif not ({cfg.container_fqdn, cfg.container_hostname} & set(names)):
            kept.append(line)
    if not found:
        at = next((i + 1 for i, line in enumerate(kept) if _names(line)[1][:1] == ["localhost"]), 0)
        kept.insert(at, ours)
    return "\n".join(kept) + "\n"


def resolv_text(cfg, facts) -> str:
    dns = cfg.container_dns or gateway_for(cfg, facts)
    return render("host/container-resolv.conf.j2", domain=cfg.container_domain, nameserver=str(dns) if dns else "")


def wanted_files(cfg, facts, etc_file) -> dict:
    """name -> the text each /etc file must have, from what the host holds now (``etc_file(facts, name)``)."""
    return {"hosts": hosts_text(cfg, etc_file(facts, "hosts")), "resolv.conf": resolv_text(cfg, facts)}
