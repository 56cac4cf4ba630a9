"""Core: when the 3rd network of an ADD fails, the first two (and whatever the failing one allocated) are rolled
back: no links, no host-local reservations, no cache files, no plan; the error names the pod and the network."""

import pytest

from testenv.lib import netns as nl
from testenv.lib import plexus as px
from testenv.lib.plexus import Pod, ThreeNetworks

THIRD = ["fake-fails", "bridge-then-fake-fails", "macvlan-missing-master"]


def third_network(env, kind):
    if kind == "fake-fails":
        return px.conflist("pxfail", "1.0.0", [px.fake(recordDir=env.rec_dir,
                                                      fail={"ADD": {"code": 11, "msg": "pxinjected add failure"}})])
    if kind == "bridge-then-fake-fails":
        b = env.bridge()
        return px.conflist("pxfail", "1.0.0", [
            px.bridge(b, env.subnet(), env.data_dir),
            px.fake(recordDir=env.rec_dir, fail={"ADD": {"code": 11, "msg": "pxinjected add failure"}})])
    if kind == "macvlan-missing-master":
        return px.conflist("pxfail", "1.0.0", [px.macvlan(env.net.new_name("m"), env.subnet(), env.data_dir)])
    raise ValueError(kind)


@pytest.mark.parametrize("kind", THIRD)
@pytest.mark.parametrize("plexus_version", ["0.4.0", "1.0.0"])
def test_third_network_failure_rolls_back_everything(pxenv, kind, plexus_version):
    nets = ThreeNetworks(pxenv, ("1.0.0", "0.4.0", "1.0.0"))
    third = third_network(pxenv, kind)
    bridges = nets.bridges + ([third["plugins"][0]["bridge"]] if kind == "bridge-then-fake-fails" else [])
    # eth0 = bridge, net1 = macvlan, net2 = the failing network (the second bridge network is not used here)
    cfg = pxenv.config(plexus_version, [nets.lists[0], nets.lists[1], third])
    pod = Pod(pxenv)

    r = pod.add(cfg)
    assert r.code == 1, r
    assert r.out is not None and r.stdout.count("\n") == 1, r   # exactly one JSON error document
    assert r.out["cniVersion"] == plexus_version, r.out
    assert "pxns/pxpod" in r.out["msg"], r.out
    assert '"pxfail"' in r.out["msg"] and "net2" in r.out["msg"], r.out
    assert "rollback incomplete" not in r.out["msg"], r.out
    if kind != "macvlan-missing-master":
        assert r.out["code"] == 11 and "pxinjected add failure" in r.out["msg"], r.out

    pxenv.assert_clean(netns=[pod.ns], bridges=bridges)
    assert pod.links() == []
    assert not pxenv.cache.plan_files()
    if kind != "macvlan-missing-master":
        # the failed network itself was DELeted too (it may have allocated before failing)
        cmds = [rec["_command"] for rec in px.read_records(pxenv.rec_dir)]
        assert cmds == ["ADD", "DEL"], cmds

    # the runtime's DEL after a failed ADD is harmless and leaves nothing behind
    d = pod.delete(cfg)
    assert d.code == 0, d
    pxenv.assert_clean(netns=[pod.ns], bridges=bridges)


def test_first_network_failure_leaves_nothing(pxenv):
    """The cluster network itself fails inside its chain after the bridge allocated."""
    b = pxenv.bridge()
    first = px.conflist("pxfirst", "1.0.0", [px.bridge(b, pxenv.subnet(), pxenv.data_dir),
                                             px.fake(fail={"ADD": {"code": 7, "msg": "pxbad"}})])
    second = px.conflist("pxsecond", "1.0.0", [px.fake(stateDir=pxenv.state_dir)])
    pod = Pod(pxenv)
    r = pod.add(pxenv.config("1.0.0", [first, second]))
    assert r.code == 1 and r.out["code"] == 7, r
    assert "pxns/pxpod" in r.out["msg"] and '"pxfirst"' in r.out["msg"], r.out
    assert nl.links(pod.ns).keys() == {"lo"}
    import os
    assert os.listdir(pxenv.state_dir) == [], "the second network must never have been added"
    pxenv.assert_clean(netns=[pod.ns], bridges=[b])


def test_error_names_container_without_pod_args(pxenv):
    nets = ThreeNetworks(pxenv)
    cfg = pxenv.config("1.0.0", [nets.lists[0], third_network(pxenv, "fake-fails")])
    pod = Pod(pxenv)
    r = pod.add(cfg, cni_args="")
    assert r.code == 1, r
    assert pod.cid in r.out["msg"] and '"pxfail"' in r.out["msg"], r.out
    pxenv.assert_clean(netns=[pod.ns], bridges=nets.bridges)
