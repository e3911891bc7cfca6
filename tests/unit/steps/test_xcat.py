"""Planning the xcat-config step: the site keys and networks xcatfab owns."""


import pytest

from tasks.runtime.errors import StepFailed
from tasks.steps import xcat
from tests.unit.factshapes import facts, link, run_for
from tests.unit.factshapes import plan_cfg as cfg

# --- xcat ----------------------------------------------------------------
SITE = '#key,value,comments,disable\n"master","198.18.0.111",,\n"nameservers","198.18.0.111",,\n' \
       '"domain","lab.example",,\n"installdir","/install",,\n'
NETS = '#netname,net,mask,mgtifname,gateway,comments,disable\n' \
       '"198_18_0_0-255_255_255_0","198.18.0.0","255.255.255.0","eth0","198.18.0.1",,\n'
CTR_ADDRS = [link("lo"), link("eth0", ["198.18.0.111/24"])]


def test_xcat_converged_and_drifts():
    c = cfg()
    f = facts(xcat__site=SITE, xcat__networks=NETS, ctr__addrs=CTR_ADDRS)
    assert xcat.XcatConfigStep().plan(run_for(c, f)) == []
    f["xcat.site"] = SITE.replace('"master","198.18.0.111"', '"master","172.17.0.2"')
    (action,) = xcat.XcatConfigStep().plan(run_for(c, f))
    assert action.kind == "site" and action.data["values"] == {"master": "198.18.0.111"}
    # An entry the admin added is theirs: it stays.
    f = facts(xcat__site=SITE, ctr__addrs=CTR_ADDRS,
              xcat__networks=NETS + '"172_17_0_0-255_255_0_0","172.17.0.0","255.255.0.0",,,,\n')
    assert xcat.XcatConfigStep().plan(run_for(c, f)) == []
    # One xcatfab made for a subnet the container has left goes.
    f = facts(xcat__site=SITE, ctr__addrs=CTR_ADDRS,
              xcat__networks=NETS + '"10_9_0_0-255_255_0_0","10.9.0.0","255.255.0.0",,,"xcatfab",\n')
    (action,) = xcat.XcatConfigStep().plan(run_for(c, f))
    assert action.kind == "network_del" and action.data["netname"] == "10_9_0_0-255_255_0_0"


def test_xcat_adds_the_container_subnet_and_keeps_every_other_column():
    c = cfg()
    admin_edited = NETS.replace('"198.18.0.1",,', '"198.18.0.1","my note",')
    f = facts(xcat__site=SITE, ctr__addrs=CTR_ADDRS, xcat__networks=admin_edited)
    assert xcat.XcatConfigStep().plan(run_for(c, f)) == []  # the admin's columns are not xcatfab's business
    header = "#netname,net,mask,mgtifname,gateway,comments,disable\n"
    f = facts(xcat__site=SITE, ctr__addrs=CTR_ADDRS, xcat__networks=header)
    (action,) = xcat.XcatConfigStep().plan(run_for(c, f))
    assert action.kind == "network_add"
    assert action.data["entry"] == {"netname": "198_18_0_0-255_255_255_0", "net": "198.18.0.0",
                                    "mask": "255.255.255.0", "mgtifname": "eth0", "gateway": "198.18.0.1"}


def test_an_admin_edit_of_an_owned_site_key_is_set_back_saying_so():
    c = cfg()
    f = facts(xcat__site=SITE.replace('"domain","lab.example"', '"domain","other.example"'),
              xcat__networks=NETS, ctr__addrs=CTR_ADDRS)
    (action,) = xcat.XcatConfigStep().plan(run_for(c, f))
    assert action.data["values"] == {"domain": "lab.example"} and "set back" in action.summary


def test_xcat_unreadable_site_fails_or_is_blocked_in_plan():
    f = facts(xcat__site="Error: xcatd not running", ctr__addrs=CTR_ADDRS)
    with pytest.raises(StepFailed, match="cannot read xCAT's site table"):
        xcat.XcatConfigStep().plan(run_for(cfg(), f))
    (action,) = xcat.XcatConfigStep().plan(run_for(cfg(), f, plan_only=True))
    assert action.kind == "blocked"
