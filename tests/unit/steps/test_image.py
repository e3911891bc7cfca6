"""Planning the image step: what it pulls, builds, ships or loads, and when not."""


import pytest

from tasks.steps import image as image_step
from tests.unit.factshapes import facts, run_for
from tests.unit.factshapes import plan_cfg as cfg


@pytest.mark.parametrize("wanted, tags, digests, present", [
    ("xcat/xcat2", ["xcat/xcat2:latest"], [], True),
    ("docker.io/xcat/xcat2:latest", ["xcat/xcat2:latest"], [], True),
    ("daniceexi/xcat:centos6_xcat2.9", ["daniceexi/xcat:centos6_xcat2.9"], [], True),
    ("debian", ["debian:latest"], [], True),
    ("docker.io/library/debian:12", ["debian:12"], [], True),
    ("198.18.0.1:5000/xcatfab/xcat", ["198.18.0.1:5000/xcatfab/xcat:latest"], [], True),
    ("198.18.0.1:5000/xcatfab/xcat:t2", ["198.18.0.1:5000/xcatfab/xcat:t1"], [], False),
    ("reg:5000/x@sha256:" + "a" * 64, ["reg:5000/x:t"], ["reg:5000/x@sha256:" + "a" * 64], True),
    ("reg:5000/x@sha256:" + "b" * 64, ["reg:5000/x:t"], ["reg:5000/x@sha256:" + "a" * 64], False),
    ("xcat/xcat2@sha256:" + "a" * 64, [], ["xcat/xcat2@sha256:" + "a" * 64], True),
])
def test_pull_plans_a_pull_only_when_that_tag_or_digest_is_missing(wanted, tags, digests, present):
    image = {"Id": "sha256:" + "c" * 64, "RepoTags": tags, "RepoDigests": digests, "Config": {}}
    f = facts(docker__bin="/usr/bin/docker\n/usr/sbin/dockerd", docker__inspect=[image])
    actions = image_step.ImageStep().plan(run_for(cfg("image_source=pull", f"image={wanted}"), f))
    assert [a.kind for a in actions] == ([] if present else ["pull"])
