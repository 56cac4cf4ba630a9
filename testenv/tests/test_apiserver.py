"""Tests of the Plexus test API server (testenv/apiserver/server.py) with real clients:
kubectl (skipped when absent), the Python `kubernetes` client (skipped when absent) and plain http.client/ssl."""

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from testenv.lib.kubeapi import KubeAPI, NAD_CRD_DIR, _server_module  # noqa: E402

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")

NAD_YAML = """apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: macvlan-conf
  namespace: {ns}
spec:
  config: '{{"cniVersion":"1.0.0","name":"macvlan-conf","type":"macvlan","master":"eth0"}}'
"""


@pytest.fixture
def kube(tmp_path):
    k = KubeAPI(tmp_path / "kube")
    try:
        yield k
    finally:
        k.close()


def raw(kube, method, path, body=None, headers=None, token=None, auth=True, ctx=None):
    """One request on a fresh TLS connection, logged like any client's; returns (status, headers, parsed body)."""
    return kube.request(method, path, body, headers=headers, token=token, auth=auth, ctx=ctx, timeout=10,
                        user_agent=None)


def pod_path(ns, name, sub=""):
    return f"/api/v1/namespaces/{ns}/pods/{name}" + (f"/{sub}" if sub else "")


# ------------------------------------------------------------------------------------------ transport and auth


def test_public_endpoints_and_401_status(kube):
    st, _, body = raw(kube, "GET", "/version", auth=False)
    assert st == 200 and body["major"] == "1" and body["minor"] == "32"
    st, _, body = raw(kube, "GET", "/readyz", auth=False)
    assert st == 200
    for kwargs in ({"auth": False}, {"token": "definitely-wrong"}):
        st, hdrs, body = raw(kube, "GET", "/api/v1/namespaces", **kwargs)
        assert st == 401
        assert hdrs["Content-Type"] == "application/json"
        assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    st, _, body = raw(kube, "GET", "/api/v1/namespaces")
    assert st == 200 and {"default", "kube-system"} <= {n["metadata"]["name"] for n in body["items"]}
    if shutil.which("curl"):
        r = subprocess.run(["curl", "-sS", "--cacert", str(kube.ca_path), "-H", "Authorization: Bearer wrong",
                            "-w", "\n%{http_code}", f"https://localhost:{kube.port}/api/v1/namespaces/default/pods"],
                           capture_output=True, text=True, timeout=20)
        body, code = r.stdout.rsplit("\n", 1)
        assert code == "401" and json.loads(body)["reason"] == "Unauthorized", r.stderr


def test_tls_certificate_san_and_wrong_ca(kube, tmp_path):
    for host in ("127.0.0.1", "localhost"):
        ctx = ssl.create_default_context(cafile=str(kube.ca_path))     # check_hostname=True
        with socket.create_connection(("127.0.0.1", kube.port), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname=host) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
                assert tls.selected_alpn_protocol() in (None, "http/1.1")
    with KubeAPI(tmp_path / "other") as other:                          # a different CA
        ctx = ssl.create_default_context(cafile=str(other.ca_path))
        with pytest.raises(ssl.SSLCertVerificationError):
            raw(kube, "GET", "/version", ctx=ctx, auth=False)


def test_tcp_nodelay_keepalive_and_watch_latency(kube):
    conn = http.client.HTTPSConnection("127.0.0.1", kube.port, context=kube.ssl_context(), timeout=10)
    try:
        times = []
        for _ in range(20):
            t = time.perf_counter()
            conn.request("GET", "/api/v1/namespaces/default", headers={"Authorization": f"Bearer {kube.token}"})
            r = conn.getresponse()
            assert r.status == 200 and r.getheader("Content-Length")
            r.read()
            times.append(time.perf_counter() - t)
    finally:
        conn.close()
    assert len({e["conn"] for e in kube.requests(path="/namespaces/default$", include_helper=True)}) == 1
    assert sorted(times)[len(times) // 2] < 0.030, times
    # a watch response is written as several small segments (headers, then chunks): without TCP_NODELAY,
    # Nagle + delayed ACK stall the stream by ~40 ms
    for i in range(4):
        kube.create_namespace(f"ns{i}")
    elapsed = []
    for _ in range(3):
        conn = http.client.HTTPSConnection("127.0.0.1", kube.port, context=kube.ssl_context(), timeout=10)
        try:
            conn.connect()
            t = time.perf_counter()
            conn.request("GET", "/api/v1/namespaces?watch=1&resourceVersion=0&timeoutSeconds=1",
                         headers={"Authorization": f"Bearer {kube.token}"})
            r = conn.getresponse()
            names = [json.loads(r.readline())["object"]["metadata"]["name"] for _ in range(8)]
            elapsed.append(time.perf_counter() - t)
        finally:
            conn.close()
        assert "ns3" in names
    assert min(elapsed) < 0.03, elapsed


def test_client_certificate_auth(kube):
    ctx = kube.ssl_context()
    ctx.load_cert_chain(str(kube.client_cert_path), str(kube.client_key_path))
    st, _, body = raw(kube, "GET", "/api/v1/namespaces", auth=False, ctx=ctx)
    assert st == 200
    crt, key = kube.issue_client_cert("viewer", "viewer", "readonly")
    ctx = kube.ssl_context()
    ctx.load_cert_chain(str(crt), str(key))
    assert raw(kube, "GET", "/api/v1/namespaces", auth=False, ctx=ctx)[0] == 200
    st, _, body = raw(kube, "POST", "/api/v1/namespaces", {"metadata": {"name": "x"}}, auth=False, ctx=ctx)
    assert st == 403 and body["reason"] == "Forbidden"
    assert 'User "viewer" cannot create resource "namespaces"' in body["message"]


def test_token_rotation(kube):
    old = kube.token
    path = pod_path("default", "p1")
    kube.create_pod("default", "p1")
    new = kube.rotate_token()
    assert new != old
    assert raw(kube, "GET", path, token=old)[0] == 401
    assert raw(kube, "GET", path, token=new)[0] == 200
    # a kubeconfig using tokenFile follows the rotation
    kc = kube.write_kubeconfig(kube.state_dir / "kc-tokenfile", use_token_file=True)
    assert f"tokenFile: \"{kube.token_file}\"" in kc.read_text()
    newer = kube.rotate_token()
    assert kube.token_file.read_text().strip() == newer
    if shutil.which("kubectl"):
        out = kube.kubectl("get", "pod", "p1", "-n", "default", "-o", "name", kubeconfig=kc).stdout
        assert out.strip() == "pod/p1"


def test_multus_role_cannot_patch_pod_status(kube):
    kube.create_pod("ns1", "web")
    p = pod_path("ns1", "web", "status")
    st, _, body = raw(kube, "PATCH", p, json.dumps({"metadata": {"annotations": {"a": "b"}}}),
                      headers={"Content-Type": "application/merge-patch+json"}, token=kube.multus_token)
    assert st == 403
    assert body["message"] == ('pods "web" is forbidden: User "system:serviceaccount:kube-system:multus" cannot '
                               'patch resource "pods/status" in API group "" in the namespace "ns1"')
    st, _, pod = raw(kube, "GET", pod_path("ns1", "web"), token=kube.multus_token)
    assert st == 200
    pod["metadata"]["annotations"] = {"k8s.v1.cni.cncf.io/network-status": "[]"}
    st, _, body = raw(kube, "PUT", p, pod, token=kube.multus_token)
    assert st == 200 and body["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"] == "[]"


# ------------------------------------------------------------------------------------------ kubectl


@needs_kubectl
def test_kubectl_crd_nad_pod_flow(kube, tmp_path):
    out = kube.kubectl("apply", "-f", str(NAD_CRD_DIR)).stdout
    assert "customresourcedefinition.apiextensions.k8s.io/network-attachment-definitions.k8s.cni.cncf.io created" in out
    kube.kubectl("wait", "--for", "condition=established", "--timeout=10s",
                 "crd/network-attachment-definitions.k8s.cni.cncf.io")
    assert "namespace/ns1 created" in kube.kubectl("create", "namespace", "ns1").stdout
    nad = tmp_path / "nad.yaml"
    nad.write_text(NAD_YAML.format(ns="ns1"))
    assert "macvlan-conf created" in kube.kubectl("apply", "-f", str(nad)).stdout
    assert "macvlan-conf unchanged" in kube.kubectl("apply", "-f", str(nad)).stdout
    nad.write_text(NAD_YAML.format(ns="ns1").replace("eth0", "eth1"))
    assert "macvlan-conf configured" in kube.kubectl("apply", "-f", str(nad)).stdout
    stored = kube.get_nad("ns1", "macvlan-conf")
    assert json.loads(stored["spec"]["config"])["master"] == "eth1"
    assert stored["metadata"]["generation"] == 2
    for name in ("net-attach-def", "nad", "network-attachment-definitions"):
        lines = kube.kubectl("get", name, "-n", "ns1").stdout.splitlines()
        assert lines[0].split() == ["NAME", "AGE"] and lines[1].split()[0] == "macvlan-conf", lines
    # the pod annotation, read back through jsonpath
    status = '[{"name":"default/macvlan-conf","interface":"net1","ips":["10.1.1.2"]}]'
    kube.create_pod("ns1", "p", {"k8s.v1.cni.cncf.io/network-status": status})
    out = kube.kubectl("get", "pod", "p", "-n", "ns1", "-o",
                       r"jsonpath={.metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}").stdout
    assert json.loads(out) == json.loads(status)
    header = kube.kubectl("get", "pods", "-n", "ns1").stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]          # server-side Table
    # strategic merge patch on a custom resource is refused (415), merge patch works
    r = kube.kubectl("patch", "nad", "macvlan-conf", "-n", "ns1", "-p", '{"metadata":{"labels":{"a":"b"}}}',
                     check=False)
    assert r.returncode != 0 and "application/strategic-merge-patch+json is not supported" in r.stderr
    kube.kubectl("patch", "nad", "macvlan-conf", "-n", "ns1", "--type", "merge", "-p",
                 '{"metadata":{"labels":{"a":"b"}}}')
    assert kube.get_nad("ns1", "macvlan-conf")["metadata"]["labels"] == {"a": "b"}
    kube.kubectl("annotate", "pod", "p", "-n", "ns1", "foo=bar")
    assert kube.get_pod("ns1", "p")["metadata"]["annotations"]["foo"] == "bar"
    # delete
    assert 'deleted' in kube.kubectl("delete", "-f", str(nad)).stdout
    assert kube.get_nad("ns1", "macvlan-conf") is None
    kube.kubectl("delete", "pod", "p", "-n", "ns1")
    assert kube.get_pod("ns1", "p") is None
    kube.kubectl("delete", "namespace", "ns1")
    assert "ns1" not in kube.kubectl("get", "ns", "-o", "name").stdout


@needs_kubectl
def test_kubectl_validation_errors(kube, tmp_path):
    kube.install_nad_crd()
    kube.create_namespace("ns1")
    r = kube.kubectl("apply", "-f", "-", input=NAD_YAML.format(ns="ns1").replace("config:", "conifg:"), check=False)
    assert r.returncode != 0 and 'strict decoding error: unknown field "spec.conifg"' in r.stderr
    bad = NAD_YAML.format(ns="ns1").split("spec:")[0] + "spec:\n  config:\n    type: macvlan\n"
    r = kube.kubectl("apply", "-f", "-", input=bad, check=False)
    assert r.returncode != 0 and "spec.config in body must be of type string" in r.stderr
    r = kube.kubectl("get", "pod", "nope", "-n", "ns1", check=False)
    assert r.returncode != 0 and 'Error from server (NotFound): pods "nope" not found' in r.stderr


@needs_kubectl
def test_kubectl_retries_429_and_reset(kube):
    kube.create_pod("ns1", "web")
    kube.kubectl("get", "pod", "web", "-n", "ns1")        # warm the discovery cache
    kube.clear_requests()
    kube.inject(method="GET", path="/pods/web$", code=429, retry_after=1, count=1)
    t = time.monotonic()
    assert kube.kubectl("get", "pod", "web", "-n", "ns1", "-o", "name").stdout.strip() == "pod/web"
    assert time.monotonic() - t >= 0.9                    # Retry-After honoured
    assert [e["status"] for e in kube.requests("GET", "/pods/web$")] == [429, 200]
    kube.clear_requests()
    kube.inject(method="GET", path="/pods/web$", action="reset", count=1)
    assert kube.kubectl("get", "pod", "web", "-n", "ns1", "-o", "name").stdout.strip() == "pod/web"
    log = kube.requests("GET", "/pods/web$")
    assert [e["status"] for e in log] == [0, 200] and log[0]["fault"] == "reset"
    kube.inject(method="GET", path="/pods/web$", code=429, count=1)           # no Retry-After: no retry
    r = kube.kubectl("get", "pod", "web", "-n", "ns1", check=False)
    assert r.returncode != 0 and "TooManyRequests" in r.stderr


# ------------------------------------------------------------------------------------------ Python client


def test_python_client_pod_status_annotations(kube):
    kubernetes = pytest.importorskip("kubernetes")
    from kubernetes import client, config
    kube.create_pod("ns1", "web", {"k8s.v1.cni.cncf.io/networks": "macvlan-conf"}, uid="uid-1234")
    api = client.CoreV1Api(config.new_client_from_config(config_file=str(kube.kubeconfig_path)))
    pod = api.read_namespaced_pod("web", "ns1")
    assert pod.metadata.uid == "uid-1234"
    assert pod.metadata.annotations == {"k8s.v1.cni.cncf.io/networks": "macvlan-conf"}
    rv0 = pod.metadata.resource_version
    status = '[{"name":"ns1/macvlan-conf","interface":"net1"}]'
    patched = api.patch_namespaced_pod_status("web", "ns1", {"metadata": {"annotations": {
        "k8s.v1.cni.cncf.io/network-status": status}}})
    assert patched.metadata.annotations["k8s.v1.cni.cncf.io/network-status"] == status
    assert patched.metadata.annotations["k8s.v1.cni.cncf.io/networks"] == "macvlan-conf"
    assert int(patched.metadata.resource_version) > int(rv0)
    # the Multus way: PUT the whole pod to /status; a stale resourceVersion gives 409
    pod.metadata.annotations["x"] = "y"
    with pytest.raises(kubernetes.client.exceptions.ApiException) as ei:
        api.replace_namespaced_pod_status("web", "ns1", pod)
    assert ei.value.status == 409 and json.loads(ei.value.body)["reason"] == "Conflict"
    fresh = api.read_namespaced_pod("web", "ns1")
    fresh.metadata.annotations["x"] = "y"
    fresh.spec.node_name = "ignored-by-status-subresource"
    done = api.replace_namespaced_pod_status("web", "ns1", fresh)
    assert done.metadata.annotations["x"] == "y" and done.spec.node_name is None
    # custom objects
    kube.apply_nad("ns1", "macvlan-conf", '{"cniVersion":"1.0.0","type":"macvlan"}')
    co = client.CustomObjectsApi(api.api_client)
    nad = co.get_namespaced_custom_object("k8s.cni.cncf.io", "v1", "ns1", "network-attachment-definitions",
                                          "macvlan-conf")
    assert json.loads(nad["spec"]["config"])["type"] == "macvlan"
    # an Event, as a plugin's event recorder would post it (Python 37 sends no Content-Type)
    ev = client.CoreV1Event(metadata=client.V1ObjectMeta(name="web.plexus1"), reason="AddedInterface",
                            involved_object=client.V1ObjectReference(kind="Pod", name="web", namespace="ns1"),
                            message="Add net1 [10.1.1.2/24] from ns1/macvlan-conf", type="Normal")
    assert api.create_namespaced_event("ns1", ev).reason == "AddedInterface"
    assert [e["reason"] for e in kube.events("ns1")] == ["AddedInterface"]
    # urllib3 honours Retry-After on a 429 for GET
    kube.clear_requests()
    kube.inject(method="GET", path="/pods/web$", code=429, retry_after=1, count=1)
    assert api.read_namespaced_pod("web", "ns1").metadata.name == "web"
    assert [e["status"] for e in kube.requests("GET", "/pods/web$")] == [429, 200]


def test_python_client_watch(kube):
    pytest.importorskip("kubernetes")
    from kubernetes import client, config, watch
    kube.create_namespace("ns1")
    api = client.CoreV1Api(config.new_client_from_config(config_file=str(kube.kubeconfig_path)))
    rv = api.list_namespaced_pod("ns1").metadata.resource_version
    creator = threading.Timer(0.3, kube.create_pod, ("ns1", "late"))
    creator.start()
    seen = []
    w = watch.Watch()
    try:
        for ev in w.stream(api.list_namespaced_pod, "ns1", resource_version=rv, timeout_seconds=5):
            seen.append((ev["type"], ev["object"].metadata.name))
            w.stop()
    finally:
        creator.join()
    assert seen == [("ADDED", "late")]


# ------------------------------------------------------------------------------------------ semantics


def test_resource_version_conflicts(kube):
    pod = kube.create_pod("ns1", "web", {"a": "1"})
    rv = pod["metadata"]["resourceVersion"]
    # a no-op PUT does not bump the resourceVersion
    st, _, same = raw(kube, "PUT", pod_path("ns1", "web"), pod)
    assert st == 200 and same["metadata"]["resourceVersion"] == rv
    pod["metadata"]["annotations"]["a"] = "2"
    st, _, upd = raw(kube, "PUT", pod_path("ns1", "web"), pod)
    assert st == 200 and int(upd["metadata"]["resourceVersion"]) > int(rv)
    pod["metadata"]["annotations"]["a"] = "3"          # still carries the old resourceVersion
    for sub in ("", "status"):
        st, _, body = raw(kube, "PUT", pod_path("ns1", "web", sub), pod)
        assert st == 409
        assert body["reason"] == "Conflict" and body["details"] == {"name": "web", "kind": "pods"}
        assert body["message"].startswith('Operation cannot be fulfilled on pods "web": the object has been modified')
    st, _, body = raw(kube, "PATCH", pod_path("ns1", "web"),
                      json.dumps({"metadata": {"resourceVersion": rv, "annotations": {"a": "4"}}}),
                      headers={"Content-Type": "application/merge-patch+json"})
    assert st == 409
    assert kube.get_pod("ns1", "web")["metadata"]["annotations"] == {"a": "2"}
    st, _, body = raw(kube, "POST", "/api/v1/namespaces/ns1/pods", pod)
    assert st == 409 and body["reason"] == "AlreadyExists" and body["message"] == 'pods "web" already exists'


def test_patch_types_and_errors(kube):
    kube.create_pod("ns1", "web", {"keep": "1", "drop": "2"})
    mp = {"Content-Type": "application/merge-patch+json"}
    st, _, body = raw(kube, "PATCH", pod_path("ns1", "web"), json.dumps({"metadata": {"annotations": {"drop": None}}}),
                      headers=mp)
    assert st == 200 and body["metadata"]["annotations"] == {"keep": "1"}
    smp = {"Content-Type": "application/strategic-merge-patch+json"}
    st, _, body = raw(kube, "PATCH", pod_path("ns1", "web"), json.dumps(
        {"$setElementOrder/containers": [{"name": "main"}, {"name": "side"}],
         "spec": {"containers": [{"name": "side", "image": "busybox"}]}}), headers=smp)
    assert st == 200 and [c["name"] for c in body["spec"]["containers"]] == ["main", "side"]
    jp = {"Content-Type": "application/json-patch+json"}
    st, _, body = raw(kube, "PATCH", pod_path("ns1", "web"), json.dumps(
        [{"op": "add", "path": "/metadata/annotations/k8s.v1.cni.cncf.io~1network-status", "value": "[]"},
         {"op": "remove", "path": "/metadata/annotations/keep"}]), headers=jp)
    assert st == 200 and body["metadata"]["annotations"] == {"k8s.v1.cni.cncf.io/network-status": "[]"}
    st, _, body = raw(kube, "PATCH", pod_path("ns1", "web"), json.dumps(
        [{"op": "replace", "path": "/metadata/labels/missing", "value": "x"}]), headers=jp)
    assert st == 422 and body["kind"] == "Status"
    kube.apply_nad("ns1", "n1", '{"type":"bridge"}')
    nad_path = "/apis/k8s.cni.cncf.io/v1/namespaces/ns1/network-attachment-definitions/n1"
    st, _, body = raw(kube, "PATCH", nad_path, json.dumps({"metadata": {"labels": {"a": "b"}}}), headers=smp)
    assert st == 415 and body["reason"] == "UnsupportedMediaType"
    st, _, body = raw(kube, "GET", nad_path.replace("/n1", "/nope"))
    assert st == 404 and body["message"] == 'network-attachment-definitions.k8s.cni.cncf.io "nope" not found'
    assert body["details"] == {"name": "nope", "group": "k8s.cni.cncf.io", "kind": "network-attachment-definitions"}
    st, _, body = raw(kube, "POST", "/api/v1/namespaces/nons/pods", {"metadata": {"name": "x"}, "spec": {
        "containers": [{"name": "c", "image": "i"}]}})
    assert st == 404 and body["message"] == 'namespaces "nons" not found'
    st, _, body = raw(kube, "POST", "/api/v1/namespaces/ns1/pods", {"metadata": {"name": "Bad_Name"}, "spec": {
        "containers": [{"name": "c", "image": "i"}]}})
    assert st == 422 and body["reason"] == "Invalid" and body["details"]["causes"][0]["field"] == "metadata.name"
    st, _, body = raw(kube, "DELETE", nad_path)
    assert st == 200 and body["status"] == "Success" and body["details"]["name"] == "n1"


def test_events_and_field_selectors(kube):
    kube.create_pod("ns1", "web")
    ev = {"metadata": {"name": "web.1"}, "involvedObject": {"kind": "Pod", "namespace": "ns1", "name": "web"},
          "reason": "AddedInterface", "message": "Add net1", "type": "Normal", "source": {"component": "plexus"}}
    st, _, body = raw(kube, "POST", "/api/v1/namespaces/ns1/events", ev)
    assert st == 201 and body["kind"] == "Event"
    ev2 = dict(ev, metadata={"name": "other.1"}, involvedObject={"kind": "Pod", "namespace": "ns1", "name": "x"})
    assert raw(kube, "POST", "/api/v1/namespaces/ns1/events", ev2)[0] == 201
    st, _, body = raw(kube, "GET", "/api/v1/namespaces/ns1/events?fieldSelector=involvedObject.name%3Dweb")
    assert [e["reason"] for e in body["items"]] == ["AddedInterface"]
    assert [e["metadata"]["name"] for e in kube.events("ns1")] == ["other.1", "web.1"]


def test_fault_injection_control_api(kube):
    kube.create_pod("ns1", "web")
    p = pod_path("ns1", "web")
    rid = kube.inject(method="GET", path="/pods/web$", code=503, retry_after=2, count=2, message="busy")
    for _ in range(2):
        st, hdrs, body = raw(kube, "GET", p)
        assert st == 503 and hdrs["Retry-After"] == "2"
        assert body["reason"] == "ServiceUnavailable" and body["details"]["retryAfterSeconds"] == 2
        assert body["message"] == "busy"
    assert raw(kube, "GET", p)[0] == 200
    assert [f for f in kube.faults() if f["id"] == rid][0]["remaining"] == 0
    # reset: no response at all, then normal service
    kube.inject(method="GET", path_prefix="/api/v1/namespaces/ns1/pods/", action="reset", count=1)
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected, ssl.SSLError)):
        raw(kube, "GET", p)
    assert raw(kube, "GET", p)[0] == 200
    # delay combines with later rules; skip lets the first request through
    kube.inject(method="PUT", path="/status$", action="delay", delay_ms=200, count=1)
    kube.inject(method="PUT", path="/status$", code=409, count=1, skip=0)
    pod = kube.get_pod("ns1", "web")
    t = time.monotonic()
    st, _, body = raw(kube, "PUT", pod_path("ns1", "web", "status"), pod)
    assert st == 409 and time.monotonic() - t >= 0.19
    assert raw(kube, "PUT", pod_path("ns1", "web", "status"), pod)[0] == 200
    kube.inject(method="GET", path="/pods/web$", action="status", code=500, skip=1, count=1)
    assert [raw(kube, "GET", p)[0] for _ in range(3)] == [200, 500, 200]
    kube.clear_faults()
    assert kube.faults() == []
    log = kube.requests("GET", "/pods/web$", include_helper=True)
    assert all({"ts", "method", "path", "query", "status", "user_agent"} <= set(e) for e in log)
    assert [e["status"] for e in log][-3:] == [200, 500, 200]


def test_restart_keeps_port_ca_and_objects(kube):
    kube.create_pod("ns1", "web", {"a": "b"}, uid="u-1")
    port, ca = kube.port, kube.ca_path.read_bytes()
    rv = kube.get_pod("ns1", "web")["metadata"]["resourceVersion"]
    kube.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    kube.start()
    assert kube.port == port and kube.ca_path.read_bytes() == ca
    pod = kube.get_pod("ns1", "web")
    assert pod["metadata"]["uid"] == "u-1" and pod["metadata"]["resourceVersion"] == rv
    kube.create_pod("ns1", "web2")
    assert int(kube.get_pod("ns1", "web2")["metadata"]["resourceVersion"]) > int(rv)


def test_builtin_nad_crd_matches_crds_dir():
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load((NAD_CRD_DIR / "network-attachment-definition.yaml").read_text())
    assert doc == _server_module().NAD_CRD
