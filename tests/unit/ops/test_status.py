"""fab status: one row per host from its facts, every problem spelt out."""

from __future__ import annotations

from tasks.ops import status
from tasks.steps.container import binds, mac_address
from tests.unit.factshapes import BARE, BRIDGED, facts, host_cfg


def inspect_objects(c, running=True):
    ctr = {"Name": "/xcatmn", "State": {"Status": "running" if running else "exited", "Running": running,
                                       "Health": {"Status": "healthy"}},
           "Image": "sha256:" + "ab" * 32,
           "Config": {"Hostname": "xcatmn", "Env": ["XCATFAB_MGMT_IP=198.18.0.120", "XCATFAB_LOOP_DEVICES=8"]},
           "HostConfig": {"NetworkMode": "xcatnet", "ExtraHosts": ["xcatmn.cluster:198.18.0.120"],
                          "Privileged": True, "Binds": binds(c),
                          "RestartPolicy": {"Name": "unless-stopped"}},
           "NetworkSettings": {"Networks": {"xcatnet": {"IPAMConfig": {"IPv4Address": "198.18.0.120"},
                                                        "MacAddress": mac_address(c)}}}}
    image = {"Id": "sha256:" + "ab" * 32, "RepoTags": ["xcatfab/xcat:t"]}
    network = {"Name": "xcatnet", "IPAM": {}}
    return [ctr, network, image]


DEPLOYED = dict(
    BRIDGED,
    docker__bin="/usr/bin/docker\n/usr/sbin/dockerd", admin__docker="20.10.24",
    ctr__ready="ready=yes\nxcatd=up",
    ctr__addrs=[{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "198.18.0.120", "prefixlen": 24}]}],
    admin__port="running=yes\nconnect=yes",
    iso__files="3825205248 1700000000.0 7 Rocky-9.4-x86_64-dvd.iso",
    admin__media="rocky9.4/x86_64\nrocky9.4/notanarch",
)


def test_status_row_of_a_deployed_host():
    c = host_cfg()
    row = status.status_row(c, facts(docker__inspect=inspect_objects(c), **DEPLOYED))
    assert row == {
        "host": "lab10", "docker": "20.10.24 up", "image": "xcatfab/xcat:t " + "ab" * 6,
        "bridge": "mydocker0 (eth0, 198.18.0.20/24)", "container": "xcatmn running (healthy)",
        "address": "198.18.0.120/24", "xcatd": "answering on 198.18.0.120:3001",
        "ISOs": "Rocky-9.4-x86_64-dvd.iso (3.6G)", "media": "rocky9.4/x86_64", "problems": "",
    }


def test_status_row_of_a_bare_host_and_of_trouble():
    c = host_cfg()
    row = status.status_row(c, facts(docker__bin="", docker__inspect_err="rc=1\n", **BARE))
    assert row["docker"] == "not installed" and row["container"] == "xcatmn missing"
    assert row["bridge"] == "mydocker0 missing" and row["xcatd"] == "-" and row["ISOs"] == "none"
    trouble = dict(DEPLOYED, admin__port="running=yes\nconnect=no", ctr__addrs=[])
    row = status.status_row(c, facts(docker__inspect=inspect_objects(c), **trouble))
    assert row["xcatd"] == "listening, no answer" and row["address"] == "missing (198.18.0.120/24)"
    assert "cannot connect" in row["problems"] and "address: 198.18.0.120/24 not in" in row["problems"]
    down = status.status_row(c, facts(docker__bin="/usr/bin/docker\n/usr/sbin/dockerd",
                                     docker__inspect_err="rc=1\nCannot connect to the Docker daemon at unix:///x",
                                     **BRIDGED))
    assert down["docker"] == "down" and "Cannot connect" in down["problems"]


def test_status_prefers_the_iso_steps_own_records():
    f = facts(iso__files="1048576 1700000000.0 42 a.iso", iso__copied="a" * 64 + " rocky9.4 x86_64 yes yes\n"
              + "b" * 64 + " alma9 x86_64 no no", admin__media="")
    assert status.staged_isos(f) == [("a.iso", 1048576)]
    assert status.media_trees(f) == ["rocky9.4/x86_64"]


def test_status_table_has_one_row_per_host(tmp_path):
    import io

    rows = [dict({c: "x" for c in status.STATUS_COLUMNS}, host=h) for h in ("lab10", "lab11")]
    rows[1]["problems"] = "connect: cannot reach root@198.18.0.21:22: timed out after 10s " * 3
    buf = io.StringIO()
    status.print_status(rows, buf)
    lines = buf.getvalue().splitlines()
    assert lines[0].split() == list(status.STATUS_COLUMNS)
    assert [line.split()[0] for line in lines[1:]] == ["lab10", "lab11"]  # nothing wrapped


