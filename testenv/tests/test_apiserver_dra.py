"""Tests of the test API server's Dynamic Resource Allocation objects (resource.k8s.io/v1 ResourceClaims,
ResourceSlices, DeviceClasses): discovery, Table output, field selectors, watch, the status subresource, server-side
apply with managed fields and the real server's validation, with kubectl (skipped when absent), the Python
`kubernetes` client (skipped when absent) and plain HTTP."""

import http.client
import json
import shutil
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from testenv.lib.kubeapi import DRA_API, KubeAPI  # noqa: E402

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")

DRIVER = "net.example.com"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
GV = "resource.k8s.io/v1"

DRA_YAML = """apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata:
  name: net.example.com
spec:
  selectors:
  - cel:
      expression: device.driver == "net.example.com"
---
apiVersion: resource.k8s.io/v1
kind: ResourceSlice
metadata:
  name: node1-net
spec:
  driver: net.example.com
  nodeName: node1
  pool:
    name: node1
    generation: 1
    resourceSliceCount: 1
  devices:
  - name: eth1
    attributes:
      net.example.com/pciAddress:
        string: "0000:00:01.0"
      net.example.com/sriov:
        bool: true
      mtu:
        int: {mtu}
      driverVersion:
        version: 1.2.3
    capacity:
      net.example.com/vfs:
        value: "8"
---
apiVersion: v1
kind: Namespace
metadata:
  name: ns1
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata:
  name: nic
  namespace: ns1
spec:
  devices:
    requests:
    - name: nic
      exactly:
        deviceClassName: net.example.com
"""


@pytest.fixture
def kube(tmp_path):
    k = KubeAPI(tmp_path / "kube")
    try:
        yield k
    finally:
        k.close()


def raw(kube, method, path, body=None, content_type=None, headers=None):
    """One request as a plain client (logged, no helper User-Agent): (status, headers, parsed body)."""
    hs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if body is not None:
        hs["Content-Type"] = content_type or "application/json"
    return kube.request(method, path, body, headers=hs, timeout=10, user_agent=None)


def claim_path(ns, name, sub=""):
    return f"{DRA_API}/namespaces/{ns}/resourceclaims/{name}" + (f"/{sub}" if sub else "")


def dev(device, pool="node1", **extra):
    return dict({"driver": DRIVER, "pool": pool, "device": device}, **extra)


def allocated_claim(kube, ns="ns1", name="nic", devices=("eth1", "eth2", "eth3")):
    """A claim with one request, allocated to the given devices of pool node1."""
    kube.create_resource_claim(ns, name, [("nic", DRIVER, len(devices))])
    return kube.allocate_claim(ns, name, [("nic", DRIVER, "node1", d) for d in devices], node="node1")


def apply_status(kube, manager, devices, *, ns="ns1", name="nic", force=False, query="", body=None):
    cfg = body if body is not None else {"apiVersion": GV, "kind": "ResourceClaim",
                                         "metadata": {"name": name, "namespace": ns},
                                         "status": {"devices": devices}}
    q = "?" + "&".join(x for x in (f"fieldManager={manager}" if manager else "", "force=true" if force else "",
                                   query) if x)
    return raw(kube, "PATCH", claim_path(ns, name, "status") + (q if q != "?" else ""), cfg, APPLY)


def managers(obj):
    return sorted((e["manager"], e["operation"], e.get("subresource", "")) for e in obj["metadata"]["managedFields"])


def owned_devices(obj, manager):
    """The status.devices keys `manager` owns (from its Apply entry's fieldsV1)."""
    for e in obj["metadata"]["managedFields"]:
        if e["manager"] == manager and e["operation"] == "Apply":
            return sorted(json.loads(k[2:])["device"] for k in e["fieldsV1"]["f:status"].get("f:devices", {}))
    return []


# ------------------------------------------------------------------------------------------ discovery, tables


def test_discovery_lists_dra_resources(kube):
    st, _, groups = raw(kube, "GET", "/apis")
    assert st == 200
    group = next(g for g in groups["groups"] if g["name"] == "resource.k8s.io")
    assert group["preferredVersion"] == {"groupVersion": GV, "version": "v1"}
    st, _, rl = raw(kube, "GET", DRA_API)
    assert st == 200 and rl["groupVersion"] == GV
    by = {r["name"]: r for r in rl["resources"]}
    assert (by["resourceclaims"]["kind"], by["resourceclaims"]["namespaced"]) == ("ResourceClaim", True)
    assert (by["resourceslices"]["kind"], by["resourceslices"]["namespaced"]) == ("ResourceSlice", False)
    assert (by["deviceclasses"]["kind"], by["deviceclasses"]["namespaced"]) == ("DeviceClass", False)
    assert by["resourceclaims/status"]["verbs"] == ["get", "patch", "update"]
    assert "resourceslices/status" not in by and "shortNames" not in by["resourceclaims"]
    assert set(by["resourceclaims"]["verbs"]) >= {"create", "get", "list", "watch", "patch", "update", "delete"}
    st, _, idx = raw(kube, "GET", "/openapi/v3")
    assert "apis/resource.k8s.io/v1" in idx["paths"]
    st, _, doc = raw(kube, "GET", idx["paths"]["apis/resource.k8s.io/v1"]["serverRelativeURL"])
    assert "/apis/resource.k8s.io/v1/namespaces/{namespace}/resourceclaims/{name}" in doc["paths"]


def test_table_columns_and_claim_state(kube):
    kube.create_resource_claim("ns1", "pending", [("nic", DRIVER)])
    kube.create_resource_claim("ns1", "busy", [("nic", DRIVER)])
    kube.allocate_claim("ns1", "busy", [("nic", DRIVER, "node1", "eth1")], reserved_for=[("web", "uid-1")])
    kube.apply_resource_slice("node1", DRIVER, "node1", [("eth1", {"mtu": 1500})], name="node1-net")
    kube.apply_resource_slice(None, DRIVER, "fabric", [("sw0", {})], name="fabric-net")
    accept = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    st, hdrs, t = raw(kube, "GET", f"{DRA_API}/namespaces/ns1/resourceclaims", headers=accept)
    assert st == 200 and hdrs["Content-Type"].startswith("application/json;as=Table")
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "State", "Age"]
    assert [r["cells"][:2] for r in t["rows"]] == [["busy", "allocated,reserved"], ["pending", "pending"]]
    st, _, t = raw(kube, "GET", f"{DRA_API}/resourceslices", headers=accept)
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Node", "Driver", "Pool", "Age"]
    assert [r["cells"][:4] for r in t["rows"]] == [["fabric-net", "", DRIVER, "fabric"],
                                                    ["node1-net", "node1", DRIVER, "node1"]]
    kube.create_device_class(DRIVER)
    st, _, t = raw(kube, "GET", f"{DRA_API}/deviceclasses/{DRIVER}", headers=accept)
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Age"] and t["rows"][0]["cells"][0] == DRIVER


# ------------------------------------------------------------------------------------------ kubectl


@needs_kubectl
def test_kubectl_apply_get_patch(kube):
    out = kube.kubectl("apply", "-f", "-", input=DRA_YAML.replace("{mtu}", "9000")).stdout
    for what in ("deviceclass.resource.k8s.io/net.example.com created",
                 "resourceslice.resource.k8s.io/node1-net created", "resourceclaim.resource.k8s.io/nic created"):
        assert what in out, out
    out = kube.kubectl("apply", "-f", "-", input=DRA_YAML.replace("{mtu}", "9000")).stdout
    assert "deviceclass.resource.k8s.io/net.example.com unchanged" in out
    assert "resourceslice.resource.k8s.io/node1-net unchanged" in out
    out = kube.kubectl("apply", "-f", "-", input=DRA_YAML.replace("{mtu}", "1500")).stdout
    assert "resourceslice.resource.k8s.io/node1-net configured" in out
    sl = kube.api("GET", f"{DRA_API}/resourceslices/node1-net")
    assert sl["spec"]["devices"][0]["attributes"]["mtu"] == {"int": 1500}
    assert sl["metadata"]["generation"] == 2
    # kubectl get: server-side Table columns, namespaced and across namespaces
    lines = kube.kubectl("get", "resourceclaims,resourceslices", "-n", "ns1").stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "AGE"] and lines[1].split()[:2] == ["resourceclaim.resource.k8s.io/nic",
                                                                                    "pending"]
    assert lines[3].split() == ["NAME", "NODE", "DRIVER", "POOL", "AGE"]
    assert lines[4].split()[:4] == ["resourceslice.resource.k8s.io/node1-net", "node1", DRIVER, "node1"]
    lines = kube.kubectl("get", "resourceclaims", "-A").stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "STATE", "AGE"] and lines[1].split()[:3] == ["ns1", "nic",
                                                                                                 "pending"]
    assert kube.kubectl("get", "deviceclasses").stdout.splitlines()[0].split() == ["NAME", "AGE"]
    # -o yaml shows the server's defaults and the empty status
    y = kube.kubectl("get", "resourceclaim", "nic", "-n", "ns1", "-o", "yaml").stdout
    assert "allocationMode: ExactCount" in y and "count: 1" in y and "status: {}" in y
    assert "managedFields" not in y
    # kubectl patch --subresource=status --type=merge, as a scheduler would allocate
    patch = {"status": {"allocation": {"devices": {"results": [
        {"request": "nic", "driver": DRIVER, "pool": "node1", "device": "eth1"}]}}}}
    assert "patched" in kube.kubectl("patch", "resourceclaim", "nic", "-n", "ns1", "--subresource=status",
                                     "--type=merge", "-p", json.dumps(patch)).stdout
    assert kube.kubectl("get", "resourceclaim", "nic", "-n", "ns1").stdout.splitlines()[1].split()[1] == "allocated"
    y = kube.kubectl("get", "resourceclaim", "nic", "-n", "ns1", "-o", "yaml", "--show-managed-fields").stdout
    assert "manager: kubectl-patch" in y and "subresource: status" in y and "f:allocation:" in y
    assert "manager: kubectl-client-side-apply" in y
    # status set through the main resource is ignored; the spec is immutable
    r = kube.kubectl("patch", "resourceclaim", "nic", "-n", "ns1", "--type=merge", "-p",
                     '{"status":{"allocation":null}}')
    assert r.returncode == 0
    assert kube.resource_claim("ns1", "nic")["status"]["allocation"]["devices"]["results"][0]["device"] == "eth1"
    r = kube.kubectl("apply", "-f", "-", input=DRA_YAML.split("---")[-1].replace("name: nic\n      exactly",
                                                                                  "name: other\n      exactly"),
                     check=False)
    assert r.returncode != 0 and 'The ResourceClaim "nic" is invalid: spec: Invalid value:' in r.stderr
    assert "field is immutable" in r.stderr


@needs_kubectl
def test_kubectl_server_side_apply_and_field_selector(kube):
    kube.create_namespace("ns1")
    claim = DRA_YAML.split("---")[-1].replace("name: nic\n  namespace", "name: ssa\n  namespace")
    assert "resourceclaim.resource.k8s.io/ssa serverside-applied" in kube.kubectl(
        "apply", "--server-side", "-f", "-", input=claim).stdout
    stored = kube.resource_claim("ns1", "ssa")
    assert managers(stored) == [("kubectl", "Apply", "")]
    assert stored["metadata"]["managedFields"][0]["fieldsV1"] == {"f:spec": {"f:devices": {"f:requests": {}}}}
    rv = stored["metadata"]["resourceVersion"]
    kube.kubectl("apply", "--server-side", "-f", "-", input=claim)
    assert kube.resource_claim("ns1", "ssa")["metadata"]["resourceVersion"] == rv       # a no-op apply
    kube.apply_resource_slice("node1", DRIVER, "node1", [("eth1", {})], name="node1-net")
    kube.apply_resource_slice("node2", DRIVER, "node2", [("eth1", {})], name="node2-net")
    out = kube.kubectl("get", "resourceslices", "--field-selector", "spec.nodeName=node2", "-o", "name").stdout
    assert out.split() == ["resourceslice.resource.k8s.io/node2-net"]
    r = kube.kubectl("get", "resourceslices", "--field-selector", "spec.pool.name=node2", check=False)
    assert r.returncode != 0
    assert ("field label not supported for resource.k8s.io/v1, Kind=ResourceSlice: spec.pool.name") in r.stderr


# ------------------------------------------------------------------------------------------ Python client


def test_python_client_resource_v1(kube):
    pytest.importorskip("kubernetes")
    from kubernetes import client, config
    api_client = config.new_client_from_config(config_file=str(kube.kubeconfig_path))
    if not hasattr(client, "ResourceV1Api"):
        pytest.skip("this kubernetes client has no ResourceV1Api")
    api = client.ResourceV1Api(api_client)
    kube.apply_resource_slice("node1", DRIVER, "node1", [("eth1", {"mtu": 9000, "sriov": True})], name="node1-net")
    kube.apply_resource_slice("node2", DRIVER, "node2", [("eth1", {})], name="node2-net")
    slices = api.list_resource_slice(field_selector="spec.nodeName=node1").items
    assert [s.metadata.name for s in slices] == ["node1-net"]
    assert slices[0].spec.pool.resource_slice_count == 1
    assert slices[0].spec.devices[0].attributes["mtu"].int == 9000
    allocated_claim(kube)
    claim = api.read_namespaced_resource_claim("nic", "ns1")
    assert claim.spec.devices.requests[0].exactly.allocation_mode == "ExactCount"
    assert [r.device for r in claim.status.allocation.devices.results] == ["eth1", "eth2", "eth3"]
    # server-side apply of status.devices through the generated client
    cfg = {"apiVersion": GV, "kind": "ResourceClaim", "metadata": {"name": "nic", "namespace": "ns1"},
           "status": {"devices": [dev("eth1", conditions=[
               {"type": "Ready", "status": "True", "reason": "Configured", "message": "net1 is up",
                "lastTransitionTime": "2025-01-01T00:00:00Z"}],
               networkData={"interfaceName": "net1", "ips": ["10.1.1.2/24", "2001:db8::2/64"],
                            "hardwareAddress": "02:00:00:00:00:01"})]}}
    done = api.patch_namespaced_resource_claim_status("nic", "ns1", cfg, field_manager="plexus",
                                                      _content_type=APPLY)
    nd = done.status.devices[0].network_data
    assert (nd.interface_name, nd.ips, nd.hardware_address) == ("net1", ["10.1.1.2/24", "2001:db8::2/64"],
                                                                "02:00:00:00:00:01")
    assert done.status.devices[0].conditions[0].type == "Ready"
    assert "plexus" in {m.manager for m in done.metadata.managed_fields}
    assert [c.metadata.name for c in api.list_resource_claim_for_all_namespaces().items] == ["nic"]
    # the raw path through CustomObjectsApi reads the same object
    co = client.CustomObjectsApi(api_client)
    raw_claim = co.get_namespaced_custom_object("resource.k8s.io", "v1", "ns1", "resourceclaims", "nic")
    assert raw_claim["status"]["devices"][0]["networkData"]["interfaceName"] == "net1"


# ------------------------------------------------------------------------------------------ server-side apply


def test_ssa_status_devices_ownership(kube):
    allocated_claim(kube)
    # two managers apply one entry each
    st, _, c = apply_status(kube, "plexus", [dev("eth1", networkData={"interfaceName": "net1"})])
    assert st == 200 and [d["device"] for d in c["status"]["devices"]] == ["eth1"]
    st, _, c = apply_status(kube, "driver", [dev("eth3", networkData={"interfaceName": "eth3"})])
    assert st == 200 and [d["device"] for d in c["status"]["devices"]] == ["eth1", "eth3"]
    assert owned_devices(c, "plexus") == ["eth1"] and owned_devices(c, "driver") == ["eth3"]
    entry = next(e for e in c["metadata"]["managedFields"] if e["manager"] == "plexus")
    assert {k: entry[k] for k in ("operation", "apiVersion", "fieldsType", "subresource")} == \
        {"operation": "Apply", "apiVersion": GV, "fieldsType": "FieldsV1", "subresource": "status"}
    key = 'k:{"device":"eth1","driver":"net.example.com","pool":"node1"}'
    assert entry["fieldsV1"] == {"f:status": {"f:devices": {key: {
        ".": {}, "f:device": {}, "f:driver": {}, "f:pool": {}, "f:networkData": {"f:interfaceName": {}}}}}}
    # plexus applies eth1 and eth2, then only eth2: its eth1 goes, the driver's eth3 stays
    st, _, c = apply_status(kube, "plexus", [dev("eth1", networkData={"interfaceName": "net1"}),
                                             dev("eth2", networkData={"interfaceName": "net2"})])
    assert [d["device"] for d in c["status"]["devices"]] == ["eth1", "eth3", "eth2"]
    st, _, c = apply_status(kube, "plexus", [dev("eth2", networkData={"interfaceName": "net2"})])
    assert st == 200 and [d["device"] for d in c["status"]["devices"]] == ["eth3", "eth2"]
    assert owned_devices(c, "plexus") == ["eth2"] and owned_devices(c, "driver") == ["eth3"]
    # a field inside an entry that plexus no longer applies is removed, the entry itself stays
    st, _, c = apply_status(kube, "plexus", [dev("eth2")])
    assert [d.get("networkData") for d in c["status"]["devices"]] == [{"interfaceName": "eth3"}, None]
    # an applied entry that equals the live one is shared, not a conflict
    st, _, c = apply_status(kube, "plexus", [dev("eth2"), dev("eth3", networkData={"interfaceName": "eth3"})])
    assert st == 200 and owned_devices(c, "plexus") == ["eth2", "eth3"] and owned_devices(c, "driver") == ["eth3"]
    # entries written by an update (merge patch) are left alone by apply, and have their own manager
    cur = kube.resource_claim("ns1", "nic")
    devices = cur["status"]["devices"] + [dev("eth1", networkData={"interfaceName": "patched"})]
    st, _, c = raw(kube, "PATCH", claim_path("ns1", "nic", "status") + "?fieldManager=kubectl-patch",
                   {"status": {"devices": devices}}, MERGE)
    assert st == 200 and ("kubectl-patch", "Update", "status") in managers(c)
    st, _, c = apply_status(kube, "plexus", [])
    assert st == 200 and [d["device"] for d in c["status"]["devices"]] == ["eth3", "eth1"]
    assert "plexus" not in {e["manager"] for e in c["metadata"]["managedFields"]}
    # a no-op apply does not write
    rv = c["metadata"]["resourceVersion"]
    st, _, c = apply_status(kube, "driver", [dev("eth3", networkData={"interfaceName": "eth3"})])
    assert st == 200 and c["metadata"]["resourceVersion"] == rv


def test_ssa_conflict_and_force(kube):
    allocated_claim(kube)
    assert apply_status(kube, "driver", [dev("eth1", networkData={"interfaceName": "eth1",
                                                                  "ips": ["10.0.0.1/24"]})])[0] == 200
    rv = kube.resource_claim("ns1", "nic")["metadata"]["resourceVersion"]
    st, _, body = apply_status(kube, "plexus", [dev("eth1", networkData={"interfaceName": "net1",
                                                                         "ips": ["10.0.0.1/24"]})])
    field = '.status.devices[device="eth1",driver="net.example.com",pool="node1"].networkData.interfaceName'
    assert st == 409
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": f'Apply failed with 1 conflict: conflict with "driver": {field}',
                    "reason": "Conflict",
                    "details": {"causes": [{"reason": "FieldManagerConflict", "message": 'conflict with "driver"',
                                            "field": field}]},
                    "code": 409}
    assert kube.resource_claim("ns1", "nic")["metadata"]["resourceVersion"] == rv
    # two conflicting fields
    st, _, body = apply_status(kube, "plexus", [dev("eth1", networkData={"interfaceName": "net1",
                                                                         "ips": ["10.0.0.9/24"]})])
    assert st == 409 and body["message"].startswith('Apply failed with 2 conflicts: conflicts with "driver":\n- ')
    assert sorted(c["field"].rsplit(".", 1)[1] for c in body["details"]["causes"]) == ["interfaceName", "ips"]
    # force takes the field over; the other manager keeps what was not in conflict
    st, _, c = apply_status(kube, "plexus", [dev("eth1", networkData={"interfaceName": "net1"})], force=True)
    assert st == 200 and c["status"]["devices"][0]["networkData"] == {"interfaceName": "net1",
                                                                      "ips": ["10.0.0.1/24"]}
    fv = {e["manager"]: e["fieldsV1"]["f:status"]["f:devices"] for e in c["metadata"]["managedFields"]
          if e["operation"] == "Apply"}
    key = 'k:{"device":"eth1","driver":"net.example.com","pool":"node1"}'
    assert fv["plexus"][key]["f:networkData"] == {"f:interfaceName": {}}
    assert fv["driver"][key]["f:networkData"] == {"f:ips": {}}
    # now the previous owner conflicts with the new one
    st, _, body = apply_status(kube, "driver", [dev("eth1", networkData={"interfaceName": "eth1",
                                                                         "ips": ["10.0.0.1/24"]})])
    assert st == 409 and body["details"]["causes"][0]["message"] == 'conflict with "plexus"'
    # an Update manager is named with its API version
    kube.create_resource_claim("ns1", "other", [("nic", DRIVER)])
    kube.allocate_claim("ns1", "other", [("nic", DRIVER, "node1", "eth5")])
    st, _, _ = raw(kube, "PATCH", claim_path("ns1", "other", "status") + "?fieldManager=kubectl-patch",
                   {"status": {"devices": [dev("eth5", networkData={"interfaceName": "a"})]}}, MERGE)
    assert st == 200
    st, _, body = apply_status(kube, "plexus", [dev("eth5", networkData={"interfaceName": "b"})], name="other")
    assert st == 409 and body["details"]["causes"][0]["message"] == 'conflict with "kubectl-patch" using ' + GV


def test_ssa_request_errors(kube):
    allocated_claim(kube)
    cfg = {"apiVersion": GV, "kind": "ResourceClaim", "metadata": {"name": "nic", "namespace": "ns1"},
           "status": {"devices": [dev("eth1")]}}
    # fieldManager is required for apply
    st, _, body = apply_status(kube, None, None, body=cfg)
    assert st == 422 and body["reason"] == "Invalid"
    assert body["message"] == ('PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required '
                               "for apply patch")
    assert body["details"] == {"kind": "PatchOptions", "group": "meta.k8s.io", "causes": [
        {"reason": "FieldValueRequired", "message": "Required value: is required for apply patch",
         "field": "fieldManager"}]}
    # force only goes with apply
    st, _, body = raw(kube, "PATCH", claim_path("ns1", "nic", "status") + "?force=true", {"metadata": {}}, MERGE)
    assert st == 422 and "force: Forbidden: may not be specified for non-apply patch" in body["message"]

    def bad(change, **kw):
        c = json.loads(json.dumps(cfg))
        change(c)
        return apply_status(kube, "plexus", None, body=c, **kw)
    st, _, body = bad(lambda c: c.update(apiVersion="resource.k8s.io/v1beta2"))
    assert (st, body["reason"]) == (400, "BadRequest")
    assert body["message"] == ("Incorrect version specified in apply patch. Specified patch version: "
                               "resource.k8s.io/v1beta2, expected: resource.k8s.io/v1")
    st, _, body = bad(lambda c: c.pop("apiVersion"))
    assert st == 400 and "Specified patch version: , expected: resource.k8s.io/v1" in body["message"]
    st, _, body = bad(lambda c: c["metadata"].update(name="other"))
    assert st == 400 and body["message"] == "the name of the object (other) does not match the name on the URL (nic)"
    st, _, body = bad(lambda c: c["metadata"].update(namespace="ns2"))
    assert st == 400 and body["message"] == ("the namespace of the object (ns2) does not match the namespace on the "
                                             "URL (ns1)")
    st, _, body = bad(lambda c: c["metadata"].update(managedFields=[]))
    assert st == 400 and body["message"] == "metadata.managedFields must be nil"
    # what the real server cannot convert to its typed object is an internal error (500, no reason)
    st, _, body = bad(lambda c: c.update(kind="ResourceSlice"))
    assert st == 500 and "reason" not in body
    assert body["message"] == ("failed to create typed patch object (ns1/nic; resource.k8s.io/v1, Kind=ResourceSlice): "
                               "no corresponding type for resource.k8s.io/v1, Kind=ResourceSlice")
    st, _, body = bad(lambda c: c["status"]["devices"][0].update(colour="blue"))
    assert st == 500 and body["message"].endswith(': .status.devices[device="eth1",driver="net.example.com",'
                                                  'pool="node1"].colour: field not declared in schema')
    st, _, body = bad(lambda c: c["status"]["devices"].append(dev("eth1")))
    assert st == 500 and "duplicate entries for key" in body["message"]
    # a stale resourceVersion in the configuration is a precondition
    st, _, body = bad(lambda c: c["metadata"].update(resourceVersion="1"))
    assert st == 409 and body["reason"] == "Conflict"
    # /status of a missing claim
    st, _, body = apply_status(kube, "plexus", [dev("eth1")], name="missing")
    assert st == 404 and body["message"] == 'resourceclaims.resource.k8s.io "missing" not found'
    # a YAML body, and the main resource: apply creates the object (201)
    yaml_cfg = (f"apiVersion: {GV}\nkind: ResourceClaim\nmetadata:\n  name: nic\n  namespace: ns1\nstatus:\n"
                f"  devices:\n  - driver: {DRIVER}\n    pool: node1\n    device: eth2\n")
    pytest.importorskip("yaml")
    st, _, c = raw(kube, "PATCH", claim_path("ns1", "nic", "status") + "?fieldManager=plexus", yaml_cfg, APPLY)
    assert st == 200 and [d["device"] for d in c["status"]["devices"]] == ["eth2"]
    new = {"apiVersion": GV, "kind": "ResourceClaim", "metadata": {"name": "made", "namespace": "ns1"},
           "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": DRIVER}}]}},
           "status": {"devices": [dev("eth1")]}}
    st, _, c = raw(kube, "PATCH", claim_path("ns1", "made") + "?fieldManager=plexus", new, APPLY)
    assert st == 201 and c["status"] == {} and managers(c) == [("plexus", "Apply", "")]
    st, _, c = raw(kube, "PATCH", claim_path("ns1", "made") + "?fieldManager=plexus", new, APPLY)
    assert st == 200


# ------------------------------------------------------------------------------------------ validation


def test_status_devices_validation(kube):
    allocated_claim(kube)
    st, _, body = apply_status(kube, "plexus", [dev("eth1"), dev("eth9")])
    assert st == 422 and body["reason"] == "Invalid"
    assert body["message"] == ('ResourceClaim.resource.k8s.io "nic" is invalid: status.devices[1]: Invalid value: '
                               '{"Driver":"net.example.com","Pool":"node1","Device":"eth9","ShareID":""}: must be '
                               "an allocated device in the claim")
    assert body["details"]["name"] == "nic" and body["details"]["kind"] == "ResourceClaim"
    assert body["details"]["group"] == "resource.k8s.io"
    assert body["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "status.devices[1]", "message": (
        'Invalid value: {"Driver":"net.example.com","Pool":"node1","Device":"eth9","ShareID":""}: must be an '
        "allocated device in the claim")}]
    st, _, body = apply_status(kube, "plexus", [dev("eth1", networkData={"ips": ["10.0.0.300/24", "10.0.0.1"]})])
    assert st == 422
    assert [(c["field"], c["message"]) for c in body["details"]["causes"]] == [
        ("status.devices[0].networkData.ips[0]", 'Invalid value: "10.0.0.300/24": must be a valid address in CIDR '
                                                 "form, (e.g. 10.9.8.7/24 or 2001:db8::1/64)"),
        ("status.devices[0].networkData.ips[1]", 'Invalid value: "10.0.0.1": must be a valid address in CIDR form, '
                                                 "(e.g. 10.9.8.7/24 or 2001:db8::1/64)")]
    assert body["message"].startswith('ResourceClaim.resource.k8s.io "nic" is invalid: [status.devices[0].networkData'
                                      '.ips[0]: Invalid value: "10.0.0.300/24"')
    st, _, body = apply_status(kube, "plexus", [dev("eth1", networkData={"ips": ["2001:DB8::1/64"]})])
    assert st == 422 and body["details"]["causes"][0]["message"] == ('Invalid value: "2001:DB8::1/64": must be in '
                                                                     'canonical form ("2001:db8::1/64")')
    st, _, body = apply_status(kube, "plexus", [dev("eth1", networkData={"hardwareAddress": "a" * 129,
                                                                         "interfaceName": "i" * 257})])
    assert st == 422
    assert [(c["reason"], c["field"], c["message"]) for c in body["details"]["causes"]] == [
        ("FieldValueTooLong", "status.devices[0].networkData.interfaceName", "Too long: may not be more than 256 bytes"),
        ("FieldValueTooLong", "status.devices[0].networkData.hardwareAddress",
         "Too long: may not be more than 128 bytes")]
    ok = apply_status(kube, "plexus", [dev("eth1", networkData={"hardwareAddress": "a" * 128,
                                                                "interfaceName": "i" * 256})])
    assert ok[0] == 200
    st, _, body = apply_status(kube, "plexus", [dev("eth1", conditions=[{"type": "Ready", "status": "Yes"}])])
    assert st == 422 and [c["field"] for c in body["details"]["causes"]] == [
        "status.devices[0].conditions[0].status", "status.devices[0].conditions[0].lastTransitionTime",
        "status.devices[0].conditions[0].reason"]
    assert body["details"]["causes"][0]["message"] == ('Unsupported value: "Yes": supported values: "False", "True", '
                                                       '"Unknown"')
    # the same validation on an update (merge patch) of /status
    st, _, body = raw(kube, "PATCH", claim_path("ns1", "nic", "status"), {"status": {"devices": [dev("eth7")]}},
                      MERGE)
    assert st == 422 and body["details"]["causes"][0]["field"] == "status.devices[0]"


def test_claim_status_rules(kube):
    kube.create_resource_claim("ns1", "nic", [("nic", DRIVER)])
    path = claim_path("ns1", "nic", "status")
    # reservedFor needs an allocation; results must name a request of the claim
    st, _, body = raw(kube, "PATCH", path, {"status": {"reservedFor": [{"resource": "pods", "name": "web",
                                                                          "uid": "u1"}]}}, MERGE)
    assert st == 422 and body["details"]["causes"] == [{
        "reason": "FieldValueForbidden", "field": "status.reservedFor",
        "message": "Forbidden: may not be specified when `allocated` is not set"}]
    st, _, body = raw(kube, "PATCH", path, {"status": {"allocation": {"devices": {"results": [
        {"request": "gpu", "driver": DRIVER, "pool": "node1", "device": "eth1"}]}}}}, MERGE)
    assert st == 422 and body["details"]["causes"][0] == {
        "reason": "FieldValueInvalid", "field": "status.allocation.devices.results[0].request",
        "message": 'Invalid value: "gpu": must be the name of a request in the claim or the name of a request and a '
                   "subrequest separated by '/'"}
    # a written allocation is immutable
    kube.allocate_claim("ns1", "nic", [("nic", DRIVER, "node1", "eth1")])
    st, _, body = raw(kube, "PATCH", path, {"status": {"allocation": {"devices": {"results": [
        {"request": "nic", "driver": DRIVER, "pool": "node1", "device": "eth2"}]}}}}, MERGE)
    assert st == 422 and body["details"]["causes"][0]["field"] == "status.allocation"
    assert body["details"]["causes"][0]["message"].endswith(": field is immutable")
    # PUT / PATCH of the main resource leave the status alone; labels go through, the spec is immutable
    claim = kube.resource_claim("ns1", "nic")
    claim["status"] = {}
    claim["metadata"]["labels"] = {"a": "b"}
    st, _, c = raw(kube, "PUT", claim_path("ns1", "nic"), claim)
    assert st == 200 and c["status"]["allocation"]["devices"]["results"][0]["device"] == "eth1"
    assert c["metadata"]["labels"] == {"a": "b"}
    st, _, c = raw(kube, "PATCH", claim_path("ns1", "nic"), {"status": {"allocation": None}}, MERGE)
    assert st == 200 and c["status"]["allocation"] is not None
    st, _, body = raw(kube, "PATCH", claim_path("ns1", "nic"), {"spec": {"devices": {"requests": []}}}, MERGE)
    assert st == 422 and body["details"]["causes"][0]["field"] == "spec"
    # a /status PUT keeps the spec and the labels of the stored claim
    claim = kube.resource_claim("ns1", "nic")
    claim["spec"] = {"devices": {"requests": []}}
    claim["metadata"]["labels"] = {"a": "changed"}
    claim["status"]["reservedFor"] = [{"resource": "pods", "name": "web", "uid": "u1"}]
    st, _, c = raw(kube, "PUT", path, claim)
    assert st == 200 and c["spec"]["devices"]["requests"][0]["name"] == "nic" and c["metadata"]["labels"] == {"a": "b"}
    assert c["status"]["reservedFor"] == [{"resource": "pods", "name": "web", "uid": "u1"}]
    # create: the status is dropped, spec validated
    st, _, body = raw(kube, "POST", f"{DRA_API}/namespaces/ns1/resourceclaims", {
        "apiVersion": GV, "kind": "ResourceClaim", "metadata": {"name": "bad"},
        "spec": {"devices": {"requests": [{"name": "Nic", "exactly": {}}, {"name": "x"}]}}})
    assert st == 422 and [c["field"] for c in body["details"]["causes"]] == [
        "spec.devices.requests[0].name", "spec.devices.requests[0].exactly.deviceClassName",
        "spec.devices.requests[1]"]
    assert body["details"]["causes"][2]["message"] == ("Required value: exactly one of `exactly` or `firstAvailable` "
                                                       "is required")
    st, _, body = raw(kube, "POST", f"{DRA_API}/namespaces/ns1/resourceclaims?fieldValidation=Strict", {
        "apiVersion": GV, "kind": "ResourceClaim", "metadata": {"name": "typo"},
        "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassname": DRIVER}}]}}})
    assert st == 400 and body["message"] == ('ResourceClaim in version "v1" cannot be handled as a ResourceClaim: '
                                             'strict decoding error: unknown field '
                                             '"spec.devices.requests[0].exactly.deviceClassname"')


def test_resource_slice_validation_and_generation(kube):
    path = f"{DRA_API}/resourceslices"
    base = {"apiVersion": GV, "kind": "ResourceSlice", "metadata": {"name": "s1"},
            "spec": {"driver": DRIVER, "pool": {"name": "node1", "resourceSliceCount": 1},
                     "devices": [{"name": "eth1", "attributes": {"mtu": {"int": 1500}}}]}}
    st, _, body = raw(kube, "POST", path, base)
    assert st == 422 and body["details"]["causes"] == [{
        "reason": "FieldValueRequired", "field": "spec",
        "message": "Required value: exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` "
                   "is required"}]
    bad = json.loads(json.dumps(base))
    bad["spec"]["nodeName"] = "node1"
    bad["spec"]["devices"].append({"name": "eth1", "attributes": {"mtu": {"int": 1, "string": "x"}}})
    st, _, body = raw(kube, "POST", path, bad)
    assert st == 422 and [(c["reason"], c["field"]) for c in body["details"]["causes"]] == [
        ("FieldValueInvalid", "spec.devices[1].attributes[mtu]"), ("FieldValueDuplicate", "spec.devices[1]")]
    good = json.loads(json.dumps(base))
    good["spec"]["nodeName"] = "node1"
    st, _, s = raw(kube, "POST", path, good)
    assert st == 201 and s["metadata"]["generation"] == 1 and s["spec"]["pool"]["generation"] == 0
    s["spec"]["devices"][0]["attributes"]["mtu"] = {"int": 9000}
    st, _, s2 = raw(kube, "PUT", f"{path}/s1", s)
    assert st == 200 and s2["metadata"]["generation"] == 2
    s2["metadata"]["labels"] = {"x": "y"}
    st, _, s3 = raw(kube, "PUT", f"{path}/s1", s2)
    assert st == 200 and s3["metadata"]["generation"] == 2
    s3["spec"]["nodeName"] = "node2"
    st, _, body = raw(kube, "PUT", f"{path}/s1", s3)
    assert st == 422 and body["details"]["causes"] == [{"reason": "FieldValueInvalid", "field": "spec.nodeName",
                                                        "message": 'Invalid value: "node2": field is immutable'}]
    st, _, body = raw(kube, "POST", path + "?fieldValidation=Strict", dict(good, metadata={"name": "s2"},
                                                                          extra={"a": 1}))
    assert st == 400 and 'strict decoding error: unknown field "extra"' in body["message"]
    st, hdrs, s4 = raw(kube, "POST", path, dict(good, metadata={"name": "s2"}, extra={"a": 1}))
    assert st == 201 and "extra" not in s4 and hdrs.get("Warning") == '299 - "unknown field \\"extra\\""'
    st, _, body = raw(kube, "POST", path, dict(good, metadata={"name": "s3"},
                                              spec=dict(good["spec"], pool={"name": "p", "generation": "one",
                                                                            "resourceSliceCount": 1})))
    assert st == 400 and body["reason"] == "BadRequest" and "cannot unmarshal string" in body["message"]


# ------------------------------------------------------------------------------------------ selectors, watch


def test_field_selectors(kube):
    kube.apply_resource_slice("node1", DRIVER, "node1", [("eth1", {})], name="a")
    kube.apply_resource_slice("node2", DRIVER, "node2", [("eth1", {})], name="b")
    kube.apply_resource_slice("node1", "gpu.example.com", "node1", [("gpu0", {})], name="c")
    kube.apply_resource_slice(None, DRIVER, "fabric", [("sw0", {})], name="d")

    def names(sel, plural="resourceslices", ns=None):
        base = f"{DRA_API}/namespaces/{ns}/{plural}" if ns else f"{DRA_API}/{plural}"
        st, _, body = raw(kube, "GET", f"{base}?fieldSelector={quote(sel)}")
        return (st, [o["metadata"]["name"] for o in body["items"]]) if st == 200 else (st, body)
    assert names("spec.nodeName=node1") == (200, ["a", "c"])
    assert names(f"spec.nodeName=node1,spec.driver={DRIVER}") == (200, ["a"])
    assert names("spec.nodeName=") == (200, ["d"])
    assert names("spec.driver!=gpu.example.com") == (200, ["a", "b", "d"])
    assert names("metadata.name=b") == (200, ["b"])
    st, body = names("spec.pool.name=node1")
    assert st == 400 and body["reason"] == "BadRequest"
    assert body["message"] == "field label not supported for resource.k8s.io/v1, Kind=ResourceSlice: spec.pool.name"
    st, body = names("metadata.namespace=x")
    assert st == 400 and body["message"].endswith("Kind=ResourceSlice: metadata.namespace")
    kube.create_resource_claim("ns1", "c1", [("nic", DRIVER)], labels={"app": "web"})
    kube.create_resource_claim("ns1", "c2", [("nic", DRIVER)])
    assert names("metadata.name=c2", "resourceclaims", "ns1") == (200, ["c2"])
    assert names("metadata.namespace=ns1", "resourceclaims") == (200, ["c1", "c2"])
    st, body = names("spec.devices=x", "resourceclaims", "ns1")
    assert st == 400 and body["message"] == ('"spec.devices" is not a known field selector: only "metadata.name", '
                                             '"metadata.namespace"')
    st, _, body = raw(kube, "GET", f"{DRA_API}/namespaces/ns1/resourceclaims?labelSelector=app%3Dweb")
    assert [o["metadata"]["name"] for o in body["items"]] == ["c1"]


def test_field_selector_pool_name_on_new_server(tmp_path):
    with KubeAPI(tmp_path / "k37", minor=37) as k:
        k.apply_resource_slice("node1", DRIVER, "pool-a", [("eth1", {})], name="a")
        k.apply_resource_slice("node2", DRIVER, "pool-b", [("eth1", {})], name="b")
        items = k.api("GET", f"{DRA_API}/resourceslices?fieldSelector=spec.pool.name%3Dpool-b")["items"]
        assert [o["metadata"]["name"] for o in items] == ["b"]


def test_watch_resource_slices(kube):
    kube.apply_resource_slice("node1", DRIVER, "node1", [("eth1", {})], name="old")
    rv = kube.api("GET", f"{DRA_API}/resourceslices")["metadata"]["resourceVersion"]
    conn = http.client.HTTPSConnection("127.0.0.1", kube.port, context=kube.ssl_context(), timeout=10)
    events = []
    try:
        conn.request("GET", f"{DRA_API}/resourceslices?watch=1&resourceVersion={rv}&timeoutSeconds=5&fieldSelector="
                     + quote("spec.nodeName=node1"), headers={"Authorization": f"Bearer {kube.token}"})
        r = conn.getresponse()
        assert r.status == 200

        def writer():
            time.sleep(0.2)
            kube.apply_resource_slice("node2", DRIVER, "node2", [("eth1", {})], name="elsewhere")
            kube.apply_resource_slice("node1", DRIVER, "node1", [("eth1", {}), ("eth2", {})], name="old")
            kube.api("DELETE", f"{DRA_API}/resourceslices/old")
        t = threading.Thread(target=writer)
        t.start()
        while len(events) < 2:
            ev = json.loads(r.readline())
            events.append((ev["type"], ev["object"]["metadata"]["name"],
                           [d["name"] for d in ev["object"]["spec"]["devices"]]))
        t.join()
    finally:
        conn.close()
    assert events == [("MODIFIED", "old", ["eth1", "eth2"]), ("DELETED", "old", ["eth1", "eth2"])]
    st, _, body = raw(kube, "GET", f"{DRA_API}/resourceslices?watch=1&fieldSelector=spec.pool.name%3Dx")
    assert st == 400 and "field label not supported" in body["message"]


def test_python_client_watch_resource_slices(kube):
    pytest.importorskip("kubernetes")
    from kubernetes import client, config, watch
    if not hasattr(client, "ResourceV1Api"):
        pytest.skip("this kubernetes client has no ResourceV1Api")
    api = client.ResourceV1Api(config.new_client_from_config(config_file=str(kube.kubeconfig_path)))
    rv = api.list_resource_slice().metadata.resource_version
    timer = threading.Timer(0.3, kube.apply_resource_slice, ("node1", DRIVER, "node1", [("eth1", {})]))
    timer.start()
    seen = []
    w = watch.Watch()
    try:
        for ev in w.stream(api.list_resource_slice, resource_version=rv, field_selector=f"spec.driver={DRIVER}",
                           timeout_seconds=5):
            seen.append((ev["type"], ev["object"].spec.node_name))
            w.stop()
    finally:
        timer.join()
    assert seen == [("ADDED", "node1")]


# ------------------------------------------------------------------------------------------ kubeapi helpers


def test_kubeapi_dra_helpers(kube):
    s = kube.apply_resource_slice("node1", DRIVER, "node1", [("eth1", {"net.example.com/pci": "0000:01:00.0",
                                                                       "mtu": 9000, "sriov": True,
                                                                       "fw": {"version": "1.2.3"}})])
    assert s["metadata"]["name"] == "node1-net.example.com-node1"
    assert s["spec"]["devices"][0]["attributes"] == {"net.example.com/pci": {"string": "0000:01:00.0"},
                                                     "mtu": {"int": 9000}, "sriov": {"bool": True},
                                                     "fw": {"version": "1.2.3"}}
    assert [x["metadata"]["name"] for x in kube.resource_slices(node="node1", driver=DRIVER)] == [s["metadata"]["name"]]
    assert kube.resource_slices(node="node2") == []
    kube.create_device_class(DRIVER, [f'device.driver == "{DRIVER}"'])
    c = kube.create_resource_claim("ns1", "nic", [("nic", DRIVER), {"name": "all", "exactly": {
        "deviceClassName": DRIVER, "allocationMode": "All"}}])
    assert c["spec"]["devices"]["requests"][0]["exactly"] == {"deviceClassName": DRIVER, "allocationMode": "ExactCount",
                                                              "count": 1}
    assert "count" not in c["spec"]["devices"]["requests"][1]["exactly"]
    kube.create_pod("ns1", "web", uid="pod-uid-1")
    c = kube.allocate_claim("ns1", "nic", [("nic", DRIVER, "node1", "eth1")], node="node1",
                            reserved_for=[("web", "pod-uid-1")])
    assert c["status"]["allocation"]["nodeSelector"]["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["node1"]
    assert ("kube-scheduler", "Update", "status") in managers(c)
    c = kube.apply_claim_device_status("ns1", "nic", [dev("eth1", networkData={"interfaceName": "net1"})], "plexus")
    assert c["status"]["devices"][0]["networkData"] == {"interfaceName": "net1"}
    st, body = kube.apply_claim_device_status("ns1", "nic", [dev("eth1", networkData={"interfaceName": "x"})],
                                              "other", ok=None)
    assert st == 409
    got = kube.resource_claim("ns1", "nic")
    assert got["status"]["reservedFor"] == [{"resource": "pods", "name": "web", "uid": "pod-uid-1"}]
    assert kube.resource_claim("ns1", "missing") is None
    pod = kube.set_pod_claim_statuses("ns1", "web", [("nic", "nic"), ("unused", None)])
    assert pod["status"]["resourceClaimStatuses"] == [{"name": "nic", "resourceClaimName": "nic"}, {"name": "unused"}]
    assert kube.get_pod("ns1", "web")["status"]["resourceClaimStatuses"][0]["resourceClaimName"] == "nic"


def test_persistence_and_namespace_cascade(kube):
    allocated_claim(kube)
    kube.apply_claim_device_status("ns1", "nic", [dev("eth1")], "plexus")
    kube.apply_resource_slice("node1", DRIVER, "node1", [("eth1", {})], name="s")
    kube.restart()
    c = kube.resource_claim("ns1", "nic")
    assert owned_devices(c, "plexus") == ["eth1"]
    assert kube.api("GET", f"{DRA_API}/resourceslices/s")["spec"]["nodeName"] == "node1"
    kube.api("DELETE", "/api/v1/namespaces/ns1")
    assert kube.resource_claim("ns1", "nic") is None


def test_managed_fields_updates_and_reset(kube):
    c = kube.create_resource_claim("ns1", "nic", [("nic", DRIVER)])
    assert managers(c) == [("plexus-testenv", "Update", "")]
    st, _, c = raw(kube, "PATCH", claim_path("ns1", "nic") + "?fieldManager=labeller",
                   {"metadata": {"labels": {"team": "net"}}}, MERGE)
    assert st == 200 and managers(c) == [("labeller", "Update", ""), ("plexus-testenv", "Update", "")]
    entry = next(e for e in c["metadata"]["managedFields"] if e["manager"] == "labeller")
    assert entry["fieldsV1"] == {"f:metadata": {"f:labels": {".": {}, "f:team": {}}}} and entry["time"]
    # a change of the same field moves it to the new writer; its old owner keeps the rest
    st, _, c = raw(kube, "PATCH", claim_path("ns1", "nic"), {"metadata": {"labels": {"team": "sre"}}}, MERGE,
                   headers={"User-Agent": "relabel/1.0 (linux)"})
    assert st == 200 and "relabel" in {e["manager"] for e in c["metadata"]["managedFields"]}
    labeller = [e for e in c["metadata"]["managedFields"] if e["manager"] == "labeller"]
    assert labeller == [] or "f:team" not in labeller[0]["fieldsV1"]["f:metadata"]["f:labels"]
    # managedFields: [] on the resource resets them; on /status the stored ones are kept
    c["metadata"]["managedFields"] = []
    st, _, c2 = raw(kube, "PUT", claim_path("ns1", "nic"), c)
    assert st == 200 and "managedFields" not in c2["metadata"]
    assert int(c2["metadata"]["resourceVersion"]) > int(c["metadata"]["resourceVersion"])
    kube.allocate_claim("ns1", "nic", [("nic", DRIVER, "node1", "eth1")])
    c = kube.resource_claim("ns1", "nic")
    c["metadata"]["managedFields"] = []
    st, _, c3 = raw(kube, "PUT", claim_path("ns1", "nic", "status"), c)
    assert st == 200 and managers(c3) == [("kube-scheduler", "Update", "status")]


def test_resource_claim_templates_and_device_classes(kube):
    kube.create_namespace("ns1")
    tpl = {"apiVersion": GV, "kind": "ResourceClaimTemplate", "metadata": {"name": "nics"},
           "spec": {"spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": DRIVER}}]}}}}
    st, _, t = raw(kube, "POST", f"{DRA_API}/namespaces/ns1/resourceclaimtemplates", tpl)
    assert st == 201 and t["spec"]["spec"]["devices"]["requests"][0]["exactly"]["count"] == 1
    t["spec"]["spec"]["devices"]["requests"][0]["name"] = "other"
    st, _, body = raw(kube, "PUT", f"{DRA_API}/namespaces/ns1/resourceclaimtemplates/nics", t)
    assert st == 422 and body["details"]["causes"][0]["field"] == "spec"
    st, _, body = raw(kube, "POST", f"{DRA_API}/deviceclasses", {
        "apiVersion": GV, "kind": "DeviceClass", "metadata": {"name": "bad"}, "spec": {"selectors": [{}]}})
    assert st == 422 and body["details"]["causes"] == [{"reason": "FieldValueRequired", "field": "spec.selectors[0].cel",
                                                        "message": "Required value"}]
    c = kube.create_device_class("good", ['device.driver == "x"'])
    assert c["metadata"]["generation"] == 1 and managers(c) == [("plexus-testenv", "Update", "")]
    st, _, body = raw(kube, "DELETE", f"{DRA_API}/deviceclasses/good")
    assert st == 200 and body["kind"] == "DeviceClass"
    assert raw(kube, "GET", f"{DRA_API}/deviceclasses/good")[0] == 404
