"""DRA end to end: ResourceClaims, ResourceSlices and the claims' status on the test API server (resource.k8s.io/v1,
server-side apply on resourceclaims/status), real netns, the recording test delegate and Debian's macvlan; a mixed pod
with the fake kubelet for its device-plugin network. networkData is read back with kubectl."""

import json
import os
import shutil
import sys
import tempfile
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from testenv.lib.dra_scenarios import API, DRIVER, NODE, NS, RES, VF, DRAEnv  # noqa: E402
from testenv.lib.k8s_scenarios import NETWORKS_ANN, k8s_bins, kenv, kube  # noqa: E402,F401

@pytest.fixture
def dra(kenv):
    return DRAEnv(kenv)


def test_two_claim_devices_reach_two_networks_and_network_data_is_published(dra):
    dra.vf_slice()
    dra.claim("pod-nics")
    dra.allocate("pod-nics", ["vf-1", "gpu-0", "vf-0"])
    sub = dra.macvlan_nad("pxk-vfa")
    dra.recorder_nad("pxk-vfb")
    pod = dra.pod("dra2", "pxk-vfa,pxk-vfb", [("nics", "pod-nics")])
    cfg = dra.kenv.config(draPublishNetworkData=True)
    before = dra.last_seq()
    out = pod.add(cfg)
    assert out.ok, out
    recs = dra.records()
    # net1 is [macvlan, recorder]: deviceID goes into the first plugin's config, runtimeConfig.deviceID to the
    # recorder (it declares the capability); net2 is the recorder alone.
    assert recs["net1"]["runtimeConfig"]["deviceID"] == VF["vf-0"], recs
    assert recs["net2"]["deviceID"] == VF["vf-1"] and recs["net2"]["runtimeConfig"]["deviceID"] == VF["vf-1"], recs
    # One GET of the claim, one LIST of the driver's slices, one apply of its status.
    assert dra.dra_requests(before) == [("GET", API + "/namespaces/%s/resourceclaims/pod-nics" % NS),
                                        ("GET", API + "/resourceslices"),
                                        ("PATCH", API + "/namespaces/%s/resourceclaims/pod-nics/status" % NS)]

    # networkData as kubectl shows it: net1 with the macvlan's real IP and MAC, net2 with the recorder's result.
    claim = json.loads(dra.kube.kubectl("get", "resourceclaim", "pod-nics", "-n", NS, "-o", "json").stdout)
    devices = {d["device"]: d for d in claim["status"]["devices"]}
    assert sorted(devices) == ["vf-0", "vf-1"], claim["status"]
    net1 = devices["vf-0"]["networkData"]
    assert net1["interfaceName"] == "net1" and net1["ips"] == pod.addresses()["net1"], (net1, pod.addresses())
    assert net1["ips"][0].startswith(sub.rsplit(".", 1)[0])
    assert net1["hardwareAddress"].lower() == dra_mac(pod, "net1")
    assert devices["vf-1"]["networkData"]["interfaceName"] == "net2"
    assert [c["type"] for c in devices["vf-0"]["conditions"]] == ["Ready"]
    assert all(d["driver"] == DRIVER and d["pool"] == NODE for d in devices.values())

    # DEL removes what Plexus wrote, and only that.
    assert pod.delete(cfg).ok
    claim = dra.get_claim("pod-nics")
    assert not claim.get("status", {}).get("devices"), claim["status"]
    assert dra.kenv.leftovers(pods=[pod]) == []


def dra_mac(pod, ifname):
    from testenv.lib import netns as nl
    return [l for l in nl.ip_json("link", "show", "dev", ifname, ns=pod.netns)][0]["address"].lower()


def test_entries_of_other_writers_are_kept(dra):
    dra.vf_slice()
    dra.claim("shared")
    dra.allocate("shared", ["vf-0", "vf-2"])
    dra.recorder_nad("pxk-vfa")
    # The driver (another field manager) publishes data for vf-2.
    other = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "shared", "namespace": NS},
             "status": {"devices": [{"driver": DRIVER, "pool": NODE, "device": "vf-2", "data": {"vendor": "x"}}]}}
    dra.kube.api("PATCH", "%s/namespaces/%s/resourceclaims/shared/status?fieldManager=pxtest-driver" % (API, NS), other,
                 content_type="application/apply-patch+yaml")
    pod = dra.pod("drakeep", "pxk-vfa", [("nics", "shared")])
    cfg = dra.kenv.config(draPublishNetworkData=True)
    assert pod.add(cfg).ok
    devices = {d["device"] for d in dra.get_claim("shared")["status"]["devices"]}
    assert devices == {"vf-0", "vf-2"}
    assert pod.delete(cfg).ok
    left = dra.get_claim("shared")["status"]["devices"]
    assert [d["device"] for d in left] == ["vf-2"] and left[0]["data"] == {"vendor": "x"}


def test_mixed_pod_device_plugin_and_dra(dra):
    try:
        from testenv.kubelet.fake_kubelet import FakeKubelet, load_stubs
        load_stubs()
    except Exception as e:  # pragma: no cover - CI installs grpcio-tools
        pytest.skip("grpcio-tools unavailable: %s" % e)
    d = tempfile.mkdtemp(prefix="pxkl-")
    kubelet = FakeKubelet(os.path.join(d, "kubelet.sock")).start()
    try:
        dra.vf_slice()
        dra.claim("mixed", count=1)
        dra.allocate("mixed", ["vf-2"])
        dra.recorder_nad("pxk-dra")
        dra.recorder_nad("pxk-dp", resource="intel.com/sriov_dp")
        pod = dra.pod("mixed", "pxk-dra,pxk-dp", [("nic", "mixed")])
        kubelet.set_pod(NS, pod.name, containers=[{"name": "app", "devices": [
            {"resource_name": "intel.com/sriov_dp", "device_ids": ["0000:af:00.4"], "numa": 0}]}])
        cfg = dra.kenv.config(podResourcesSocket=kubelet.socket_path,
                              deviceInfoDir=os.path.join(d, "devinfo"))
        out = pod.add(cfg)
        assert out.ok, out
        recs = dra.records()
        assert recs["net1"]["deviceID"] == VF["vf-2"] and recs["net2"]["deviceID"] == "0000:af:00.4", recs
        # The kubelet was asked only for the device-plugin resource's pod; the claim served the other.
        assert [r["method"] for r in kubelet.requests()] == ["Get"]
        status = {s["name"]: s for s in pod.status()}
        assert status["%s/pxk-dra" % NS]["interface"] == "net1" and status["%s/pxk-dp" % NS]["interface"] == "net2"
        assert pod.delete(cfg).ok
    finally:
        kubelet.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_claim_allocated_late_is_waited_for(dra):
    dra.vf_slice()
    dra.claim("late", count=1)
    dra.recorder_nad("pxk-vfa")
    pod = dra.pod("dralate", "pxk-vfa", [("nic", "late")])
    timer = threading.Timer(1.0, dra.allocate, ("late", ["vf-0"]))
    timer.start()
    try:
        out = pod.add(dra.kenv.config(apiDeadlineSeconds=10))
    finally:
        timer.join()
    assert out.ok, out
    assert dra.records()["net1"]["deviceID"] == VF["vf-0"]
    assert "ResourceClaim not allocated yet, waiting" in out.stderr
    assert pod.delete(dra.kenv.config()).ok


def test_claim_never_allocated_is_a_clear_error(dra):
    dra.vf_slice()
    dra.claim("never", count=1)
    dra.recorder_nad("pxk-vfa")
    pod = dra.pod("dranever", "pxk-vfa", [("nic", "never")])
    started = time.monotonic()
    out = pod.add(dra.kenv.config(apiDeadlineSeconds=2))
    assert time.monotonic() - started < 15
    assert out.code == 1 and out.err_code == 11, out
    for part in ("pod %s/dranever" % NS, "ResourceClaim %s/never" % NS, "is not allocated yet", "%s/pxk-vfa" % NS):
        assert part in out.msg, (part, out.msg)
    assert dra.records() == {} and pod.links() == []


def test_device_without_device_id_or_too_few_devices(dra):
    dra.vf_slice(with_ids=False)
    dra.claim("noid", count=1)
    dra.allocate("noid", ["vf-0"])
    dra.recorder_nad("pxk-vfa")
    dra.recorder_nad("pxk-vfb")
    pod = dra.pod("dranoid", "pxk-vfa", [("nic", "noid")])
    out = pod.add(dra.kenv.config())
    assert out.code == 1 and out.err_code == 7 and "k8s.cni.cncf.io/deviceID" in out.msg and "noid" in out.msg, out
    assert dra.records() == {}


def test_too_few_claim_devices(dra):
    dra.vf_slice()
    dra.claim("one", count=1)
    dra.allocate("one", ["vf-0"])
    dra.recorder_nad("pxk-vfa")
    dra.recorder_nad("pxk-vfb")
    pod = dra.pod("draone", "pxk-vfa,pxk-vfb", [("nic", "one")])
    out = pod.add(dra.kenv.config())
    assert out.code == 1 and out.err_code == 7 and "not enough devices" in out.msg, out
    assert dra.records() == {} and pod.links() == []


def test_api_down_at_del_still_deletes(dra):
    dra.vf_slice()
    dra.claim("down", count=1)
    dra.allocate("down", ["vf-1"])
    dra.macvlan_nad("pxk-vfa")
    pod = dra.pod("dradown", "pxk-vfa", [("nic", "down")])
    cfg = dra.kenv.config(draPublishNetworkData=True, apiDeadlineSeconds=2)
    assert pod.add(cfg).ok
    assert dra.get_claim("down")["status"]["devices"][0]["networkData"]["interfaceName"] == "net1"
    dra.kube.stop()
    try:
        out = pod.delete(cfg)
        assert out.ok, out
        assert pod.links() == [] and dra.kenv.leftovers(pods=[pod]) == []
    finally:
        dra.kube.restart()


def test_pods_without_claims_make_no_dra_request(dra):
    dra.recorder_nad("pxk-plain", resource=None)
    pod = dra.kenv.pod(NS, "noclaims", {NETWORKS_ANN: "pxk-plain"})
    before = dra.last_seq()
    assert pod.add(dra.kenv.config(draPublishNetworkData=True)).ok
    assert dra.dra_requests(before) == []
    assert pod.delete(dra.kenv.config(draPublishNetworkData=True)).ok


def test_deploy_dra_rules_are_exactly_enough(dra):
    """deploy/'s ClusterRoles plexus + plexus-dra run a DRA pod's ADD; without either DRA rule it is refused (403),
    and publishing needs deploy/optional/dra-publish-rbac.yaml's rule too."""
    import yaml
    from testenv.lib.deploy import DEPLOY_DIR, deploy_object
    base = deploy_object("ClusterRole", "plexus")["rules"]
    extra = deploy_object("ClusterRole", "plexus-dra")["rules"]
    with open(os.path.join(DEPLOY_DIR, "optional", "dra-publish-rbac.yaml")) as f:
        publish = [d for d in yaml.safe_load_all(f) if d][0]["rules"]
    roles = {"pxdra-exact": base + extra, "pxdra-publish": base + extra + publish}
    for i in range(len(extra)):
        roles["pxdra-minus-%d" % i] = base + [r for j, r in enumerate(extra) if j != i]
    dra.kube.define_roles(roles)
    dra.vf_slice()
    dra.recorder_nad("pxk-vfa")

    def run(role, tag, publishing=False):
        token = dra.kube.add_token("pxdra-%s-user" % role, role)
        kc = dra.kube.write_kubeconfig(os.path.join(dra.kenv.tmp, "kc-%s.yaml" % tag), token=token)
        dra.claim("c-" + tag, count=1)
        dra.allocate("c-" + tag, ["vf-0"])
        pod = dra.pod("p-" + tag, "pxk-vfa", [("nic", "c-" + tag)])
        cfg = dra.kenv.config(kubeconfig=str(kc), draPublishNetworkData=publishing)
        out = pod.add(cfg)
        if out.ok:
            assert pod.delete(cfg).ok
        return out

    assert run("pxdra-exact", "exact").ok
    for i, rule in enumerate(extra):
        out = run("pxdra-minus-%d" % i, "m%d" % i)
        assert not out.ok and ("403" in out.msg or "orbidden" in out.msg), (rule, out)
    out = run("pxdra-exact", "nopub", publishing=True)
    assert not out.ok and ("403" in out.msg or "orbidden" in out.msg), out
    assert run("pxdra-publish", "pub", publishing=True).ok
    # The refused ADDs were rolled back: nothing cached, nothing attached.
    assert dra.kenv.leftovers() == []
