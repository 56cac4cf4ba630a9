"""NPWG `default-route` over netlink, end to end: real netns, Debian's bridge and host-local (dual-stack), the test API
server, and the kernel's routes checked with `ip` afterwards. A request moves the default route of the families it
names, and only those; network-status reports the kernel's interfaces (read back with kubectl)."""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from testenv.lib import netns as nl  # noqa: E402
from testenv.lib import plexus as px  # noqa: E402
from testenv.lib.k8s_scenarios import NETWORKS_ANN, k8s_bins, kenv, kube  # noqa: E402,F401

NS = "pxk-dr"


def defaults(ns, family):
    """[(gateway, dev)] of the main-table default routes of one family ("-4" or "-6")."""
    return sorted((r.get("gateway"), r.get("dev")) for r in nl.ip_json(family, "route", "show", "default", ns=ns))


def dual_stack_ipam(kenv, v4, v6):
    return {"type": "host-local", "dataDir": kenv.data_dir,
            "ranges": [[{"subnet": v4}], [{"subnet": v6}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}


class Nets:
    """A dual-stack cluster network (eth0, default routes for both families) and a second bridge network, as NADs."""

    def __init__(self, kenv, second_dual_stack=False):
        kenv.install_crd()
        self.kenv = kenv
        self.cl_br, self.br = kenv.bridge(), kenv.bridge()
        self.cl4, self.sub4 = kenv.subnet(), kenv.subnet()
        k = int(self.cl4.split(".")[2])
        self.cl6, self.sub6 = "fd31:0:0:%d::/64" % k, "fd31:0:1:%d::/64" % k
        self.cl_gw4, self.gw4 = self.cl4.replace(".0/24", ".1"), self.sub4.replace(".0/24", ".1")
        self.cl_gw6, self.gw6 = self.cl6.replace("::/64", "::1"), self.sub6.replace("::/64", "::1")
        self.cluster = px.conflist("pxk-cluster", "1.0.0", [px.bridge(self.cl_br, self.cl4, kenv.data_dir)])
        self.cluster["plugins"][0]["ipam"] = dual_stack_ipam(kenv, self.cl4, self.cl6)
        cfg, _, _ = kenv.hostlocal_bridge_nad("pxk-gw")
        cfg["bridge"] = self.br
        cfg["ipam"] = dual_stack_ipam(kenv, self.sub4, self.sub6) if second_dual_stack else px.host_local(self.sub4, kenv.data_dir)
        if second_dual_stack:
            cfg["ipam"]["routes"] = []
        kenv.apply_nad_kubectl(NS, "pxk-gw", cfg)
        self.config = kenv.config(delegates=[self.cluster])

    def bridges(self):
        return [self.br, self.cl_br]


def link_facts(ns, ifname):
    link = [l for l in nl.ip_json("link", "show", "dev", ifname, ns=ns)][0]
    return link.get("address"), link.get("mtu")


def test_ipv4_request_moves_only_the_ipv4_default(kenv):
    nets = Nets(kenv)
    plain = kenv.pod(NS, "plain", {NETWORKS_ANN: "pxk-gw"})
    assert plain.add(nets.config).ok
    # baseline: both defaults on eth0, as the cluster network's delegates set them
    assert defaults(plain.netns, "-4") == [(nets.cl_gw4, "eth0")]
    assert defaults(plain.netns, "-6") == [(nets.cl_gw6, "eth0")]
    assert plain.delete(nets.config).ok

    pod = kenv.pod(NS, "v4", {NETWORKS_ANN: json.dumps([{"name": "pxk-gw", "default-route": [nets.gw4]}])})
    out = pod.add(nets.config)
    assert out.ok, out
    assert defaults(pod.netns, "-4") == [(nets.gw4, "net1")]
    assert defaults(pod.netns, "-6") == [(nets.cl_gw6, "eth0")], "the IPv6 default must stay where the delegates put it"
    # the result returned to the runtime no longer claims eth0's IPv4 default
    dsts = [r["dst"] for r in out.out.get("routes", [])]
    assert "0.0.0.0/0" not in dsts and "::/0" in dsts, out.out

    st = pod.status_kubectl()
    assert [e["name"] for e in st] == ["pxk-cluster", NS + "/pxk-gw"]
    assert st[0].get("default") is True and "default" not in st[1], st
    assert st[0].get("gateway") == [nets.cl_gw6] and st[1].get("gateway") == [nets.gw4], st
    # mac, mtu and ips are the kernel's
    for entry, ifname in ((st[0], "eth0"), (st[1], "net1")):
        mac, mtu = link_facts(pod.netns, ifname)
        assert entry["interface"] == ifname and entry["mac"] == mac and entry["mtu"] == mtu, entry
        assert sorted(entry["ips"]) == sorted(a.split("/")[0] for a in pod.addresses()[ifname]), entry
    assert any(":" in ip for ip in st[0]["ips"]), st[0]

    assert pod.run("CHECK", nets.config).ok
    # someone adds another IPv4 default on eth0: CHECK names the route it found
    nl.ip("route", "add", "default", "via", nets.cl_gw4, "dev", "eth0", "metric", "50", ns=pod.netns)
    bad = pod.run("CHECK", nets.config)
    assert not bad.ok and "%s/v4" % NS in bad.msg and "via %s dev eth0" % nets.cl_gw4 in bad.msg, bad
    assert pod.delete(nets.config).ok
    assert kenv.leftovers(pods=[plain, pod], bridges=nets.bridges()) == []


def test_request_for_both_families(kenv):
    nets = Nets(kenv, second_dual_stack=True)
    pod = kenv.pod(NS, "both", {NETWORKS_ANN: json.dumps([{"name": "pxk-gw", "default-route": [nets.gw6, nets.gw4]}])})
    out = pod.add(nets.config)
    assert out.ok, out
    assert defaults(pod.netns, "-4") == [(nets.gw4, "net1")]
    assert defaults(pod.netns, "-6") == [(nets.gw6, "net1")]
    st = pod.status_kubectl()
    assert "gateway" not in st[0] and st[1].get("gateway") == [nets.gw4, nets.gw6], st
    assert pod.run("CHECK", nets.config).ok
    assert pod.delete(nets.config).ok
    assert kenv.leftovers(pods=[pod], bridges=nets.bridges()) == []


def test_two_networks_claiming_one_family_is_code_7_before_anything(kenv):
    nets = Nets(kenv)
    ann = json.dumps([{"name": "pxk-gw", "default-route": [nets.gw4]},
                      {"name": "pxk-gw", "default-route": [nets.gw4[:-1] + "9"]}])
    pod = kenv.pod(NS, "conflict", {NETWORKS_ANN: ann})
    out = pod.add(nets.config)
    assert not out.ok and out.out["code"] == 7, out
    assert "IPv4" in out.msg and "%s/conflict" % NS in out.msg, out
    assert pod.links() == [] and kenv.reservations() == {}
    assert pod.status() is None
    assert kenv.leftovers(pods=[pod], bridges=nets.bridges()) == []


def test_gateway_off_the_subnet_is_a_clear_error_and_rolls_back(kenv):
    nets = Nets(kenv)
    pod = kenv.pod(NS, "offnet", {NETWORKS_ANN: json.dumps([{"name": "pxk-gw", "default-route": ["192.0.2.1"]}])})
    out = pod.add(nets.config)
    assert not out.ok and out.out["code"] == 7, out
    for part in ("%s/offnet" % NS, NS + "/pxk-gw", "net1", "192.0.2.1", "not reachable"):
        assert part in out.msg, (part, out.msg)
    # everything was rolled back: no interface, no IP held, no cache, no status written
    assert pod.links() == [] and kenv.reservations() == {}, (pod.links(), kenv.reservations())
    assert pod.status() is None
    assert kenv.leftovers(pods=[pod], bridges=nets.bridges()) == []


def test_empty_request_changes_nothing(kenv):
    """`default-route: []` names no family (Multus #1011 deletes every default route, eth0's included)."""
    nets = Nets(kenv)
    pod = kenv.pod(NS, "empty", {NETWORKS_ANN: json.dumps([{"name": "pxk-gw", "default-route": []}])})
    assert pod.add(nets.config).ok
    assert defaults(pod.netns, "-4") == [(nets.cl_gw4, "eth0")]
    assert defaults(pod.netns, "-6") == [(nets.cl_gw6, "eth0")]
    assert pod.delete(nets.config).ok
    assert kenv.leftovers(pods=[pod], bridges=nets.bridges()) == []
