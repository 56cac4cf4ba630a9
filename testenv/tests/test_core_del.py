"""Core: DEL robustness. A deleted netns or no CNI_NETNS still frees host-local IPs; corrupt or truncated plan and
result files never fail DEL nor leak resources; DEL twice and DEL of a never-added container succeed."""

import os

import pytest

from testenv.lib import netns as nl
from testenv.lib.plexus import Pod, ThreeNetworks


@pytest.fixture
def added(pxenv):
    """A pod with eth0 (bridge 1.0.0), net1 (macvlan 0.4.0), net2 (bridge 0.3.1), successfully added."""
    nets = ThreeNetworks(pxenv, ("1.0.0", "0.4.0", "0.3.1"))
    cfg = pxenv.config("1.0.0", nets.lists)
    pod = Pod(pxenv)
    r = pod.add(cfg)
    assert r.code == 0, r
    assert len(pxenv.reservations()) == 3 and len(pxenv.cache_files()) == 4
    host_links = nets.host_links_of(pod)
    assert len(host_links) == 2 and all(nl.link_exists(l) for l in host_links)
    return nets, cfg, pod, host_links


@pytest.mark.parametrize("netns_mode", ["deleted", "unset", "empty"])
def test_del_without_netns_frees_ips(pxenv, added, netns_mode):
    nets, cfg, pod, host_links = added
    if netns_mode == "deleted":
        nl.ip("netns", "del", pod.ns)
        assert not nl.netns_exists(pod.ns)
        # the kernel destroys the pod's veths with the namespace (asynchronously); the IPs are still reserved
        assert nl.links_left(host_links) == []
        assert len(pxenv.reservations()) == 3
        d = pod.delete(cfg)   # CNI_NETNS still names the (now missing) path, as containerd does
    elif netns_mode == "unset":
        d = pod.delete(cfg, netns=None)
    else:
        d = pod.delete(cfg, netns="")
    assert d.code == 0, d
    assert pxenv.reservations() == {}, pxenv.reservations()
    assert pxenv.cache_files() == []
    if netns_mode == "deleted":
        pxenv.assert_clean(bridges=nets.bridges, host_links=host_links)
    else:
        # without a netns the delegates cannot reach the pod's interfaces: the IPs and the cache are what DEL owes
        assert pxenv.reservations() == {}
        nl.ip("netns", "del", pod.ns)
        pxenv.assert_clean(bridges=nets.bridges, host_links=host_links)


def _garbage(path):
    with open(path, "wb") as f:
        f.write(b"\x00\xffnot json at all {{{[")


def _truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def _empty(path):
    open(path, "wb").close()


CORRUPTIONS = {
    # name: [(which file, how)]; which = "plan" or an ifname whose result file is damaged
    "plan-garbage": [("plan", _garbage)],
    "plan-truncated": [("plan", _truncate)],
    "plan-empty": [("plan", _empty)],
    "result-eth0-garbage": [("eth0", _garbage)],
    "result-net1-truncated": [("net1", _truncate)],
    "all-results-truncated": [("eth0", _truncate), ("net1", _truncate), ("net2", _truncate)],
    "plan-and-all-results-garbage": [("plan", _garbage), ("eth0", _garbage), ("net1", _garbage), ("net2", _garbage)],
    "plan-and-net2-result-truncated": [("plan", _truncate), ("net2", _truncate)],
    "plan-and-eth0-result-garbage": [("plan", _garbage), ("eth0", _garbage)],
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_cache_does_not_break_del(pxenv, added, corruption):
    nets, cfg, pod, host_links = added
    for which, how in CORRUPTIONS[corruption]:
        if which == "plan":
            how(pxenv.cache.plan_path("pxnet", pod.cid, "eth0"))
        else:
            i = nets.ifnames.index(which)
            how(pxenv.cache.result_path(nets.names[i], pod.cid, which))
    d = pod.delete(cfg)
    assert d.code == 0, d
    assert d.stdout == ""
    pxenv.assert_clean(netns=[pod.ns], bridges=nets.bridges, host_links=host_links)


def test_del_twice(pxenv, added):
    nets, cfg, pod, host_links = added
    first = pod.delete(cfg)
    assert first.code == 0, first
    pxenv.assert_clean(netns=[pod.ns], bridges=nets.bridges, host_links=host_links)
    second = pod.delete(cfg)
    assert second.code == 0 and second.stdout == "", second
    pxenv.assert_clean(netns=[pod.ns], bridges=nets.bridges, host_links=host_links)
    # and once more with the netns gone (containerd's DEL after sandbox removal)
    nl.ip("netns", "del", pod.ns)
    third = pod.delete(cfg)
    assert third.code == 0, third
    pxenv.assert_clean(bridges=nets.bridges)


@pytest.mark.parametrize("netns_mode", ["present", "unset"])
def test_del_of_never_added_container(pxenv, netns_mode):
    nets = ThreeNetworks(pxenv, ("1.0.0", "0.4.0", "0.3.1"))
    other = Pod(pxenv, "pxother")
    cfg = pxenv.config("1.0.0", nets.lists)
    assert other.add(cfg).code == 0
    before = (sorted(pxenv.cache_files()), pxenv.reservations(), other.links())

    pod = Pod(pxenv)
    d = pod.delete(cfg, netns=pod.netns_path if netns_mode == "present" else None)
    assert d.code == 0, d
    assert d.stdout == ""
    # nothing created for the unknown container, nothing of the other pod touched
    assert (sorted(pxenv.cache_files()), pxenv.reservations(), other.links()) == before
    assert pod.links() == []

    assert other.delete(cfg).code == 0
    pxenv.assert_clean(netns=[pod.ns, other.ns], bridges=nets.bridges)
