"""The installer's generated configuration driving Plexus for real (as root): full ADD/DEL in real netns with the
reference plugins (bridge as the primary), and against the test API server with deploy/ applied by kubectl: the
service account token rotated by replacing the pod-side token file while Plexus keeps working, and RBAC enforced
from deploy/'s ClusterRole (its binding, and its rules as a role) — a token without them is refused."""

import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from testenv.lib import netns as nl  # noqa: E402
from testenv.lib import plexus as px  # noqa: E402
from testenv.lib.deploy import (DEPLOY_DIR, deploy_bins, deploy_object, node, runtime_add,  # noqa: E402,F401
                                wait_for)
from testenv.lib.k8s_scenarios import NETWORKS_ANN, STATUS_ANN, k8s_bins, kenv, kube  # noqa: E402,F401
from testenv.lib.kubeapi import KUBECTL  # noqa: E402

NS = "pxdeploy"
SA_USER = "system:serviceaccount:kube-system:plexus"


def primary_bridge(kenv, name="pxdcluster"):
    br = kenv.bridge()
    sub = kenv.subnet()
    return {"cniVersion": "1.0.0", "name": name, "plugins": [px.bridge(br, sub, kenv.data_dir)]}, br, sub


def prefix_of(subnet):
    return subnet.rsplit(".", 1)[0] + "."


class Runtime:
    """What a container runtime does with the node's first conflist: exec its plugin from the node's bin dir."""

    def __init__(self, node):
        self.node = node
        self.bin_dirs = (node.bin_dir, px.DEBIAN_CNI_DIR)

    def run(self, command, pod, cni_args=None):
        return runtime_add(command, self.node.config_path, pod.cid, pod.netns_path, "eth0", self.bin_dirs,
                           cni_args=cni_args if cni_args is not None else getattr(pod, "cni_args", None))


class LocalPod:
    def __init__(self, kenv, name):
        self.netns = kenv.netns()
        self.cid = kenv.cid(name)
        self.cni_args = None

    @property
    def netns_path(self):
        return px.netns_path_of(self.netns)

    def links(self):
        return sorted(n for n in nl.links(self.netns) if n != "lo")


def test_generated_config_drives_add_and_del_in_real_netns(kenv, node):
    primary, br, sub = primary_bridge(kenv)
    node.write_conf("10-pxdcluster.conflist", primary)
    # a default network for every pod, found by name in Plexus' confDir (a setting the installer writes)
    master, _ = kenv.veth()
    sub2 = kenv.subnet()
    os.makedirs(node.multus_conf_dir)
    with open(os.path.join(node.multus_conf_dir, "pxdsecond.conflist"), "w") as f:
        json.dump(px.conflist("pxdsecond", "1.0.0", [px.macvlan(master, sub2, kenv.data_dir)]), f)
    before = node.tree()

    p = node.start(*node.args(extra=["--default-networks", "pxdsecond"]))
    node.wait_installed(p, *node.args())
    plugin = node.config()["plugins"][0]
    assert plugin["clusterNetwork"] == os.path.join(node.conf_dir, "10-pxdcluster.conflist")
    assert plugin["defaultNetworks"] == ["pxdsecond"] and plugin["cniDir"] == node.cni_dir

    rt = Runtime(node)
    pod = LocalPod(kenv, "local")
    out = rt.run("ADD", pod)
    assert out.ok, out
    assert pod.links() == ["eth0", "net1"]
    addrs = nl.addresses(pod.netns)
    assert len(addrs["eth0"]) == 1 and addrs["eth0"][0].startswith(prefix_of(sub)), addrs
    assert len(addrs["net1"]) == 1 and addrs["net1"][0].startswith(prefix_of(sub2)), addrs
    assert [i["address"] for i in out.out["ips"]] == addrs["eth0"], out.out
    assert len(nl.bridge_ports(br)) == 1
    res = px.reservations(kenv.data_dir)
    assert sorted(res) == ["pxdcluster", "pxdsecond"], res
    assert [ip + "/24" for ip in res["pxdcluster"]] == addrs["eth0"]
    assert all(line == pod.cid for net in res.values() for line in net.values()), res
    cache = px.Cache(node.cni_dir)
    assert len(cache.plan_files()) == 1 and len(cache.result_files()) == 2, cache.files()

    out = rt.run("DEL", pod)
    assert out.ok, out
    assert pod.links() == []
    assert px.reservations(kenv.data_dir) == {}
    assert cache.files() == []
    assert nl.bridge_ports(br) == []

    assert node.stop(p) == 0, node.log(p)
    assert node.tree() == before


@pytest.fixture
def deployed(kenv, node):
    """deploy/ applied with kubectl (CRD, ServiceAccount, ClusterRole + binding, ConfigMap, DaemonSet), a NAD and
    the installer running with a token of deploy/'s ServiceAccount, authorized by the stored RBAC objects."""
    if not KUBECTL:
        pytest.skip("kubectl not installed")
    kube = kenv.kube
    kube.kubectl("apply", "-f", DEPLOY_DIR)
    kube.create_namespace(NS)
    mv_cfg, mv_sub = kenv.macvlan_nad("pxd-mv")
    kube.apply_nad(NS, "pxd-mv", mv_cfg)
    primary, br, sub = primary_bridge(kenv)
    node.write_conf("10-pxdcluster.conflist", primary)
    token = kube.add_token(SA_USER, "rbac")
    node.write_token(token)
    proc = node.start(*node.args(api_server=kube.url, ca_file=str(kube.ca_path)))
    node.wait_installed(proc, *node.args())
    yield {"kube": kube, "proc": proc, "subnets": (sub, mv_sub), "bridge": br}
    node.stop(proc)


def use_token(node, token):
    """Replace the pod's token file (as kubelet does on rotation) and wait for the installer to mirror it."""
    node.write_token(token)
    mirrored = os.path.join(node.state_dir, "token")
    wait_for(lambda: open(mirrored).read() == token + "\n", what="the token to be mirrored")


def sa_requests(kube, since=0):
    return [(r["method"], r["path"].rsplit("/", 2)[-2] + "/" + r["path"].rsplit("/", 1)[-1], r["status"])
            for r in kube.requests(since=since) if r.get("user") == SA_USER]


def test_token_rotation_and_deploy_rbac_with_the_test_api_server(kenv, node, deployed):
    kube = deployed["kube"]
    rt = Runtime(node)
    kubeconfig = open(os.path.join(node.state_dir, "plexus.kubeconfig")).read()
    assert "tokenFile" in kubeconfig and kube.extra_tokens[-1]["token"] not in kubeconfig

    # 1. ADD with deploy/'s binding: GET pod, GET NAD, PATCH pods/status, all allowed, nothing else asked
    web = kenv.pod(NS, "web", {NETWORKS_ANN: "pxd-mv"})
    kube.clear_requests()
    out = rt.run("ADD", web)
    assert out.ok, out
    assert web.links() == ["eth0", "net1"]
    assert [s["name"] for s in web.status()] == ["pxdcluster", NS + "/pxd-mv"]
    assert sa_requests(kube) == [("GET", "pods/web", 200), ("GET", "network-attachment-definitions/pxd-mv", 200),
                                 ("PATCH", "web/status", 200)], kube.requests()

    # 2. the server rotates the token: until the kubelet replaces the file, the old one is refused ...
    new = kube.add_token(SA_USER, "rbac")
    api = kenv.pod(NS, "api", {NETWORKS_ANN: "pxd-mv"})
    out = rt.run("ADD", api)
    assert not out.ok and ("401" in out.msg or "nauthorized" in out.msg), out
    assert api.links() == []
    # ... and once it did, the next ADD works: no restart, no kubeconfig rewrite (Plexus reads tokenFile per ADD)
    use_token(node, new)
    out = rt.run("ADD", api)
    assert out.ok, out
    assert api.links() == ["eth0", "net1"]
    assert open(os.path.join(node.state_dir, "plexus.kubeconfig")).read() == kubeconfig

    # 3. a service account without deploy/'s binding is forbidden (the server enforces the stored RBAC)
    use_token(node, kube.add_token("system:serviceaccount:kube-system:stranger", "rbac"))
    out = rt.run("ADD", kenv.pod(NS, "stranger", {NETWORKS_ANN: "pxd-mv"}))
    assert not out.ok and ("403" in out.msg or "orbidden" in out.msg), out

    for pod in (web, api):
        out = rt.run("DEL", pod)
        assert out.ok, out
    assert kenv.leftovers(pods=[web, api], bridges=[deployed["bridge"]]) == []


def test_deploy_clusterrole_rules_are_exactly_enough(kenv, node, deployed):
    """A role holding only the ClusterRole's rules runs a whole ADD; the same rules minus any one of them fail."""
    kube = deployed["kube"]
    rt = Runtime(node)
    rules = deploy_object("ClusterRole", "plexus")["rules"]
    roles = {"pxd-exact": rules}
    for i, r in enumerate(rules):
        roles["pxd-minus-%d" % i] = [x for j, x in enumerate(rules) if j != i]
    kube.define_roles(roles)

    use_token(node, kube.add_token("pxd-exact-user", "pxd-exact"))
    pod = kenv.pod(NS, "exact", {NETWORKS_ANN: "pxd-mv"})
    out = rt.run("ADD", pod)
    assert out.ok, out
    assert pod.links() == ["eth0", "net1"] and pod.status() is not None
    assert rt.run("DEL", pod).ok

    for i, r in enumerate(rules):
        use_token(node, kube.add_token("pxd-minus-%d-user" % i, "pxd-minus-%d" % i))
        p = kenv.pod(NS, "minus%d" % i, {NETWORKS_ANN: "pxd-mv"})
        out = rt.run("ADD", p)
        assert not out.ok and ("403" in out.msg or "orbidden" in out.msg), (r, out)
        assert p.links() == [], "a refused ADD left interfaces (rule %s)" % r
    assert kenv.leftovers(bridges=[deployed["bridge"]]) == []
