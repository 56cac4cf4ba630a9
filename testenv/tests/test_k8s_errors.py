"""Kubernetes-driven ADDs that must fail cleanly: missing NAD, namespace isolation, UID mismatch, a requested
capability no plugin declares, a failed network-status write (rolled back) -- and what must NOT fail."""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from testenv.lib import netns as nl  # noqa: E402
from testenv.lib.k8s_scenarios import NETWORKS_ANN, k8s_bins, kenv, kube  # noqa: E402,F401

NS = "pxk-err"


def _two_nads(kenv):
    kenv.install_crd()
    mv_cfg, _ = kenv.macvlan_nad("pxk-mv")
    br_cfg, br, _ = kenv.hostlocal_bridge_nad("pxk-br")
    kenv.apply_nad_kubectl(NS, "pxk-mv", mv_cfg)
    kenv.apply_nad_kubectl(NS, "pxk-br", br_cfg)
    return br


def _assert_nothing_attached(kenv, pod, bridges=()):
    assert pod.links() == [], "links left in the pod's netns: %s" % pod.links()
    assert kenv.reservations() == {}, "host-local reservations left: %s" % kenv.reservations()
    assert kenv.cache_files() == [], "cache files left: %s" % kenv.cache_files()
    for b in list(bridges) + [kenv.cluster()["bridge"]]:
        assert nl.bridge_ports(b) == [], "ports left on %s" % b


def test_missing_nad_fails_naming_it_and_attaches_nothing(kenv):
    br = _two_nads(kenv)
    pod = kenv.pod(NS, "miss", {NETWORKS_ANN: "pxk-mv, pxk-nope, pxk-br"})
    kenv.kube.clear_requests()
    out = pod.add(kenv.config())
    assert not out.ok, out
    assert out.err_code == 7, out
    assert "%s/pxk-nope" % NS in out.msg, out
    _assert_nothing_attached(kenv, pod, [br])
    # nothing was written to the pod either
    assert [r["method"] for r in kenv.kube.requests()].count("PATCH") == 0
    assert pod.status() is None


def test_missing_nad_in_other_namespace_is_named_with_its_namespace(kenv):
    _two_nads(kenv)
    pod = kenv.pod(NS, "miss2", {NETWORKS_ANN: json.dumps([{"name": "pxk-mv"},
                                                            {"name": "ghost", "namespace": "pxk-other"}])})
    out = pod.add(kenv.config())
    assert out.err_code == 7, out
    assert "pxk-other/ghost" in out.msg, out
    _assert_nothing_attached(kenv, pod)


def test_namespace_isolation_rejects_foreign_nad(kenv):
    kenv.install_crd()
    mv_cfg, _ = kenv.macvlan_nad("pxk-mv")
    kenv.apply_nad_kubectl("pxk-foreign", "pxk-mv", mv_cfg)
    pod = kenv.pod(NS, "iso", {NETWORKS_ANN: "pxk-foreign/pxk-mv"})
    cfg = kenv.config(namespaceIsolation=True, globalNamespaces="pxk-glob,pxk-glob2")
    out = pod.add(cfg)
    assert not out.ok, out
    assert out.err_code == 7, out
    assert "pxk-foreign" in out.msg, out
    _assert_nothing_attached(kenv, pod)
    # without isolation the same pod attaches (the NAD itself is fine)
    out = pod.add(kenv.config(namespaceIsolation=False))
    assert out.ok, out
    assert pod.links() == ["eth0", "net1"]
    assert pod.delete(cfg).ok
    _assert_nothing_attached(kenv, pod)


def test_namespace_isolation_allows_global_and_own_namespace(kenv):
    kenv.install_crd()
    g_cfg, _ = kenv.macvlan_nad("pxk-g")
    own_cfg, own_br, _ = kenv.hostlocal_bridge_nad("pxk-own")
    kenv.apply_nad_kubectl("pxk-glob2", "pxk-g", g_cfg)
    kenv.apply_nad_kubectl(NS, "pxk-own", own_cfg)
    pod = kenv.pod(NS, "glob", {NETWORKS_ANN: "pxk-glob2/pxk-g, pxk-own"})
    cfg = kenv.config(namespaceIsolation=True, globalNamespaces="pxk-glob, pxk-glob2")
    out = pod.add(cfg)
    assert out.ok, out
    assert pod.links() == ["eth0", "net1", "net2"]
    assert [e["name"] for e in pod.status()] == ["pxk-cluster", "pxk-glob2/pxk-g", NS + "/pxk-own"]
    assert pod.delete(cfg).ok
    _assert_nothing_attached(kenv, pod, [own_br])


def test_uid_mismatch_fails_and_attaches_nothing(kenv):
    _two_nads(kenv)
    pod = kenv.pod(NS, "uid", {NETWORKS_ANN: "pxk-mv"}, uid="pxk-real-uid-1")
    wrong = pod.cni_args.replace("K8S_POD_UID=pxk-real-uid-1", "K8S_POD_UID=pxk-stale-uid-0")
    assert wrong != pod.cni_args
    out = pod.add(kenv.config(), cni_args=wrong)
    assert not out.ok, out
    assert "pxk-real-uid-1" in out.msg and "pxk-stale-uid-0" in out.msg, out
    _assert_nothing_attached(kenv, pod)
    assert pod.status() is None
    # the right UID works
    out = pod.add(kenv.config())
    assert out.ok, out
    assert pod.delete(kenv.config()).ok


def test_requested_ips_without_capability_fails(kenv):
    kenv.install_crd()
    br_cfg, br, sub = kenv.hostlocal_bridge_nad("pxk-nocap")   # host-local ipam, no capabilities.ips
    kenv.apply_nad_kubectl(NS, "pxk-nocap", br_cfg)
    ip = sub.replace(".0/24", ".50/24")
    pod = kenv.pod(NS, "nocap", {NETWORKS_ANN: json.dumps([{"name": "pxk-nocap", "ips": [ip]}])})
    out = pod.add(kenv.config())
    assert not out.ok, out
    assert out.err_code == 7, out
    assert "ips" in out.msg and NS + "/pxk-nocap" in out.msg, out
    _assert_nothing_attached(kenv, pod, [br])


def test_status_write_failure_rolls_back_the_add(kenv):
    br = _two_nads(kenv)
    pod = kenv.pod(NS, "rb", {NETWORKS_ANN: "pxk-mv, pxk-br"})
    # Both ways of writing the status are refused (PATCH, then the update fallback).
    kenv.kube.inject(method="PATCH,PUT", path="/status$", action="status", code=403, count=None)
    out = pod.add(kenv.config())
    assert not out.ok, out
    _assert_nothing_attached(kenv, pod, [br])


def test_status_write_404_is_tolerated(kenv):
    br = _two_nads(kenv)
    pod = kenv.pod(NS, "gone", {NETWORKS_ANN: "pxk-mv, pxk-br"})
    kenv.kube.inject(method="PATCH", path="/status$", action="status", code=404, count=None)
    cfg = kenv.config()
    out = pod.add(cfg)
    assert out.ok, out
    assert pod.links() == ["eth0", "net1", "net2"]
    assert pod.delete(cfg).ok
    _assert_nothing_attached(kenv, pod, [br])


def test_without_pod_identity_only_cluster_network(kenv):
    _two_nads(kenv)
    pod = kenv.pod(NS, "anon", {NETWORKS_ANN: "pxk-mv, pxk-br"})
    kenv.kube.clear_requests()
    cfg = kenv.config()
    out = pod.add(cfg, cni_args="IgnoreUnknown=1")
    assert out.ok, out
    assert pod.links() == ["eth0"]
    assert kenv.kube.requests() == []
    assert pod.delete(cfg, cni_args="IgnoreUnknown=1").ok
    _assert_nothing_attached(kenv, pod)


def test_invalid_networks_annotation_fails_and_attaches_nothing(kenv):
    _two_nads(kenv)
    pod = kenv.pod(NS, "badann", {NETWORKS_ANN: '[{"name": "pxk-mv"'})
    out = pod.add(kenv.config())
    assert out.err_code == 7, out
    assert NETWORKS_ANN in out.stdout or "selection" in out.msg, out
    _assert_nothing_attached(kenv, pod)


def test_wrong_token_fails_fast_and_attaches_nothing(kenv):
    import time
    _two_nads(kenv)
    pod = kenv.pod(NS, "badtok", {NETWORKS_ANN: "pxk-mv"})
    kc = str(kenv.kube.write_kubeconfig(os.path.join(kenv.tmp, "bad.yaml"), token="not-a-valid-token"))
    kenv.kube.clear_requests()
    t0 = time.monotonic()
    out = pod.add(kenv.config(kubeconfig=kc, apiDeadlineSeconds=20))
    took = time.monotonic() - t0
    assert not out.ok, out
    assert out.err_code != 11, "401 is not transient: %s" % out
    assert "401" in out.msg or "nauthorized" in out.msg, out
    assert took < 3, "a 401 was retried for %.1f s" % took
    assert len(kenv.kube.requests()) <= 2, kenv.kube.requests()
    _assert_nothing_attached(kenv, pod)


def test_multus_rbac_role_is_enough(kenv):
    """The Multus ClusterRole (pods + pods/status get/update/patch, NADs) is all Plexus needs."""
    br = _two_nads(kenv)
    pod = kenv.pod(NS, "rbac", {NETWORKS_ANN: "pxk-mv, pxk-br"})
    kc = str(kenv.kube.write_kubeconfig(os.path.join(kenv.tmp, "multus.yaml"), token=kenv.kube.multus_token))
    cfg = kenv.config(kubeconfig=kc)
    kenv.kube.clear_requests()
    out = pod.add(cfg)
    assert out.ok, out
    assert {r["user"] for r in kenv.kube.requests()} == {"system:serviceaccount:kube-system:multus"}
    assert [e["name"] for e in pod.status()] == ["pxk-cluster", NS + "/pxk-mv", NS + "/pxk-br"]
    assert pod.delete(cfg).ok
    _assert_nothing_attached(kenv, pod, [br])


def test_readonly_role_cannot_write_status_and_add_is_rolled_back(kenv):
    br = _two_nads(kenv)
    pod = kenv.pod(NS, "ro", {NETWORKS_ANN: "pxk-mv, pxk-br"})
    kc = str(kenv.kube.write_kubeconfig(os.path.join(kenv.tmp, "ro.yaml"), token=kenv.kube.readonly_token))
    kenv.kube.clear_requests()
    out = pod.add(kenv.config(kubeconfig=kc))
    assert not out.ok, out
    assert "403" in out.msg or "orbidden" in out.msg, out
    # PATCH is forbidden, so Plexus falls back to GET + PUT (Multus' way), which is forbidden too.
    assert [(r["method"], r["status"]) for r in kenv.kube.requests()] == \
        [("GET", 200)] * 3 + [("PATCH", 403), ("GET", 200), ("PUT", 403)]
    _assert_nothing_attached(kenv, pod, [br])
