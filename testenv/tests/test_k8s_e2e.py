"""End to end: CRD + NADs via kubectl, a pod with two NADs (a macvlan NAD named by name only + a bridge/static NAD
element with `ips` and `interface`), network-status read back with kubectl, DEL with the API server stopped; the
comma shorthand (`ns/name@if, name`), the default-network annotation and cni-args."""

import json
import os
import sys


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from testenv.lib import netns as nl  # noqa: E402
from testenv.lib.k8s_scenarios import (DEFAULT_NET_ANN, NETWORKS_ANN, bare, k8s_bins, kenv, kube,  # noqa: E402,F401
                                       macs_of)
from testenv.lib.kubeapi import KUBECTL  # noqa: E402

NS = "pxk-e2e"


def test_pod_with_two_nads_end_to_end(kenv):
    kube = kenv.kube
    crd_out = kenv.install_crd()
    if KUBECTL:
        assert "network-attachment-definitions.k8s.cni.cncf.io" in crd_out
    mv_cfg, mv_sub = kenv.macvlan_nad("pxk-mv")
    st_cfg, st_bridge = kenv.static_bridge_nad("pxk-st")
    kenv.apply_nad_kubectl(NS, "pxk-mv", mv_cfg)
    kenv.apply_nad_kubectl(NS, "pxk-st", st_cfg)
    static_ip = "10.231.%s.77/24" % kenv.subnet().split(".")[2]
    networks = json.dumps([{"name": "pxk-mv"},
                           {"name": "pxk-st", "namespace": NS, "interface": "pxstat0", "ips": [static_ip]}])
    # one annotation is either shorthand or JSON: the first element is the bare name (shorthand equivalent), the
    # second asks for static ips and an interface name; the comma shorthand is test_shorthand_annotation_*.
    pod = kenv.pod(NS, "web", {NETWORKS_ANN: networks})
    cluster = kenv.cluster()
    cfg = kenv.config()

    kube.clear_requests()
    out = pod.add(cfg)
    reqs = kube.requests()        # before kubectl adds its own
    assert out.ok, out
    assert sorted(pod.links()) == ["eth0", "net1", "pxstat0"]
    addrs = pod.addresses()
    assert len(addrs["eth0"]) == 1 and addrs["eth0"][0].startswith(cluster["subnet"].rsplit(".", 1)[0] + ".")
    assert len(addrs["net1"]) == 1 and addrs["net1"][0].startswith(mv_sub.rsplit(".", 1)[0] + ".")
    assert addrs["pxstat0"] == [static_ip]
    assert len(nl.bridge_ports(st_bridge)) == 1 and len(nl.bridge_ports(cluster["bridge"])) == 1
    # the result printed to the runtime is the cluster network's (as with Multus)
    assert [i["address"] for i in out.out["ips"]] == addrs["eth0"], out.out

    # network-status, read back with kubectl
    status = pod.status_kubectl() if KUBECTL else pod.status()
    assert status is not None, "no network-status annotation on the pod"
    macs = macs_of(pod.netns)
    by_if = {e.get("interface"): e for e in status}
    assert [e["name"] for e in status] == ["pxk-cluster", NS + "/pxk-mv", NS + "/pxk-st"], status
    assert set(by_if) == {"eth0", "net1", "pxstat0"}
    assert by_if["eth0"]["name"] == "pxk-cluster" and by_if["eth0"].get("default") is True
    assert by_if["eth0"]["ips"] == bare(addrs["eth0"])
    assert by_if["net1"]["name"] == NS + "/pxk-mv" and "default" not in by_if["net1"]
    assert by_if["net1"]["ips"] == bare(addrs["net1"])
    assert by_if["pxstat0"]["name"] == NS + "/pxk-st" and "default" not in by_if["pxstat0"]
    assert by_if["pxstat0"]["ips"] == [static_ip.split("/")[0]]
    for ifn, e in by_if.items():
        assert e["mac"].lower() == macs[ifn].lower(), (ifn, e, macs[ifn])
        assert "dns" in e
    # one GET pod, two GET NAD, one PATCH pods/status
    assert [(r["method"], r["path"]) for r in reqs] == [
        ("GET", "/api/v1/namespaces/%s/pods/web" % NS),
        ("GET", "/apis/k8s.cni.cncf.io/v1/namespaces/%s/network-attachment-definitions/pxk-mv" % NS),
        ("GET", "/apis/k8s.cni.cncf.io/v1/namespaces/%s/network-attachment-definitions/pxk-st" % NS),
        ("PATCH", "/api/v1/namespaces/%s/pods/web/status" % NS)], reqs

    # kubectl lists the NADs
    if KUBECTL:
        listing = kube.kubectl("get", "net-attach-def", "-n", NS, "-o", "name").stdout.split()
        assert sorted(x.rsplit("/", 1)[1] for x in listing) == ["pxk-mv", "pxk-st"], listing
        assert all(x.startswith("networkattachmentdefinition.k8s.cni.cncf.io/") for x in listing), listing
        table = kube.kubectl("get", "net-attach-def", "-n", NS).stdout
        assert "pxk-mv" in table and "pxk-st" in table

    # DEL with the API server stopped frees everything
    assert kenv.reservations() and kenv.cache_files()
    kube.stop()
    out = pod.delete(cfg)
    assert out.ok, out
    assert kenv.leftovers(pods=[pod], bridges=[cluster["bridge"], st_bridge]) == []


def test_shorthand_annotation_with_interface(kenv):
    """`ns/name@ifname, name` shorthand: positions give net<i> unless @ifname is given."""
    kenv.install_crd()
    mv_cfg, mv_sub = kenv.macvlan_nad("pxk-mv")
    br_cfg, br, br_sub = kenv.hostlocal_bridge_nad("pxk-br")
    kenv.apply_nad_kubectl(NS, "pxk-mv", mv_cfg)
    kenv.apply_nad_kubectl(NS, "pxk-br", br_cfg)
    pod = kenv.pod(NS, "short", {NETWORKS_ANN: "%s/pxk-br@pxbr0, pxk-mv" % NS})
    cfg = kenv.config()
    out = pod.add(cfg)
    assert out.ok, out
    assert pod.links() == ["eth0", "net2", "pxbr0"]
    addrs = pod.addresses()
    assert addrs["pxbr0"][0].startswith(br_sub.rsplit(".", 1)[0] + ".")
    assert addrs["net2"][0].startswith(mv_sub.rsplit(".", 1)[0] + ".")
    status = pod.status()
    assert [(e["name"], e["interface"], e.get("default", False)) for e in status] == [
        ("pxk-cluster", "eth0", True), (NS + "/pxk-br", "pxbr0", False), (NS + "/pxk-mv", "net2", False)]
    assert pod.delete(cfg).ok
    assert kenv.leftovers(pods=[pod], bridges=[br, kenv.cluster()["bridge"]]) == []


def test_default_network_annotation_replaces_cluster_network(kenv):
    kube = kenv.kube
    kenv.install_crd()
    br_cfg, br, br_sub = kenv.hostlocal_bridge_nad("pxk-def")
    kenv.apply_nad_kubectl(NS, "pxk-def", br_cfg)
    mv_cfg, mv_sub = kenv.macvlan_nad("pxk-mv")
    kenv.apply_nad_kubectl(NS, "pxk-mv", mv_cfg)
    pod = kenv.pod(NS, "dflt", {DEFAULT_NET_ANN: "%s/pxk-def" % NS, NETWORKS_ANN: "pxk-mv"})
    cluster = kenv.cluster()
    cfg = kenv.config()
    kube.clear_requests()
    out = pod.add(cfg)
    assert out.ok, out
    assert pod.links() == ["eth0", "net1"]
    addrs = pod.addresses()
    assert addrs["eth0"][0].startswith(br_sub.rsplit(".", 1)[0] + "."), addrs
    assert nl.bridge_ports(cluster["bridge"]) == [], "the cluster network was attached although replaced"
    assert len(nl.bridge_ports(br)) == 1
    status = pod.status()
    assert [(e["name"], e["interface"], e.get("default", False)) for e in status] == [
        (NS + "/pxk-def", "eth0", True), (NS + "/pxk-mv", "net1", False)], status
    assert status[0]["ips"] == bare(addrs["eth0"])
    assert len(kube.requests()) == 2 + 2
    assert pod.delete(cfg).ok
    assert kenv.leftovers(pods=[pod], bridges=[br, cluster["bridge"]]) == []


def test_cni_args_reach_the_delegate(kenv):
    """cni-args of the annotation element end up in the delegate's `args.cni` (recorded by the fake delegate)."""
    kenv.install_crd()
    rec = os.path.join(kenv.tmp, "rec")
    kenv.apply_nad_kubectl(NS, "pxk-rec", {"cniVersion": "1.0.0", "name": "pxk-rec", "type": "plexus-test-delegate",
                                            "recordDir": rec, "ip": "10.231.149.9/24",
                                            "args": {"cni": {"keep": "me"}}})
    pod = kenv.pod(NS, "args", {NETWORKS_ANN: json.dumps([
        {"name": "pxk-rec", "interface": "pxrec0", "cni-args": {"foo": "bar", "n": 5, "nested": {"a": [1, 2]}}}])})
    cfg = kenv.config()
    out = pod.add(cfg, cni_path=kenv.bin_dir)
    assert out.ok, out
    recs = sorted(f for f in os.listdir(rec) if "-ADD-" in f)
    assert len(recs) == 1, recs
    with open(os.path.join(rec, recs[0])) as f:
        record = json.load(f)
    stdin = record["stdin"]
    assert record["env"]["CNI_IFNAME"] == "pxrec0"
    assert stdin["name"] == "pxk-rec"
    assert stdin["args"]["cni"] == {"keep": "me", "foo": "bar", "n": 5, "nested": {"a": [1, 2]}}, stdin
    assert pod.delete(cfg, cni_path=kenv.bin_dir).ok
    assert kenv.leftovers(pods=[pod]) == []


def test_cni_args_reach_tuning_in_a_nad_conflist(kenv):
    """A real reference plugin consumes cni-args: tuning reads `args.cni.mac` and sets the MAC of the interface."""
    kenv.install_crd()
    mv_cfg, _ = kenv.macvlan_nad("pxk-tun")
    plugins = [{k: v for k, v in mv_cfg.items() if k not in ("cniVersion", "name")}, {"type": "tuning"}]
    kenv.apply_nad_kubectl(NS, "pxk-tun", {"cniVersion": "1.0.0", "name": "pxk-tun", "plugins": plugins})
    mac = "02:42:0a:e7:64:2a"
    pod = kenv.pod(NS, "tun", {NETWORKS_ANN: json.dumps([{"name": "pxk-tun", "cni-args": {"mac": mac}}])})
    cfg = kenv.config()
    out = pod.add(cfg)
    assert out.ok, out
    assert macs_of(pod.netns)["net1"].lower() == mac
    status = pod.status()
    assert status[1]["name"] == NS + "/pxk-tun" and status[1]["mac"].lower() == mac
    assert pod.delete(cfg).ok
    assert kenv.leftovers(pods=[pod]) == []
