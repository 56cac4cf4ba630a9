"""DRA objects on the test API server for the DRA integration tests and figures: a node's ResourceSlice of SR-IOV
VFs (Multus' attributes), ResourceClaims allocated as the scheduler would, pods whose status names their claims,
NADs with a resourceName."""

import os

from testenv.lib import plexus as px
from testenv.lib.k8s_scenarios import NETWORKS_ANN

NS = "pxk-dra"
NODE = "pxnode1"
DRIVER = "sriov.pxtest.example.com"
RES = "intel.com/sriov_dra"
RES_ANN = "k8s.v1.cni.cncf.io/resourceName"
VF = {"vf-0": "0000:3b:02.0", "vf-1": "0000:3b:02.1", "vf-2": "0000:3b:02.2"}
API = "/apis/resource.k8s.io/v1"


class DRAEnv:
    def __init__(self, kenv):
        self.kenv = kenv
        self.kube = kenv.kube
        self.rec = os.path.join(kenv.tmp, "rec")
        kenv.install_crd()
        self.kube.create_namespace(NS)

    def slice(self, devices, driver=DRIVER, node=NODE, name=None):
        """A ResourceSlice of `driver` on `node`: devices {name: attributes}."""
        body = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
                "metadata": {"name": name or "%s-%s" % (node, driver.split(".")[0])},
                "spec": {"driver": driver, "nodeName": node, "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                         "devices": [{"name": n, "attributes": a} for n, a in devices.items()]}}
        return self.kube.api("POST", API + "/resourceslices", body)

    def vf_slice(self, with_ids=True):
        devices = {}
        for n, pci in VF.items():
            attrs = {"k8s.cni.cncf.io/resourceName": {"string": RES}}
            if with_ids:
                attrs["k8s.cni.cncf.io/deviceID"] = {"string": pci}
            devices[n] = attrs
        devices["gpu-0"] = {"model": {"string": "not-a-nic"}}
        return self.slice(devices)

    def claim(self, name, count=2):
        body = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": name, "namespace": NS},
                "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "sriov.pxtest", "count": count}}]}}}
        return self.kube.api("POST", "%s/namespaces/%s/resourceclaims" % (API, NS), body)

    def allocate(self, name, devices, driver=DRIVER):
        """What the scheduler writes: status.allocation through the status subresource."""
        results = [{"request": "nic", "driver": driver, "pool": NODE, "device": d} for d in devices]
        return self.kube.api("PATCH", "%s/namespaces/%s/resourceclaims/%s/status" % (API, NS, name),
                             {"status": {"allocation": {"devices": {"results": results}}}},
                             content_type="application/merge-patch+json")

    def get_claim(self, name):
        return self.kube.api("GET", "%s/namespaces/%s/resourceclaims/%s" % (API, NS, name))

    def pod(self, name, nets, claims, ns=NS):
        """A pod on NODE whose status names `claims` ([(pod claim name, ResourceClaim name)]) of its namespace."""
        p = self.kenv.pod(ns, name, {NETWORKS_ANN: nets}, create=False)
        self.kube.create_pod(ns, name, {NETWORKS_ANN: nets}, uid=p.uid, node_name=NODE)
        statuses = [{"name": a, "resourceClaimName": b} for a, b in claims]
        self.kube.api("PATCH", "/api/v1/namespaces/%s/pods/%s/status" % (ns, name),
                      {"status": {"resourceClaimStatuses": statuses}}, content_type="application/merge-patch+json")
        return p

    def recorder_nad(self, name, resource=RES):
        plugin = {"cniVersion": "1.0.0", "name": name, "type": px.FAKE, "recordDir": self.rec,
                  "capabilities": {"deviceID": True}}
        self.kube.apply_nad(NS, name, plugin, annotations={RES_ANN: resource} if resource else None)

    def macvlan_nad(self, name):
        """A real interface (macvlan on a px veth) followed by the recorder, with the resource."""
        master, _ = self.kenv.veth()
        sub = self.kenv.subnet()
        conf = {"cniVersion": "1.0.0", "name": name, "plugins": [
            {"type": "macvlan", "master": master, "mode": "bridge", "ipam": px.host_local(sub, self.kenv.data_dir)},
            {"type": px.FAKE, "recordDir": self.rec, "capabilities": {"deviceID": True}}]}
        self.kube.apply_nad(NS, name, conf, annotations={RES_ANN: RES})
        return sub

    def records(self, command="ADD"):
        return {r["env"]["CNI_IFNAME"]: r["stdin"] for r in px.read_records(self.rec, command)}

    def last_seq(self):
        return max([r["seq"] for r in self.kube.requests(include_helper=True)] or [0])

    def dra_requests(self, since=0):
        return [(r["method"], r["path"].split("?")[0]) for r in self.kube.requests(since=since)
                if "resource.k8s.io" in r["path"]]
