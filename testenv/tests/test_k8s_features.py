"""More of the Kubernetes behaviour, end to end: NADs without spec.config (file in confDir), name injection,
per-network runtimeConfig only for declaring plugins, the mac capability through tuning, defaultNetworks and
systemNamespaces ordering, clusterNetwork as a NAD in multusNamespace, a pod missing from the API."""

import json

import pytest
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from testenv.lib import netns as nl  # noqa: E402
from testenv.lib import plexus as px  # noqa: E402
from testenv.lib.k8s_scenarios import NETWORKS_ANN, k8s_bins, kenv, kube, macs_of  # noqa: E402,F401

NS = "pxk-feat"


def _records(rec_dir, command="ADD"):
    out = []
    for f in sorted(os.listdir(rec_dir), key=lambda n: int(n.split("-", 1)[0])):
        if "-%s-" % command in f:
            with open(os.path.join(rec_dir, f)) as fh:
                out.append(json.load(fh))
    return out


def test_nad_without_config_uses_file_in_confdir(kenv):
    kenv.install_crd()
    mv_cfg, mv_sub = kenv.macvlan_nad("pxk-file")
    with open(os.path.join(kenv.conf_dir, "10-pxk-file.conf"), "w") as f:
        json.dump(mv_cfg, f)
    kenv.apply_nad_kubectl(NS, "pxk-file", None)            # spec: {}
    assert "config" not in (kenv.kube.get_nad(NS, "pxk-file").get("spec") or {})
    pod = kenv.pod(NS, "file", {NETWORKS_ANN: "pxk-file"})
    cfg = kenv.config()
    out = pod.add(cfg)
    assert out.ok, out
    assert pod.links() == ["eth0", "net1"]
    assert pod.addresses()["net1"][0].startswith(mv_sub.rsplit(".", 1)[0] + ".")
    assert [e["name"] for e in pod.status()] == ["pxk-cluster", NS + "/pxk-file"]
    assert pod.delete(cfg).ok
    assert kenv.leftovers(pods=[pod]) == []


def test_nad_config_without_name_gets_the_nad_name(kenv):
    kenv.install_crd()
    rec = os.path.join(kenv.tmp, "rec")
    kenv.apply_nad_kubectl(NS, "pxk-noname", {"cniVersion": "1.0.0", "type": px.FAKE, "recordDir": rec,
                                              "ip": "10.231.148.4/24"})
    pod = kenv.pod(NS, "noname", {NETWORKS_ANN: "pxk-noname"})
    cfg = kenv.config()
    out = pod.add(cfg)
    assert out.ok, out
    recs = _records(rec)
    assert len(recs) == 1 and recs[0]["stdin"]["name"] == "pxk-noname", recs
    st = pod.status()
    assert st[1]["name"] == NS + "/pxk-noname" and st[1]["ips"] == ["10.231.148.4"]
    assert pod.delete(cfg).ok
    assert len(_records(rec, "DEL")) == 1
    assert kenv.leftovers(pods=[pod]) == []


def test_runtime_config_only_for_plugins_declaring_the_capability(kenv):
    kenv.install_crd()
    rec = os.path.join(kenv.tmp, "rec")
    plugins = [{"type": px.FAKE, "recordDir": rec, "ip": "10.231.148.5/24",
                "capabilities": {"ips": True, "portMappings": True}},
               {"type": px.FAKE, "recordDir": rec, "capabilities": {"bandwidth": True}},
               {"type": px.FAKE, "recordDir": rec}]
    kenv.apply_nad_kubectl(NS, "pxk-caps", {"cniVersion": "1.0.0", "name": "pxk-caps", "plugins": plugins})
    element = {"name": "pxk-caps", "ips": ["10.231.148.5/24"],
               "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
               "bandwidth": {"ingressRate": 1000, "ingressBurst": 2000, "egressRate": 3000, "egressBurst": 4000}}
    pod = kenv.pod(NS, "caps", {NETWORKS_ANN: json.dumps([element])})
    cfg = kenv.config()
    out = pod.add(cfg)
    assert out.ok, out
    recs = _records(rec)
    assert len(recs) == 3, recs
    rc = [r["stdin"].get("runtimeConfig") for r in recs]
    assert rc[0] is not None and rc[0].get("ips") == ["10.231.148.5/24"], rc
    assert [{k: v for k, v in pm.items()} for pm in rc[0]["portMappings"]] == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}], rc
    assert "bandwidth" not in rc[0]
    assert rc[1] is not None and set(rc[1]) == {"bandwidth"}, rc
    assert rc[1]["bandwidth"] == {"ingressRate": 1000, "ingressBurst": 2000, "egressRate": 3000,
                                  "egressBurst": 4000}, rc
    assert not rc[2], rc
    for r in recs:
        assert r["env"]["CNI_IFNAME"] == "net1"
        assert "capabilities" not in r["stdin"] or isinstance(r["stdin"]["capabilities"], dict)
    assert pod.delete(cfg).ok
    assert kenv.leftovers(pods=[pod]) == []


def test_mac_request_through_tuning_capability(kenv):
    kenv.install_crd()
    mv_cfg, _ = kenv.macvlan_nad("pxk-mac")
    macvlan = {k: v for k, v in mv_cfg.items() if k not in ("cniVersion", "name")}
    kenv.apply_nad_kubectl(NS, "pxk-mac", {"cniVersion": "1.0.0", "name": "pxk-mac",
                                           "plugins": [macvlan, {"type": "tuning", "capabilities": {"mac": True}}]})
    mac = "02:42:0a:e7:94:11"
    pod = kenv.pod(NS, "mac", {NETWORKS_ANN: json.dumps([{"name": "pxk-mac", "mac": mac, "interface": "pxmac0"}])})
    cfg = kenv.config()
    out = pod.add(cfg)
    assert out.ok, out
    assert macs_of(pod.netns)["pxmac0"].lower() == mac
    st = pod.status()
    assert st[1]["interface"] == "pxmac0" and st[1]["mac"].lower() == mac, st
    assert pod.delete(cfg).ok
    assert kenv.leftovers(pods=[pod]) == []


def test_default_networks_come_before_annotation_networks(kenv):
    kenv.install_crd()
    extra_cfg, extra_br, extra_sub = kenv.hostlocal_bridge_nad("pxk-extra")
    with open(os.path.join(kenv.conf_dir, "20-pxk-extra.conf"), "w") as f:
        json.dump(extra_cfg, f)
    mv_cfg, mv_sub = kenv.macvlan_nad("pxk-mv")
    kenv.apply_nad_kubectl(NS, "pxk-mv", mv_cfg)
    kenv.apply_nad_kubectl("kube-system", "pxk-mv", mv_cfg)
    cfg = kenv.config(defaultNetworks=["pxk-extra"])
    pod = kenv.pod(NS, "dn", {NETWORKS_ANN: "pxk-mv"})
    kenv.kube.clear_requests()
    out = pod.add(cfg)
    assert out.ok, out
    assert len(kenv.kube.requests()) == 3, "a defaultNetwork found in confDir must not cost a request"
    assert pod.links() == ["eth0", "net1", "net2"]
    addrs = pod.addresses()
    assert addrs["net1"][0].startswith(extra_sub.rsplit(".", 1)[0] + ".")
    assert addrs["net2"][0].startswith(mv_sub.rsplit(".", 1)[0] + ".")
    st = pod.status()
    assert [(e["name"], e["interface"], e.get("default", False)) for e in st] == [
        ("pxk-cluster", "eth0", True), ("pxk-extra", "net1", False), (NS + "/pxk-mv", "net2", False)], st
    assert pod.delete(cfg).ok
    # a system-namespace pod does not get defaultNetworks, but still gets its annotation networks
    sys_pod = kenv.pod("kube-system", "sysp", {NETWORKS_ANN: "pxk-mv"})
    out = sys_pod.add(cfg)
    assert out.ok, out
    assert sys_pod.links() == ["eth0", "net1"]
    assert nl.bridge_ports(extra_br) == []
    assert [e["name"] for e in sys_pod.status()] == ["pxk-cluster", "kube-system/pxk-mv"]
    assert sys_pod.delete(cfg).ok
    assert kenv.leftovers(pods=[pod, sys_pod], bridges=[extra_br]) == []


def test_cluster_network_as_nad_in_multus_namespace(kenv):
    kenv.install_crd()
    br_cfg, br, sub = kenv.hostlocal_bridge_nad("pxk-clnad")
    kenv.apply_nad_kubectl("pxk-sys", "pxk-clnad", br_cfg)
    mv_cfg, _ = kenv.macvlan_nad("pxk-mv")
    kenv.apply_nad_kubectl(NS, "pxk-mv", mv_cfg)
    cfg = kenv.config(delegates=None, multusNamespace="pxk-sys")
    cfg.pop("delegates")
    cfg["clusterNetwork"] = "pxk-clnad"
    pod = kenv.pod(NS, "clnad", {NETWORKS_ANN: "pxk-mv"})
    kenv.kube.clear_requests()
    out = pod.add(cfg)
    assert out.ok, out
    paths = [r["path"] for r in kenv.kube.requests()]
    assert any(p.endswith("/namespaces/pxk-sys/network-attachment-definitions/pxk-clnad") for p in paths), paths
    assert len(paths) == 2 + 2, paths
    assert pod.links() == ["eth0", "net1"]
    assert pod.addresses()["eth0"][0].startswith(sub.rsplit(".", 1)[0] + ".")
    assert len(nl.bridge_ports(br)) == 1
    st = pod.status()
    assert st[0]["interface"] == "eth0" and st[0].get("default") is True, st
    assert pod.delete(cfg).ok
    assert kenv.leftovers(pods=[pod], bridges=[br]) == []


def test_pod_missing_from_api_fails_and_attaches_nothing(kenv):
    kenv.install_crd()
    pod = kenv.pod(NS, "ghost", create=False)
    out = pod.add(kenv.config())
    assert not out.ok, out
    assert "%s/ghost" % NS in out.msg, out
    assert kenv.leftovers(pods=[pod], bridges=[kenv.cluster()["bridge"]]) == []


def _default_routes(ns):
    return [(r.get("gateway"), r.get("dev")) for r in nl.ip_json("-4", "route", "show", "default", ns=ns)]


def test_default_route_request_moves_the_default_route(kenv):
    """NPWG 4.1.2.1.9: the element with `default-route` gets the pod's default route (via the requested gateway,
    on that interface) and the default route is cleared from the cluster-default attachment; network-status reports
    the gateway on that entry."""
    kenv.install_crd()
    cl_br = kenv.bridge()
    cl_sub = kenv.subnet()
    cl_gw = cl_sub.replace(".0/24", ".1")
    cluster = px.conflist("pxk-cluster", "1.0.0", [px.bridge(cl_br, cl_sub, kenv.data_dir)])
    cluster["plugins"][0]["ipam"].update(gateway=cl_gw, routes=[{"dst": "0.0.0.0/0"}])
    br_cfg, br, sub = kenv.hostlocal_bridge_nad("pxk-gw")
    gw = sub.replace(".0/24", ".1")
    br_cfg["ipam"]["gateway"] = gw
    kenv.apply_nad_kubectl(NS, "pxk-gw", br_cfg)
    cfg = kenv.config(delegates=[cluster])

    plain = kenv.pod(NS, "plain", {NETWORKS_ANN: "pxk-gw"})
    out = plain.add(cfg)
    assert out.ok, out
    assert _default_routes(plain.netns) == [(cl_gw, "eth0")]     # baseline: the cluster network's default route
    assert plain.delete(cfg).ok

    pod = kenv.pod(NS, "dr", {NETWORKS_ANN: json.dumps([{"name": "pxk-gw", "default-route": [gw]}])})
    out = pod.add(cfg)
    assert out.ok, out
    st = pod.status()
    assert st[1]["name"] == NS + "/pxk-gw" and st[1].get("gateway") == [gw], st
    assert st[0].get("default") is True and "default" not in st[1], st
    routes = _default_routes(pod.netns)
    assert routes == [(gw, "net1")], "default routes in the pod: %s (expected only via %s dev net1)" % (routes, gw)
    assert pod.delete(cfg).ok
    assert kenv.leftovers(pods=[plain, pod], bridges=[br, cl_br]) == []
