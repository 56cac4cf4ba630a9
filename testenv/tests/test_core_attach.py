"""Core: a three-network pod (bridge cluster network, macvlan on a px veth, second bridge) with mixed delegate
cniVersions, across Plexus' own cniVersion; kernel state, host-local reservations and the cache after ADD, and a
clean host after DEL."""

import json

import pytest

from testenv.lib import netns as nl
from testenv.lib import plexus as px
from testenv.lib.plexus import Pod, ThreeNetworks

# (Plexus' cniVersion, the delegates' cniVersions for eth0/net1/net2)
MATRIX = [
    ("0.3.1", ("0.4.0", "1.0.0", "0.3.1")),
    ("0.4.0", ("1.0.0", "0.3.1", "0.4.0")),
    ("1.0.0", ("0.3.1", "0.4.0", "1.0.0")),
    ("1.0.0", ("0.4.0", "1.0.0", "0.3.1")),
    ("1.1.0", ("1.0.0", "0.3.1", "0.4.0")),
]


def assert_result_shape(result, version):
    assert result["cniVersion"] == version, result
    assert result.get("ips"), result
    for ipc in result["ips"]:
        if version < "1.0.0":
            assert ipc.get("version") == "4", "a %s result needs ips[].version: %s" % (version, result)
        else:
            assert "version" not in ipc, "a %s result must not carry ips[].version: %s" % (version, result)


@pytest.mark.parametrize("plexus_version,versions", MATRIX, ids=["px%s-%s" % (p, "+".join(v)) for p, v in MATRIX])
def test_three_networks_add_then_del(pxenv, plexus_version, versions):
    nets = ThreeNetworks(pxenv, versions)
    pod = Pod(pxenv)
    cfg = pxenv.config(plexus_version, nets.lists)

    r = pod.add(cfg)
    assert r.code == 0, r
    assert_result_shape(r.out, plexus_version)

    # kernel: eth0/net1/net2 in the pod with exactly the addresses of their results
    addrs = pod.addresses()
    assert pod.links() == ["eth0", "net1", "net2"], addrs
    assert px.result_ips(r.out) == addrs["eth0"], (r.out, addrs)
    kinds = {n: l.get("linkinfo", {}).get("info_kind") for n, l in
             ((n, l) for n, l in json_links(pod.ns).items())}
    assert kinds["eth0"] == "veth" and kinds["net1"] == "macvlan" and kinds["net2"] == "veth", kinds

    host_links = []
    for i, (name, ifname, ver, lst) in enumerate(zip(nets.names, nets.ifnames, versions, nets.lists)):
        e = pxenv.cache.result_entry(name, pod.cid, ifname)
        assert e["kind"] == "cniCacheV1" and e["containerId"] == pod.cid and e["ifName"] == ifname, e
        assert e["networkName"] == name and e["netns"] == pod.netns_path, e
        assert e["plexusOwner"] == {"network": "pxnet", "ifName": "eth0"}, e
        assert json.loads(px.entry_config(e)) == lst, "cached config differs from the delegate conflist"
        assert ["K8S_POD_NAME", "pxpod"] in e["cniArgs"], e
        res = e["result"]
        assert res["cniVersion"] == ver, res
        assert px.result_ips(res) == addrs[ifname], (ifname, res, addrs)
        # host-local reserved exactly that address for this container
        ip = res["ips"][0]["address"].split("/")[0]
        assert pxenv.reservations()[name] == {ip: pod.cid}, pxenv.reservations()
        if i != 1:
            host_links += px.host_side_interfaces(res, nets.bridges[0 if i == 0 else 1])
    # the cluster network's cached result converted to Plexus' version is what ADD returned
    assert px.result_ips(pxenv.cache.result_entry(nets.names[0], pod.cid, "eth0")["result"]) == px.result_ips(r.out)
    assert len(host_links) == 2 and all(nl.link_exists(l) for l in host_links), host_links
    assert nl.bridge_ports(nets.bridges[0]) == [host_links[0]]
    assert nl.bridge_ports(nets.bridges[1]) == [host_links[1]]
    plan = pxenv.cache.plan("pxnet", pod.cid, "eth0")
    assert [n["ifName"] for n in plan["networks"]] == nets.ifnames, plan
    assert plan["containerId"] == pod.cid and plan["network"] == "pxnet", plan

    d = pod.delete(cfg)
    assert d.code == 0, d
    assert d.stdout == "", d
    pxenv.assert_clean(netns=[pod.ns], bridges=nets.bridges, host_links=host_links)
    assert nl.links(pod.ns).keys() == {"lo"}


def json_links(ns):
    return {l["ifname"]: l for l in nl.ip_json("-d", "link", "show", ns=ns)}


def test_two_pods_share_networks_and_del_only_their_own(pxenv):
    """Two pods on the same three networks: DEL of one leaves the other's links, IPs and cache intact."""
    nets = ThreeNetworks(pxenv)
    a, b = Pod(pxenv, "pxpoda"), Pod(pxenv, "pxpodb")
    cfg = pxenv.config("1.0.0", nets.lists)
    ra, rb = a.add(cfg), b.add(cfg)
    assert ra.code == 0 and rb.code == 0, (ra, rb)
    assert set(px.result_ips(ra.out)).isdisjoint(px.result_ips(rb.out))
    b_links = nets.host_links_of(b)
    a_files = pxenv.cache.files_of(a.cid)
    assert len(a_files) == 4, a_files   # 1 plan + 3 results

    assert a.delete(cfg).code == 0
    assert pxenv.cache.files_of(a.cid) == []
    assert sorted(pxenv.cache.files()) == sorted(pxenv.cache.files_of(b.cid)) and len(pxenv.cache.files()) == 4
    assert a.links() == [] and b.links() == ["eth0", "net1", "net2"]
    assert all(nl.link_exists(l) for l in b_links)
    res = pxenv.reservations()
    assert sorted(cid for net in res.values() for cid in net.values()) == [b.cid] * 3, res

    assert b.delete(cfg).code == 0
    pxenv.assert_clean(netns=[a.ns, b.ns], bridges=nets.bridges, host_links=b_links)
