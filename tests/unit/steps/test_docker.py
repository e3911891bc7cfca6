"""Planning the docker step: daemon.json merged, never clobbered; docker.io installed only when missing."""

import json

import pytest

from tasks.runtime.errors import StepFailed
from tasks.steps import docker
from tests.unit.factshapes import facts, run_for
from tests.unit.factshapes import plan_cfg as cfg


def test_docker_merges_daemon_json_and_never_clobbers():
    c = cfg('docker_daemon_json={"log-driver": "journald", "log-opts": {"max-size": "10m"}}')
    f = facts(docker__bin="/usr/bin/docker\n/usr/sbin/dockerd",
              docker__daemon_json='{"bip": "198.19.0.1/24", "log-opts": {"max-file": "3"}}')
    actions = docker.DockerStep().plan(run_for(c, f))
    assert [a.kind for a in actions] == ["daemon_json", "restart"]
    merged = json.loads(actions[0].data["content"])
    assert merged == {"bip": "198.19.0.1/24", "log-driver": "journald",
                      "log-opts": {"max-file": "3", "max-size": "10m"}}
    f["docker.daemon_json"] = actions[0].data["content"]
    assert docker.DockerStep().plan(run_for(c, f)) == []
    f["docker.daemon_json"] = "{not json"
    with pytest.raises(StepFailed, match="not valid JSON"):
        docker.DockerStep().plan(run_for(c, f))


def test_docker_install_only_when_missing_and_start_when_down():
    f = facts(docker__bin="", docker__daemon_json="")
    assert [a.kind for a in docker.DockerStep().plan(run_for(cfg(), f))] == ["install", "restart"]
    f = facts(docker__bin="/usr/bin/docker\n/usr/sbin/dockerd",
              docker__inspect_err="rc=1\nCannot connect to the Docker daemon at unix:///x.sock. "
                                  "Is the docker daemon running?")
    assert [a.kind for a in docker.DockerStep().plan(run_for(cfg(), f))] == ["restart"]
