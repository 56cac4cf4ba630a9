"""Tests of the fake kubelet PodResources server (testenv/kubelet/fake_kubelet.py) with a real gRPC client generated
from the same api.proto, and of the device-manager checkpoint writer (testenv/kubelet/checkpoint.py).
Unprivileged; every server runs on a socket in its own temp dir and is stopped by its fixture."""

import base64
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:
    sys.path.insert(0, REPO)

pytest.importorskip("grpc_tools", reason="grpcio-tools cannot be imported (testenv/install.sh installs it); "
                                         "the fake kubelet generates its stubs with grpc_tools.protoc")
import grpc  # noqa: E402  (grpcio-tools depends on grpcio)

from testenv.kubelet import checkpoint as ckp  # noqa: E402
from testenv.kubelet import fake_kubelet as fk  # noqa: E402

SRIOV = "intel.com/intel_sriov_netdevice"
SRIOV_POD = [
    {"name": "app", "devices": [{"resource_name": SRIOV, "device_ids": ["0000:03:02.3", "0000:03:02.0"], "numa": 0}]},
    {"name": "sidecar"},
]


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="pxkl-")  # short: unix socket paths are limited to 107 bytes
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def stubs():
    return fk.load_stubs()


@pytest.fixture
def kubelet(sockdir):
    kl = fk.FakeKubelet(os.path.join(sockdir, "kubelet.sock"))
    kl.start()
    try:
        yield kl
    finally:
        kl.stop()


def channel_for(path):
    return grpc.insecure_channel("unix:" + path)


@pytest.fixture
def client(kubelet, stubs):
    ch = channel_for(kubelet.socket_path)
    try:
        yield stubs[1].PodResourcesListerStub(ch)
    finally:
        ch.close()


def get(client, stubs, name, namespace="default", timeout=5):
    return client.Get(stubs[0].GetPodResourcesRequest(pod_name=name, pod_namespace=namespace), timeout=timeout)


def list_pods(client, stubs, timeout=5):
    return client.List(stubs[0].ListPodResourcesRequest(), timeout=timeout)


def rpc_error(fn):
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    return ei.value


# -- serving ----------------------------------------------------------------------------------------------------------


def test_get_present_pod(kubelet, client, stubs):
    kubelet.set_pod("default", "sriov-pod", containers=SRIOV_POD)
    kubelet.set_pod("other", "plain", containers=["c"])
    pod = get(client, stubs, "sriov-pod").pod_resources
    assert (pod.name, pod.namespace) == ("sriov-pod", "default")
    assert [c.name for c in pod.containers] == ["app", "sidecar"]
    app, sidecar = pod.containers
    assert len(app.devices) == 1
    dev = app.devices[0]
    assert dev.resource_name == SRIOV
    assert list(dev.device_ids) == ["0000:03:02.3", "0000:03:02.0"]
    assert dev.HasField("topology") and [n.ID for n in dev.topology.nodes] == [0]
    assert list(sidecar.devices) == []

    kubelet.set_pod("default", "numa", containers=[{"name": "c", "devices": [
        {"resource_name": SRIOV, "device_ids": ["0000:81:00.1"], "numa": [0, 1]},
        {"resource_name": "example.com/x", "device_ids": ["x1"]}]}])
    devs = get(client, stubs, "numa").pod_resources.containers[0].devices
    assert [n.ID for n in devs[0].topology.nodes] == [0, 1]
    assert not devs[1].HasField("topology")


def test_list_and_mutation(kubelet, client, stubs):
    assert list(list_pods(client, stubs).pod_resources) == []
    kubelet.set_pod("default", "sriov-pod", containers=SRIOV_POD)
    kubelet.set_pod("default", "plain", containers=["c"])
    pods = list_pods(client, stubs).pod_resources
    assert [(p.namespace, p.name) for p in pods] == [("default", "sriov-pod"), ("default", "plain")]
    assert pods[0].containers[0].devices[0].device_ids == ["0000:03:02.3", "0000:03:02.0"]

    kubelet.set_pod("default", "sriov-pod", containers=["only"])  # replaces
    assert kubelet.remove_pod("default", "plain") is True
    assert kubelet.remove_pod("default", "plain") is False
    pods = list_pods(client, stubs).pod_resources
    assert [(p.name, [c.name for c in p.containers]) for p in pods] == [("sriov-pod", ["only"])]
    assert kubelet.pods() == [{"namespace": "default", "name": "sriov-pod",
                               "containers": [{"name": "only", "devices": [], "cpu_ids": []}]}]


def test_list_wire_bytes_match_the_reference(kubelet):
    """The List answer for the reference's two pods is byte for byte the one in device-plugins.md §2.4."""
    kubelet.set_pod("default", "sriov-pod", containers=SRIOV_POD)
    kubelet.set_pod("default", "plain", containers=["c"])
    s = lambda t: t.encode().hex()  # noqa: E731
    expected = (
        "0a69" "0a09" + s("sriov-pod") + "1207" + s("default")
        + "1a48" "0a03" + s("app") + "1241" "0a1f" + s(SRIOV) + "120c" + s("0000:03:02.3") + "120c" + s("0000:03:02.0")
        + "1a020a00"
        + "1a09" "0a07" + s("sidecar")
        + "0a15" "0a05" + s("plain") + "1207" + s("default") + "1a03" "0a01" + s("c"))
    ch = channel_for(kubelet.socket_path)
    try:
        raw = ch.unary_unary("/v1.PodResourcesLister/List")(b"", timeout=5)  # no (de)serializers: bytes
    finally:
        ch.close()
    assert len(raw) == 130
    assert raw.hex() == expected


def test_get_unimplemented_and_disabled(kubelet, client, stubs):
    kubelet.set_pod("default", "sriov-pod", containers=SRIOV_POD)
    kubelet.set_get_mode("unimplemented")
    e = rpc_error(lambda: get(client, stubs, "sriov-pod"))
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED
    assert e.details() == fk.MSG_GET_UNIMPLEMENTED
    # the fallback a client makes works
    assert [p.name for p in list_pods(client, stubs).pod_resources] == ["sriov-pod"]
    assert [(r["method"], r["code"]) for r in kubelet.requests()] == [("Get", "UNIMPLEMENTED"), ("List", "OK")]

    kubelet.set_get_mode("disabled")
    e = rpc_error(lambda: get(client, stubs, "sriov-pod"))
    assert (e.code(), e.details()) == (grpc.StatusCode.UNKNOWN, "PodResources API Get method disabled")
    kubelet.set_get_mode("ok")
    assert get(client, stubs, "sriov-pod").pod_resources.name == "sriov-pod"
    with pytest.raises(ValueError):
        kubelet.set_get_mode("sometimes")


def test_delay_exceeds_client_deadline(kubelet, client, stubs):
    kubelet.set_pod("default", "sriov-pod", containers=SRIOV_POD)
    kubelet.inject_delay("Get", 3.0, count=1)
    t0 = time.monotonic()
    e = rpc_error(lambda: get(client, stubs, "sriov-pod", timeout=0.3))
    assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 2.0
    assert kubelet.wait_for_calls(1, "Get")
    assert kubelet.requests("Get")[0]["code"] == "CANCELLED"  # the server saw the client give up
    # count=1: the next call is answered at once; a delay shorter than the deadline is just slow
    assert get(client, stubs, "sriov-pod", timeout=2).pod_resources.name == "sriov-pod"
    kubelet.inject_delay("List", 0.3)
    t0 = time.monotonic()
    list_pods(client, stubs, timeout=5)
    assert time.monotonic() - t0 >= 0.3


def test_injected_error_status(kubelet, client, stubs):
    kubelet.set_pod("default", "sriov-pod", containers=SRIOV_POD)
    kubelet.inject_error("List", "UNAVAILABLE", "kubelet restarting", count=2)
    for _ in range(2):
        e = rpc_error(lambda: list_pods(client, stubs))
        assert (e.code(), e.details()) == (grpc.StatusCode.UNAVAILABLE, "kubelet restarting")
    assert len(list_pods(client, stubs).pod_resources) == 1
    # Get was never affected
    assert get(client, stubs, "sriov-pod").pod_resources.name == "sriov-pod"

    # "*" shares one count across methods: the kubelet's rate limiter
    kubelet.rate_limit(count=2)
    e1 = rpc_error(lambda: get(client, stubs, "sriov-pod"))
    e2 = rpc_error(lambda: list_pods(client, stubs))
    assert {e1.code(), e2.code()} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert e1.details() == "rejected by rate limit"
    assert get(client, stubs, "sriov-pod").pod_resources.name == "sriov-pod"

    # count=None: every call until cleared; codes by number work too
    rule = kubelet.inject_error("Get", 13, "boom")
    for _ in range(3):
        assert rpc_error(lambda: get(client, stubs, "sriov-pod")).code() == grpc.StatusCode.INTERNAL
    assert kubelet.faults()["rules"][-1]["code"] == "INTERNAL"
    kubelet.clear_faults(rule)
    assert get(client, stubs, "sriov-pod").pod_resources.name == "sriov-pod"
    with pytest.raises(ValueError):
        kubelet.inject_error("Get", "OK")
    with pytest.raises(ValueError):
        kubelet.inject_error("Watch", "INTERNAL")


def test_pod_not_found_then_found(kubelet, client, stubs):
    e = rpc_error(lambda: get(client, stubs, "ghost", "ns1"))
    assert (e.code(), e.details()) == (grpc.StatusCode.UNKNOWN, "pod ghost in namespace ns1 not found")

    kubelet.set_pod("default", "sriov-pod", containers=SRIOV_POD)
    kubelet.set_pod("default", "plain", containers=["c"])
    kubelet.pod_not_found("default", "sriov-pod", 3)
    e = rpc_error(lambda: get(client, stubs, "sriov-pod"))
    assert (e.code(), e.details()) == (grpc.StatusCode.UNKNOWN, "pod sriov-pod in namespace default not found")
    assert [p.name for p in list_pods(client, stubs).pod_resources] == ["plain"]  # List omits it
    assert get(client, stubs, "plain").pod_resources.name == "plain"  # other pods' Gets do not count
    assert rpc_error(lambda: get(client, stubs, "sriov-pod")).code() == grpc.StatusCode.UNKNOWN
    # three Get/List calls used up: found from now on
    assert get(client, stubs, "sriov-pod").pod_resources.containers[0].devices[0].device_ids[1] == "0000:03:02.0"
    assert [p.name for p in list_pods(client, stubs).pod_resources] == ["sriov-pod", "plain"]


def test_request_log(kubelet, client, stubs):
    kubelet.set_pod("default", "sriov-pod", containers=SRIOV_POD)
    kubelet.set_get_mode("unimplemented")
    t0 = time.time()
    rpc_error(lambda: get(client, stubs, "sriov-pod"))
    list_pods(client, stubs)
    client.GetAllocatableResources(stubs[0].AllocatableResourcesRequest(), timeout=5)
    t1 = time.time()
    log = kubelet.requests()
    assert [(r["seq"], r["method"], r["pod_name"], r["pod_namespace"], r["code"]) for r in log] == [
        (1, "Get", "sriov-pod", "default", "UNIMPLEMENTED"),
        (2, "List", None, None, "OK"),
        (3, "GetAllocatableResources", None, None, "OK"),
    ]
    assert log[0]["message"] == fk.MSG_GET_UNIMPLEMENTED
    times = [r["time"] for r in log]
    assert t0 <= times[0] <= times[1] <= times[2] <= t1
    assert all(r["duration"] >= 0 for r in log)
    assert kubelet.calls() == 3 and kubelet.calls("Get") == 1 and len(kubelet.requests("List")) == 1
    kubelet.clear_requests()
    assert kubelet.requests() == []


def test_allocatable_raw_and_shuffle(kubelet, client, stubs):
    kubelet.set_pod("default", "sriov-pod", containers=SRIOV_POD)
    req = stubs[0].AllocatableResourcesRequest()
    derived = client.GetAllocatableResources(req, timeout=5)
    assert [(d.resource_name, list(d.device_ids)) for d in derived.devices] == [
        (SRIOV, ["0000:03:02.3", "0000:03:02.0"])]
    kubelet.set_allocatable(devices=[{"resource_name": SRIOV, "device_ids": ["0000:03:02.%d" % i], "numa": 0}
                                     for i in range(4)], cpu_ids=[2, 3])
    alloc = client.GetAllocatableResources(req, timeout=5)
    assert [d.device_ids[0] for d in alloc.devices] == ["0000:03:02.%d" % i for i in range(4)]
    assert list(alloc.cpu_ids) == [2, 3]

    # an invalid protobuf body: the generated client cannot decode it
    kubelet.inject_raw("List", b"\x0a\xff", count=1)
    assert rpc_error(lambda: list_pods(client, stubs)).code() == grpc.StatusCode.INTERNAL
    assert len(list_pods(client, stubs).pod_resources) == 1

    kubelet.set_pod("default", "many", containers=[{"name": "c", "devices": [
        {"resource_name": SRIOV, "device_ids": ["id%02d" % i for i in range(12)]}]}])
    kubelet.set_shuffle(True, seed=7)
    orders = set()
    for _ in range(6):
        ids = get(client, stubs, "many").pod_resources.containers[0].devices[0].device_ids
        assert sorted(ids) == ["id%02d" % i for i in range(12)]
        orders.add(tuple(ids))
    assert len(orders) > 1


def test_socket_lifecycle(sockdir, stubs):
    path = os.path.join(sockdir, "kubelet.sock")
    # a stale socket file (no listener) is replaced
    import socket as pysocket
    s = pysocket.socket(pysocket.AF_UNIX)
    s.bind(path)
    s.close()
    kl = fk.FakeKubelet(path)
    try:
        with kl:
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            kl.set_pod("default", "p", containers=["c"])
            ch = channel_for(path)
            try:
                assert stubs[1].PodResourcesListerStub(ch).Get(
                    stubs[0].GetPodResourcesRequest(pod_name="p", pod_namespace="default"), timeout=5
                ).pod_resources.name == "p"
            finally:
                ch.close()
        assert not os.path.exists(path)
        kl.stop()  # idempotent
    finally:
        kl.stop()
    # a regular file at the path is not deleted
    Path(path).write_text("not a socket")
    with pytest.raises(OSError):
        fk.FakeKubelet(path).start()
    assert Path(path).read_text() == "not a socket"


def test_stubs_are_cached_outside_the_repo(stubs):
    d = Path(fk.stub_cache_dir()).resolve()
    assert Path(tempfile.gettempdir()).resolve() in d.parents
    assert Path(REPO).resolve() not in d.parents
    assert (d / (fk.STUB_NAME + "_pb2.py")).is_file()
    assert stat.S_IMODE(d.parent.stat().st_mode) & 0o077 == 0
    assert not list(Path(REPO, "testenv", "kubelet").glob("*_pb2*.py"))


def test_process_mode_control_socket(sockdir, stubs):
    path = os.path.join(sockdir, "kubelet.sock")
    log = os.path.join(sockdir, "requests.jsonl")
    state = os.path.join(sockdir, "state.json")
    Path(state).write_text(json.dumps([
        {"op": "set_pod", "args": {"namespace": "default", "name": "sriov-pod", "containers": SRIOV_POD}},
        {"op": "set_get_mode", "args": {"mode": "unimplemented"}},
    ]))
    proc = fk.FakeKubeletProcess(path, log_path=log, state_path=state)
    try:
        proc.start()
        assert proc.control.call("ping")["pid"] == proc.pid
        ch = channel_for(path)
        try:
            client = stubs[1].PodResourcesListerStub(ch)
            assert rpc_error(lambda: get(client, stubs, "sriov-pod")).code() == grpc.StatusCode.UNIMPLEMENTED
            proc.set_get_mode(mode="ok")
            proc.set_pod(namespace="kube-system", name="dp", containers=["c"])
            proc.inject_error(method="Get", code=grpc.StatusCode.RESOURCE_EXHAUSTED, message="rejected by rate limit",
                              count=1)
            assert rpc_error(lambda: get(client, stubs, "dp", "kube-system")).code() == \
                grpc.StatusCode.RESOURCE_EXHAUSTED
            assert get(client, stubs, "dp", "kube-system").pod_resources.namespace == "kube-system"
            proc.pod_not_found(namespace="default", name="sriov-pod", count=1)
            assert [p.name for p in list_pods(client, stubs).pod_resources] == ["dp"]
            assert len(list_pods(client, stubs).pod_resources) == 2
        finally:
            ch.close()
        reqs = proc.requests()
        assert [(r["method"], r["pod_name"], r["code"]) for r in reqs] == [
            ("Get", "sriov-pod", "UNIMPLEMENTED"), ("Get", "dp", "RESOURCE_EXHAUSTED"), ("Get", "dp", "OK"),
            ("List", None, "OK"), ("List", None, "OK")]
        with pytest.raises(RuntimeError, match="unknown op"):
            proc.control.call("shutdown_everything")
        with pytest.raises(RuntimeError, match="ValueError"):
            proc.set_get_mode(mode="bogus")
    finally:
        proc.stop()
    assert not os.path.exists(path) and not os.path.exists(proc.control_path)
    lines = [json.loads(x) for x in Path(log).read_text().splitlines()]
    assert [(r["method"], r["code"]) for r in lines] == [(r["method"], r["code"]) for r in reqs]


def test_process_start_failure_reports_stderr(sockdir):
    path = os.path.join(sockdir, "kubelet.sock")
    Path(path).write_text("not a socket")
    proc = fk.FakeKubeletProcess(path)
    try:
        with pytest.raises(RuntimeError, match="is not a socket"):
            proc.start()
        assert proc.proc is None
    finally:
        proc.stop()


# -- checkpoint -------------------------------------------------------------------------------------------------------

UID_A = "6f1c2a9e-3d4b-4c5e-9f00-1a2b3c4d5e6f"
UID_B = "970a395d-bb3b-11e8-89df-408d5c537d23"

# Checkpoints written by real kubelets (their checksums are the kubelet's): multus' <= 1.19 list-shape fixture, a
# kind node (1.2x, "-1" key), and a two-pod node with NUMA nodes 0 and 1.
REAL_CHECKPOINTS = [
    '{"Data":{"PodDeviceEntries":[{"PodUID":"970a395d-bb3b-11e8-89df-408d5c537d23","ContainerName":"appcntr1",'
    '"ResourceName":"intel.com/sriov_net_A","DeviceIDs":["0000:03:02.3","0000:03:02.0"],'
    '"AllocResp":"CikKC3NyaW92X25ldF9BEhogMDAwMDowMzowMi4zIDAwMDA6MDM6MDIuMA=="}],"RegisteredDevices":'
    '{"intel.com/sriov_net_A":["0000:03:02.1","0000:03:02.2","0000:03:02.3","0000:03:02.0"],'
    '"intel.com/sriov_net_B":["0000:03:06.3","0000:03:06.0","0000:03:06.1","0000:03:06.2"]}},"Checksum":229855270}',
    '{"Data":{"PodDeviceEntries":[{"PodUID":"bf52b2cd-b611-4e79-86b1-280b283185c3","ContainerName":"check",'
    '"ResourceName":"nvidia.com/gpu","DeviceIDs":{"-1":["tegra"]},'
    '"AllocResp":"Ch8KFk5WSURJQV9WSVNJQkxFX0RFVklDRVMSBXRlZ3Jh"}],'
    '"RegisteredDevices":{"nvidia.com/gpu":["tegra"]}},"Checksum":3660592824}',
    '{"Data":{"PodDeviceEntries":[{"PodUID":"513cb897-0262-4868-826f-aa943ee45a38","ContainerName":"app",'
    '"ResourceName":"nvidia.com/gpu","DeviceIDs":{"0":["GPU-77a702db-e37f-3a74-d46d-c5713f66058c"]},"AllocResp":'
    '"CkIKFk5WSURJQV9WSVNJQkxFX0RFVklDRVMSKEdQVS03N2E3MDJkYi1lMzdmLTNhNzQtZDQ2ZC1jNTcxM2Y2NjA1OGMaJAoOL2Rldi9udmlka'
    'WFjdGwSDi9kZXYvbnZpZGlhY3RsGgJydxomCg8vZGV2L252aWRpYS11dm0SDy9kZXYvbnZpZGlhLXV2bRoCcncaMgoVL2Rldi9udmlkaWEtdXZ'
    'tLXRvb2xzEhUvZGV2L252aWRpYS11dm0tdG9vbHMaAnJ3Gi4KEy9kZXYvbnZpZGlhLW1vZGVzZXQSEy9kZXYvbnZpZGlhLW1vZGVzZXQaAnJ3'
    'GiAKDC9kZXYvbnZpZGlhMBIML2Rldi9udmlkaWEwGgJydw=="},{"PodUID":"94283d1b-ce5a-4797-bff8-0cf0c7143b2b",'
    '"ContainerName":"app","ResourceName":"nvidia.com/gpu","DeviceIDs":{"1":["GPU-c1e9f249-b37b-81c2-a8d9-ba5ca02948'
    '41","GPU-9b341c59-f96b-ba85-c137-78c3652fea65"]},"AllocResp":"CmsKFk5WSURJQV9WSVNJQkxFX0RFVklDRVMSUUdQVS1jMWU5'
    'ZjI0OS1iMzdiLTgxYzItYThkOS1iYTVjYTAyOTQ4NDEsR1BVLTliMzQxYzU5LWY5NmItYmE4NS1jMTM3LTc4YzM2NTJmZWE2NRokCg4vZGV2L2'
    '52aWRpYWN0bBIOL2Rldi9udmlkaWFjdGwaAnJ3GiYKDy9kZXYvbnZpZGlhLXV2bRIPL2Rldi9udmlkaWEtdXZtGgJydxoyChUvZGV2L252aWRp'
    'YS11dm0tdG9vbHMSFS9kZXYvbnZpZGlhLXV2bS10b29scxoCcncaLgoTL2Rldi9udmlkaWEtbW9kZXNldBITL2Rldi9udmlkaWEtbW9kZXNldB'
    'oCcncaIAoML2Rldi9udmlkaWExEgwvZGV2L252aWRpYTEaAnJ3GiAKDC9kZXYvbnZpZGlhMhIML2Rldi9udmlkaWEyGgJydw=="}],'
    '"RegisteredDevices":{"nvidia.com/gpu":["GPU-77a702db-e37f-3a74-d46d-c5713f66058c","GPU-9b341c59-f96b-ba85-c137-'
    '78c3652fea65","GPU-c1e9f249-b37b-81c2-a8d9-ba5ca0294841"]}},"Checksum":2442330366}',
]


@pytest.mark.parametrize("index", range(len(REAL_CHECKPOINTS)))
def test_checksum_matches_real_kubelets(index):
    doc = json.loads(REAL_CHECKPOINTS[index])
    assert ckp.checksum(doc["Data"]) == doc["Checksum"]
    doc["Data"]["PodDeviceEntries"][0]["ContainerName"] += "x"
    assert not ckp.verify_checksum(doc)


def _check_shape(doc, list_shape):
    assert set(doc) == {"Data", "Checksum"}
    assert isinstance(doc["Checksum"], int) and 0 <= doc["Checksum"] < 2 ** 32
    assert set(doc["Data"]) == {"PodDeviceEntries", "RegisteredDevices"}
    for e in doc["Data"]["PodDeviceEntries"]:
        assert set(e) == {"PodUID", "ContainerName", "ResourceName", "DeviceIDs", "AllocResp"}
        assert all(isinstance(e[k], str) for k in ("PodUID", "ContainerName", "ResourceName", "AllocResp"))
        base64.b64decode(e["AllocResp"], validate=True)
        if list_shape:
            assert isinstance(e["DeviceIDs"], list) and all(isinstance(i, str) for i in e["DeviceIDs"])
        else:
            assert isinstance(e["DeviceIDs"], dict)
            for k, v in e["DeviceIDs"].items():
                assert str(int(k)) == k and int(k) >= -1
                assert isinstance(v, list) and all(isinstance(i, str) for i in v)
    for k, v in doc["Data"]["RegisteredDevices"].items():
        assert isinstance(k, str) and isinstance(v, list)
    assert ckp.verify_checksum(doc)


def test_checkpoint_numa_shape(sockdir):
    pods = {
        UID_A: {"app": {SRIOV: ["0000:03:02.3", "0000:03:02.0"]},
                "init": {SRIOV: ["0000:03:02.3"]}},
        UID_B: {"app": {SRIOV: {0: ["0000:03:02.1"], 1: ["0000:81:02.0"]}, "example.com/x": {"-1": ["x1"]}}},
    }
    path = ckp.write_checkpoint(os.path.join(sockdir, "device-plugins"), pods)
    assert os.path.basename(path) == "kubelet_internal_checkpoint"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = Path(path).read_text()
    doc = json.loads(text)  # valid JSON, compact like the kubelet's
    assert " " not in text
    _check_shape(doc, list_shape=False)
    entries = doc["Data"]["PodDeviceEntries"]
    assert [(e["PodUID"], e["ContainerName"], e["ResourceName"]) for e in entries] == [
        (UID_A, "app", SRIOV), (UID_A, "init", SRIOV), (UID_B, "app", SRIOV), (UID_B, "app", "example.com/x")]
    assert entries[0]["DeviceIDs"] == {"-1": ["0000:03:02.3", "0000:03:02.0"]}
    assert entries[2]["DeviceIDs"] == {"0": ["0000:03:02.1"], "1": ["0000:81:02.0"]}
    assert doc["Data"]["RegisteredDevices"] == {
        SRIOV: ["0000:03:02.0", "0000:03:02.1", "0000:03:02.3", "0000:81:02.0"], "example.com/x": ["x1"]}
    # AllocResp is the SR-IOV device plugin's envs answer (the reference's §3.2 example bytes)
    assert ckp.alloc_resp({"PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE": "0000:03:02.0,0000:03:02.3"}) == (
        "CkYKKVBDSURFVklDRV9JTlRFTF9DT01fSU5URUxfU1JJT1ZfTkVUREVWSUNFEhkwMDAwOjAzOjAyLjAsMDAwMDowMzowMi4z")
    assert base64.b64decode(entries[0]["AllocResp"]).endswith(b"0000:03:02.3,0000:03:02.0")


def test_checkpoint_list_shape(sockdir):
    pods = {UID_B: {"appcntr1": {"intel.com/sriov_net_A": ["0000:03:02.3", "0000:03:02.0"]},
                    "two": {SRIOV: {1: ["b"], 0: ["a"]}}}}
    reg = {"intel.com/sriov_net_A": ["0000:03:02.1", "0000:03:02.2", "0000:03:02.3", "0000:03:02.0"]}
    path = ckp.write_checkpoint(sockdir, pods, shape="list", registered_devices=reg)
    doc = ckp.read_checkpoint(path)
    _check_shape(doc, list_shape=True)
    assert [e["DeviceIDs"] for e in doc["Data"]["PodDeviceEntries"]] == [["0000:03:02.3", "0000:03:02.0"], ["a", "b"]]
    assert doc["Data"]["RegisteredDevices"] == reg
    with pytest.raises(ValueError):
        ckp.checkpoint_doc(pods, shape="yaml")
    assert ckp.checkpoint_doc(pods, boot_id="b00t")["BootID"] == "b00t"
    assert ckp.checkpoint_doc(pods, with_alloc_resp=False)["Data"]["PodDeviceEntries"][0]["AllocResp"] is None
