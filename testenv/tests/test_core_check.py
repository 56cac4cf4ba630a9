"""Core: CHECK runs on every cached network. A healthy three-network pod passes; after deleting one network's link
by hand CHECK fails naming that network; networks below 0.4.0 and those with disableCheck are skipped."""

import pytest

from testenv.lib import netns as nl
from testenv.lib import plexus as px
from testenv.lib.plexus import Pod, ThreeNetworks


@pytest.mark.parametrize("broken", ["net2", "net1", "eth0"])
@pytest.mark.parametrize("plexus_version", ["0.4.0", "1.0.0", "1.1.0"])
def test_check_healthy_then_broken(pxenv, broken, plexus_version):
    nets = ThreeNetworks(pxenv, ("1.0.0", "0.4.0", "1.0.0"))
    cfg = pxenv.config(plexus_version, nets.lists)
    pod = Pod(pxenv)
    assert pod.add(cfg).code == 0

    ok = pod.check(cfg)
    assert ok.code == 0 and ok.stdout == "", ok

    nl.ip("link", "del", broken, ns=pod.ns)
    bad = pod.check(cfg)
    assert bad.code == 1, bad
    name = nets.names[nets.ifnames.index(broken)]
    assert ('network "%s"' % name) in bad.out["msg"] and broken in bad.out["msg"], bad.out
    assert "pxns/pxpod" in bad.out["msg"], bad.out
    for other in set(nets.names) - {name}:
        assert ('network "%s"' % other) not in bad.out["msg"], bad.out

    # the broken pod can still be deleted completely
    host_links = nets.host_links_of(pod)
    d = pod.delete(cfg)
    assert d.code == 0, d
    pxenv.assert_clean(netns=[pod.ns], bridges=nets.bridges, host_links=host_links)


def test_check_skips_pre_040_networks(pxenv):
    nets = ThreeNetworks(pxenv, ("1.0.0", "0.4.0", "0.3.1"))
    cfg = pxenv.config("1.0.0", nets.lists)
    pod = Pod(pxenv)
    assert pod.add(cfg).code == 0
    nl.ip("link", "del", "net2", ns=pod.ns)
    r = pod.check(cfg)
    assert r.code == 0, r   # net2's network is 0.3.1: CHECK does not exist there
    nl.ip("link", "del", "net1", ns=pod.ns)
    r = pod.check(cfg)
    assert r.code == 1 and 'network "pxb"' in r.out["msg"], r
    assert pod.delete(cfg).code == 0
    pxenv.assert_clean(netns=[pod.ns], bridges=nets.bridges)


def test_check_honours_disable_check(pxenv):
    nets = ThreeNetworks(pxenv, ("1.0.0", "1.0.0", "1.0.0"))
    nets.lists[2]["disableCheck"] = True
    cfg = pxenv.config("1.0.0", nets.lists)
    pod = Pod(pxenv)
    assert pod.add(cfg).code == 0
    nl.ip("link", "del", "net2", ns=pod.ns)
    r = pod.check(cfg)
    assert r.code == 0, r
    assert pod.delete(cfg).code == 0
    pxenv.assert_clean(netns=[pod.ns], bridges=nets.bridges)


def test_check_reaches_every_network_chain(pxenv):
    """Fake delegates with stateDir: CHECK is sent to all three networks (not only the cluster one)."""
    lists = [px.conflist("pxf%d" % i, "1.0.0", [px.fake(recordDir=pxenv.rec_dir, stateDir=pxenv.state_dir,
                                                        ip="10.231.%d.2/24" % (63 + i))]) for i in range(3)]
    cfg = pxenv.config("1.0.0", lists)
    pod = Pod(pxenv)
    assert pod.add(cfg).code == 0
    r = pod.check(cfg)
    assert r.code == 0, r
    checks = sorted((rec["stdin"]["name"], rec["env"]["CNI_IFNAME"]) for rec in px.read_records(pxenv.rec_dir, "CHECK"))
    assert checks == [("pxf0", "eth0"), ("pxf1", "net1"), ("pxf2", "net2")], checks
    # every CHECK carried its network's cached result as prevResult
    for rec in px.read_records(pxenv.rec_dir, "CHECK"):
        assert rec["stdin"]["prevResult"]["ips"][0]["address"].startswith("10.231.6"), rec["stdin"]
    import os
    os.unlink(os.path.join(pxenv.state_dir, "%s-net1" % pod.cid))
    r = pod.check(cfg)
    assert r.code == 1 and 'network "pxf1"' in r.out["msg"], r
    assert pod.delete(cfg).code == 0
    assert pxenv.cache_files() == [] and os.listdir(pxenv.state_dir) == []
