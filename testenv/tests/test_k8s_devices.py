"""Device-plugin allocations end to end: the fake kubelet PodResources server (Python grpcio, real api.proto) on a
unix socket, the kubelet checkpoint fallback, device-info files, the test API server, real netns; devices reach the
recording test delegate and Debian's host-device (a veth stands in for the VF)."""

import json
import os
import shutil
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from testenv.lib import netns as nl  # noqa: E402
from testenv.lib import plexus as px  # noqa: E402
from testenv.lib.k8s_scenarios import NETWORKS_ANN, k8s_bins, kenv, kube  # noqa: E402,F401

try:
    from testenv.kubelet.fake_kubelet import FakeKubelet, load_stubs  # noqa: E402
    from testenv.kubelet.checkpoint import write_checkpoint  # noqa: E402
    load_stubs()
    HAVE_GRPC = True
except Exception as e:  # pragma: no cover - CI installs grpcio-tools
    HAVE_GRPC = False
    WHY = str(e)

pytestmark = pytest.mark.skipif(not HAVE_GRPC, reason="grpcio-tools unavailable (testenv/install.sh installs it)")

NS = "pxk-dev"
RES = "intel.com/intel_sriov_netdevice"
RES_ANN = "k8s.v1.cni.cncf.io/resourceName"
VF0, VF1, VF2 = "0000:03:02.0", "0000:03:02.3", "0000:03:02.5"


@pytest.fixture
def dev(kenv):
    """A fake kubelet socket, checkpoint and device-info directories in a short temp dir, and a config using them."""
    d = tempfile.mkdtemp(prefix="pxkl-")
    env = Devices(kenv, d)
    yield env
    env.kubelet.stop()
    shutil.rmtree(d, ignore_errors=True)


class Devices:
    def __init__(self, kenv, d):
        self.kenv = kenv
        self.dir = d
        self.socket = os.path.join(d, "kubelet.sock")
        self.checkpoint_dir = os.path.join(d, "dp")
        self.devinfo = os.path.join(d, "devinfo")
        os.makedirs(os.path.join(self.devinfo, "dp"))
        self.kubelet = FakeKubelet(self.socket).start()
        self.rec = os.path.join(kenv.tmp, "rec")
        kenv.install_crd()

    def config(self, **extra):
        keys = dict(podResourcesSocket=self.socket, deviceInfoDir=self.devinfo,
                    kubeletCheckpoint=os.path.join(self.checkpoint_dir, "kubelet_internal_checkpoint"),
                    podResourcesDeadlineSeconds=3)
        keys.update(extra)
        return self.kenv.config(**keys)

    def fake_nad(self, name, resource=RES, caps=True):
        plugin = {"cniVersion": "1.0.0", "name": name, "type": px.FAKE, "recordDir": self.rec}
        if caps:
            plugin["capabilities"] = {"deviceID": True, "CNIDeviceInfoFile": True}
        self.kenv.kube.apply_nad(NS, name, plugin, annotations={RES_ANN: resource} if resource else None)

    def dp_file(self, resource, device_id, extra=None):
        doc = {"type": "pci", "version": "1.1.0", "pci": dict({"pci-address": device_id}, **(extra or {}))}
        path = os.path.join(self.devinfo, "dp", "%s-%s-device.json" % (resource.replace("/", "-"), device_id))
        with open(path, "w") as f:
            json.dump(doc, f)
        return doc

    def cni_files(self):
        d = os.path.join(self.devinfo, "cni")
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def records(self, command="ADD"):
        if not os.path.isdir(self.rec):
            return []
        out = []
        for f in sorted(os.listdir(self.rec), key=lambda n: int(n.split("-", 1)[0])):
            if "-%s-" % command in f:
                with open(os.path.join(self.rec, f)) as fh:
                    out.append(json.load(fh))
        return out

    def allocate(self, pod, ids, resource=RES):
        # one ContainerDevices entry per ID, as current kubelets report them, in an order that is not sorted
        self.kubelet.set_pod(NS, pod.name, containers=[
            {"name": "app", "devices": [{"resource_name": resource, "device_ids": [i], "numa": 0} for i in ids]}])


def test_two_networks_on_one_resource_get_two_devices(dev):
    dev.fake_nad("pxk-vfa")
    dev.fake_nad("pxk-vfb")
    dev.fake_nad("pxk-plain", resource=None)
    pod = dev.kenv.pod(NS, "sriov", {NETWORKS_ANN: "pxk-vfa,pxk-plain,pxk-vfb"})
    dev.allocate(pod, [VF1, VF0])
    doc0 = dev.dp_file(RES, VF0, {"pf-pci-address": "0000:03:00.0"})
    cfg = dev.config()
    out = pod.add(cfg)
    assert out.ok, out

    recs = {r["env"]["CNI_IFNAME"]: r["stdin"] for r in dev.records()}
    assert recs["net1"]["deviceID"] == VF0 and recs["net1"]["pciBusID"] == VF0
    assert recs["net3"]["deviceID"] == VF1 and recs["net3"]["pciBusID"] == VF1
    assert recs["net1"]["runtimeConfig"]["deviceID"] == VF0 and recs["net3"]["runtimeConfig"]["deviceID"] == VF1
    assert "deviceID" not in recs["net2"] and "runtimeConfig" not in recs["net2"]
    info = recs["net1"]["runtimeConfig"]["CNIDeviceInfoFile"]
    assert info == os.path.join(dev.devinfo, "cni", "%s-pxk-vfa-%s_net1" % (NS, pod.cid))
    # one kubelet call for the whole pod, Get preferred
    assert [(r["method"], r["code"]) for r in dev.kubelet.requests()] == [("Get", "OK")]

    st = pod.status_kubectl()
    by_if = {e["interface"]: e for e in st}
    assert by_if["net1"]["device-info"] == doc0, st
    assert "device-info" not in by_if["net3"], "no DP file for VF1, so no device-info"
    assert "device-info" not in by_if["net2"] and "device-info" not in by_if["eth0"]
    assert dev.cni_files() == ["%s-pxk-vfa-%s_net1" % (NS, pod.cid)]
    with open(info) as f:
        assert json.load(f) == doc0

    # DEL (twice, as containerd does) removes the device-info file and never asks the kubelet
    assert pod.delete(cfg).ok and pod.delete(cfg).ok
    assert dev.cni_files() == []
    assert len(dev.kubelet.requests()) == 1
    dels = {r["env"]["CNI_IFNAME"]: r["stdin"] for r in dev.records("DEL")}
    assert dels["net1"]["deviceID"] == VF0 and dels["net3"]["deviceID"] == VF1, "DEL replays the ADD's bytes"
    assert dev.kenv.leftovers(pods=[pod]) == []


def test_host_device_receives_the_device(dev):
    """Debian's host-device gets the device as Multus hands it over (`pciBusID` in its config, `runtimeConfig.deviceID`)
    and looks it up on the PCI bus, which wins over its `device` key: a veth cannot stand in for the VF here, so the
    real plugin fails on the missing PCI device, and the rollback leaves the host as it was (the veth on the host, no
    cache, no device-info file)."""
    host, peer = dev.kenv.veth()
    dev.kenv.kube.apply_nad(NS, "pxk-hd", {"cniVersion": "1.0.0", "name": "pxk-hd", "type": "host-device",
                                           "device": host, "capabilities": {"deviceID": True}},
                            annotations={RES_ANN: RES})
    pod = dev.kenv.pod(NS, "hostdev", {NETWORKS_ANN: "pxk-hd"})
    dev.allocate(pod, [VF2])
    out = pod.add(dev.config())
    assert not out.ok, out
    assert "/sys/bus/pci/devices/%s" % VF2 in out.msg and NS + "/pxk-hd" in out.msg, out
    assert nl.link_exists(host) and pod.links() == []
    assert dev.cni_files() == []
    assert dev.kenv.leftovers(pods=[pod]) == []


def test_get_unimplemented_falls_back_to_list(dev):
    dev.fake_nad("pxk-vfa")
    pod = dev.kenv.pod(NS, "oldkubelet", {NETWORKS_ANN: "pxk-vfa"})
    dev.allocate(pod, [VF0])
    dev.kubelet.set_get_mode("unimplemented")
    cfg = dev.config()
    out = pod.add(cfg)
    assert out.ok, out
    assert [(r["method"], r["code"]) for r in dev.kubelet.requests()] == [("Get", "UNIMPLEMENTED"), ("List", "OK")]
    assert {r["env"]["CNI_IFNAME"]: r["stdin"] for r in dev.records()}["net1"]["deviceID"] == VF0
    assert pod.delete(cfg).ok
    assert dev.kenv.leftovers(pods=[pod]) == []


def test_pod_not_yet_known_is_retried(dev):
    dev.fake_nad("pxk-vfa")
    pod = dev.kenv.pod(NS, "late", {NETWORKS_ANN: "pxk-vfa"})
    dev.allocate(pod, [VF0])
    dev.kubelet.pod_not_found(NS, pod.name, 2)
    cfg = dev.config()
    out = pod.add(cfg)
    assert out.ok, out
    assert [r["code"] for r in dev.kubelet.requests()] == ["UNKNOWN", "UNKNOWN", "OK"]
    assert pod.delete(cfg).ok


def test_checkpoint_fallback_when_the_socket_is_absent(dev):
    dev.kubelet.stop()
    assert not os.path.exists(dev.socket)
    dev.fake_nad("pxk-vfa")
    dev.fake_nad("pxk-vfb")
    pod = dev.kenv.pod(NS, "ckpt", {NETWORKS_ANN: "pxk-vfa,pxk-vfb"})
    os.makedirs(dev.checkpoint_dir)
    write_checkpoint(dev.checkpoint_dir, {pod.uid: {"app": {RES: [VF1, VF0]}}, "other-uid": {"app": {RES: [VF2]}}})
    cfg = dev.config()
    out = pod.add(cfg)
    assert out.ok, out
    recs = {r["env"]["CNI_IFNAME"]: r["stdin"] for r in dev.records()}
    assert (recs["net1"]["deviceID"], recs["net2"]["deviceID"]) == (VF0, VF1)
    assert pod.delete(cfg).ok
    assert dev.kenv.leftovers(pods=[pod]) == []


def test_no_socket_and_no_checkpoint_is_a_clear_error(dev):
    dev.kubelet.stop()
    dev.fake_nad("pxk-vfa")
    pod = dev.kenv.pod(NS, "nokubelet", {NETWORKS_ANN: "pxk-vfa"})
    out = pod.add(dev.config())
    assert not out.ok and out.out["code"] == 11, out
    for part in ("%s/nokubelet" % NS, dev.socket, "kubelet_internal_checkpoint"):
        assert part in out.msg, (part, out.msg)
    assert dev.records() == [] and pod.links() == []
    assert dev.kenv.leftovers(pods=[pod]) == []


def test_more_networks_than_devices_attaches_nothing(dev):
    dev.fake_nad("pxk-vfa")
    dev.fake_nad("pxk-vfb")
    pod = dev.kenv.pod(NS, "short", {NETWORKS_ANN: "pxk-vfa,pxk-vfb"})
    dev.allocate(pod, [VF0])
    out = pod.add(dev.config())
    assert not out.ok and out.out["code"] == 7, out
    assert "%s/short" % NS in out.msg and NS + "/pxk-vfb" in out.msg and RES in out.out.get("details", ""), out
    assert dev.records() == [] and pod.links() == []
    assert dev.kenv.leftovers(pods=[pod]) == []


def test_a_kubelet_that_hangs_is_bounded(dev):
    dev.fake_nad("pxk-vfa")
    pod = dev.kenv.pod(NS, "hang", {NETWORKS_ANN: "pxk-vfa"})
    dev.allocate(pod, [VF0])
    dev.kubelet.inject_delay("*", 30)
    t0 = time.monotonic()
    out = pod.add(dev.config(podResourcesDeadlineSeconds=1))
    took = time.monotonic() - t0
    assert not out.ok and out.out["code"] == 11, out
    assert took < 10, "ADD took %.1f s with a 1 s device deadline" % took
    assert dev.records() == [] and dev.kenv.leftovers(pods=[pod]) == []


def test_garbage_from_the_kubelet_is_an_error_not_a_crash(dev):
    dev.fake_nad("pxk-vfa")
    pod = dev.kenv.pod(NS, "garbage", {NETWORKS_ANN: "pxk-vfa"})
    dev.allocate(pod, [VF0])
    dev.kubelet.inject_raw("*", b"\x0a\xff\xff\xff\xff\x0f")
    out = pod.add(dev.config())
    assert not out.ok and out.out["code"] == 999 and out.out["msg"], out
    assert dev.kenv.leftovers(pods=[pod]) == []


def test_pods_without_devices_never_call_the_kubelet(dev):
    dev.fake_nad("pxk-plain", resource=None)
    pod = dev.kenv.pod(NS, "nodev", {NETWORKS_ANN: "pxk-plain"})
    cfg = dev.config()
    assert pod.add(cfg).ok and pod.delete(cfg).ok
    assert dev.kubelet.requests() == []


def _loaded(stderr):
    """Shared objects the dynamic loader reported opening (LD_DEBUG=libs)."""
    return {lib for lib in ("libcurl", "libmnl", "libnghttp2") if ("/%s.so" % lib) in stderr or ("%s.so" % lib) in stderr}


def test_only_device_backed_adds_load_libcurl(dev):
    """VERSION, DEL from the cache and ADDs without API or devices load neither libcurl nor (VERSION, DEL) libmnl;
    an ADD with a device-backed network loads libcurl for the kubelet."""
    ld = {"LD_DEBUG": "libs"}
    px_ = dev.kenv.px
    v = px_.run("VERSION", {"cniVersion": "1.0.0"}, extra=ld)
    assert v.ok and _loaded(v.stderr) == set(), _loaded(v.stderr)

    local = dev.config()
    local.pop("kubeconfig")
    ns = dev.kenv.netns()
    cid = dev.kenv.cid("ld")
    a = px_.run("ADD", local, cid, "/var/run/netns/" + ns, extra=ld)
    assert a.ok, a
    assert "libcurl" not in _loaded(a.stderr), "a device-less ADD without API must not load libcurl"
    d = px_.run("DEL", local, cid, "/var/run/netns/" + ns, extra=ld)
    assert d.ok and _loaded(d.stderr) == set(), _loaded(d.stderr)

    dev.fake_nad("pxk-vfa")
    pod = dev.kenv.pod(NS, "ldpod", {NETWORKS_ANN: "pxk-vfa"})
    dev.allocate(pod, [VF0])
    cfg = dev.config()
    out = pod.run("ADD", cfg, extra=ld)
    assert out.ok, out
    assert "libcurl" in _loaded(out.stderr)
    dl = pod.run("DEL", cfg, extra=ld)
    assert dl.ok and _loaded(dl.stderr) == set(), _loaded(dl.stderr)
    assert dev.kenv.leftovers(pods=[pod]) == []
