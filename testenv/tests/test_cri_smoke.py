"""Smoke tests for the containerd 1.6 CRI test environment (testenv/lib/cri.py).

A private containerd runs with a plain reference-plugin conflist (bridge + host-local + portmap from Debian's
containernetworking-plugins) as its only CNI config; the tests drive pod sandboxes through the CRI and check
the pod network and that nothing is left behind.  Root only.  Every link/bridge/pod name starts with ``px``;
IP forwarding is never enabled and no traffic leaves the namespaces created here.
"""

import ipaddress
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

INSTALL_SH = os.path.join(REPO, "testenv", "cri", "install.sh")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runs containerd, creates netns)")


def _ensure_installed():
    from testenv.lib import cri
    why = cri.ensure_installed(extra_tools=(), extra_plugins=())
    if why:
        pytest.skip("CRI test environment not installable: " + why)


def _ip_forward():
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        return f.read().strip()


def _run(*cmd):
    return subprocess.run(list(cmd), capture_output=True, text=True)


@pytest.fixture(scope="module")
def ctrd():
    _ensure_installed()
    if "testenv.lib.cri" in sys.modules:
        cri = sys.modules["testenv.lib.cri"]
    else:
        from testenv.lib import cri
    workdir = tempfile.mkdtemp(prefix="pxcri-", dir="/tmp")
    forward_before = _ip_forward()
    c = cri.Containerd(workdir)
    c.add_cni_plugin("bridge")
    c.add_cni_plugin("host-local")
    c.add_cni_plugin("portmap")
    try:
        c.start()
        yield c
    finally:
        problems = c.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        assert _ip_forward() == forward_before, "ip_forward changed"
        assert not problems, "containerd teardown found leftovers: %r" % problems


class Net:
    """One private bridge network: bridge pxcrXXXX, subnet 10.231.N.0/24, host-local dataDir in the workdir."""

    def __init__(self, ctrd, tag):
        self.ctrd = ctrd
        self.suffix = "%04x" % random.getrandbits(16)
        self.name = "pxcri-%s-%s" % (tag, self.suffix)
        self.bridge = "pxcr%s%s" % (self.suffix, tag[:4])  # <= 15 chars
        self.subnet = ipaddress.ip_network("10.231.%d.0/24" % random.randint(100, 199))
        self.ipam_dir = os.path.join(ctrd.workdir, "ipam-" + self.suffix)

    def conflist(self, first_type="bridge"):
        return {
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {"type": first_type, "bridge": self.bridge, "isGateway": False, "ipMasq": False,
                 "hairpinMode": False,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": str(self.subnet)}]],
                          "dataDir": self.ipam_dir}},
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": False},
            ],
        }

    def reservations(self):
        d = os.path.join(self.ipam_dir, self.name)
        if not os.path.isdir(d):
            return []
        return [f for f in os.listdir(d) if _is_ip(f)]

    def bridge_ports(self):
        r = _run("ip", "-o", "link", "show", "master", self.bridge)
        return r.stdout.strip().splitlines() if r.returncode == 0 else []

    def cleanup(self):
        """Restore the working conflist (DEL must succeed for containerd to let a sandbox go), remove every
        sandbox, delete the bridge (the bridge plugin never does) and the IPAM dir."""
        errors = []
        try:
            self.ctrd.set_cni_config(self.conflist())
            errors = self.ctrd.client().teardown_all()
        finally:
            if _run("ip", "link", "show", self.bridge).returncode == 0:
                _run("ip", "link", "del", self.bridge)
            shutil.rmtree(self.ipam_dir, ignore_errors=True)
        assert not errors, "sandbox teardown failed: %r" % errors


def _is_ip(s):
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


@pytest.fixture
def net(ctrd, request):
    n = Net(ctrd, re.sub(r"[^a-z0-9]", "", request.node.name.lower())[5:9] or "t")
    ctrd.set_cni_config(n.conflist())
    try:
        yield n
    finally:
        n.cleanup()


def _uid():
    return "px-uid-%08x" % random.getrandbits(32)


def _assert_gone(ctrd, net, sid):
    """Nothing of sandbox ``sid`` is left: no sandbox, veth, reservation, netns, cache, shim, mount."""
    cl = ctrd.client()
    assert [s for s in cl.list_pod_sandbox() if s["id"] == sid] == []
    assert net.bridge_ports() == [], "veth peers left on %s" % net.bridge
    assert net.reservations() == [], "host-local reservations left: %r" % net.reservations()
    leftovers = [f for f in os.listdir("/var/lib/cni/results") if sid in f] \
        if os.path.isdir("/var/lib/cni/results") else []
    assert leftovers == [], "libcni cache left: %r" % leftovers
    assert ctrd.shim_pids() == [], "shim still running"
    with open("/proc/self/mountinfo") as f:
        assert sid not in f.read(), "mount left for the sandbox"
    assert [p for p in cl.netns_seen if os.path.exists(p)] == [], "netns left"
    for d in ctrd.cgroup_dirs():
        assert not os.path.exists(os.path.join(d, sid)), "cgroup left: %s/%s" % (d, sid)


def test_version_and_network_ready(ctrd, net):
    cl = ctrd.client()
    v = cl.version()
    assert v["runtime_name"] == "containerd"
    assert v["runtime_api_version"] == "v1"
    assert v["runtime_version"].startswith("1.6.")
    st = cl.status(verbose=True)
    assert st["conditions"]["RuntimeReady"]["status"] is True
    assert st["conditions"]["NetworkReady"]["status"] is True, st["conditions"]
    names = [n for n, _, _ in ctrd.loaded_cni_networks()]
    assert names == ["cni-loopback", net.name]


def test_bridge_pod_lifecycle(ctrd, net):
    cl = ctrd.client()
    uid = _uid()
    sid = cl.run_pod_sandbox("pxpod-life", "pxns", uid, annotations={"px.example/a": "1"},
                             labels={"app": "px"})
    assert re.fullmatch(r"[0-9a-f]{64}", sid)
    try:
        st = cl.pod_sandbox_status(sid)
        assert st["state"] == "SANDBOX_READY"
        assert (st["name"], st["namespace"], st["uid"]) == ("pxpod-life", "pxns", uid)
        assert st["annotations"] == {"px.example/a": "1"}
        assert ipaddress.ip_address(st["ip"]) in net.subnet
        assert st["netns"].startswith("/var/run/netns/cni-")
        assert st["cni_result"]["Interfaces"]["eth0"]["IPConfigs"][0]["IP"] == st["ip"]

        from testenv.lib.cri import netns_exec
        addrs = json.loads(netns_exec(st["netns"], "ip", "-j", "addr", "show", "dev", "eth0"))
        assert st["ip"] in [a["local"] for a in addrs[0]["addr_info"]]
        assert net.reservations() == [st["ip"]]
        assert len(net.bridge_ports()) == 1
        cgroups = [os.path.join(d, sid) for d in ctrd.cgroup_dirs()]
        assert cgroups and all(os.path.isdir(d) for d in cgroups), "pod cgroup not under our cgroup parent"
        assert [s["id"] for s in cl.list_pod_sandbox()] == [sid]
        assert [s["id"] for s in cl.list_pod_sandbox(label_selector={"app": "px"})] == [sid]
        assert cl.list_pod_sandbox(label_selector={"app": "nope"}) == []
        netns = st["netns"]

        cl.stop_pod_sandbox(sid)
        assert cl.pod_sandbox_status(sid)["state"] == "SANDBOX_NOTREADY"
        assert not os.path.exists(netns)
        cl.stop_pod_sandbox(sid)  # idempotent
        cl.remove_pod_sandbox(sid)
        cl.remove_pod_sandbox(sid)  # unknown id: OK
    finally:
        cl.teardown_all()
    _assert_gone(ctrd, net, sid)
    assert cl.list_pod_sandbox() == []


def test_port_mapping_reaches_portmap(ctrd, net):
    cl = ctrd.client()
    host_port = random.randint(30000, 32000)
    sid = cl.run_pod_sandbox("pxpod-pm", "pxns", _uid(),
                             port_mappings=[{"container_port": 80, "host_port": host_port,
                                             "protocol": "tcp", "host_ip": "127.0.0.1"}])
    try:
        nat = _run("iptables", "-w", "-t", "nat", "-S").stdout
        mine = [line for line in nat.splitlines() if sid in line]
        assert mine, "portmap created no rule for the sandbox"
        assert any("--dport %d" % host_port in line for line in nat.splitlines()), nat
        cl.teardown_pod(sid)
    finally:
        cl.teardown_all()
    nat = _run("iptables", "-w", "-t", "nat", "-S").stdout
    assert sid not in nat
    assert "--dport %d " % host_port not in nat
    _assert_gone(ctrd, net, sid)


def test_sandbox_survives_containerd_restart(ctrd, net):
    cl = ctrd.client()
    sid = cl.run_pod_sandbox("pxpod-rst", "pxns", _uid())
    try:
        before = cl.pod_sandbox_status(sid)
        old_pid = ctrd.pid
        ctrd.restart()
        assert ctrd.pid != old_pid
        after = cl.pod_sandbox_status(sid)
        assert after["state"] == "SANDBOX_READY"
        assert (after["ip"], after["netns"], after["pid"]) == (before["ip"], before["netns"], before["pid"])
        cl.teardown_pod(sid)
    finally:
        cl.teardown_all()
    _assert_gone(ctrd, net, sid)


def test_missing_plugin_type_fails_run(ctrd, net):
    from testenv.lib.cri import CRIError
    ctrd.set_cni_config(net.conflist(first_type="pxnope-missing"))
    cl = ctrd.client()
    with pytest.raises(CRIError) as ei:
        cl.run_pod_sandbox("pxpod-miss", "pxns", _uid())
    err = ei.value
    assert err.code_name == "UNKNOWN"
    assert 'failed to find plugin "pxnope-missing"' in err.details, err.details
    assert "failed to setup network for sandbox" in str(err)
    # containerd 1.6.20: the rollback DEL fails too (same missing plugin), so the sandbox is kept, NOTREADY,
    # with its netns, until a StopPodSandbox whose DEL succeeds (what the kubelet would retry).
    left = cl.list_pod_sandbox()
    assert [s["state"] for s in left] == ["SANDBOX_NOTREADY"]
    with pytest.raises(CRIError) as ei:
        cl.stop_pod_sandbox(left[0]["id"])
    assert 'plugin type="pxnope-missing" failed (delete)' in ei.value.details, ei.value.details
    ctrd.set_cni_config(net.conflist())
    cl.teardown_pod(left[0]["id"])
    assert cl.list_pod_sandbox() == []
    _assert_gone(ctrd, net, left[0]["id"])


FAILING_PLUGIN = r"""#!/bin/sh
# px test plugin: ADD fails with a CNI error object, everything else succeeds.
cat >/dev/null
case "$CNI_COMMAND" in
ADD)
  printf '{"cniVersion":"1.0.0","code":999,"msg":"pxfail: refusing %s","details":"pxdetails-42"}\n' "$CNI_IFNAME"
  exit 1 ;;
VERSION)
  printf '{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}\n' ;;
esac
exit 0
"""


def test_plugin_error_text_surfaces(ctrd, net):
    from testenv.lib.cri import CRIError
    path = os.path.join(ctrd.workdir, "pxfail-plugin")
    with open(path, "w") as f:
        f.write(FAILING_PLUGIN)
    os.chmod(path, 0o755)
    ctrd.add_cni_plugin(path, name="pxfail", copy=True)
    ctrd.set_cni_config(net.conflist(first_type="pxfail"))
    cl = ctrd.client()
    with pytest.raises(CRIError) as ei:
        cl.run_pod_sandbox("pxpod-fail", "pxns", _uid())
    assert "pxfail: refusing eth0" in ei.value.details
    assert "pxdetails-42" in ei.value.details
    assert cl.list_pod_sandbox() == []


def test_run_pod_sandbox_latency(ctrd, net, record_property):
    cl = ctrd.client()
    samples = []
    for i in range(10):
        t0 = time.monotonic()
        sid = cl.run_pod_sandbox("pxpod-lat%d" % i, "pxns", _uid())
        samples.append(time.monotonic() - t0)
        assert ipaddress.ip_address(cl.pod_sandbox_status(sid)["ip"]) in net.subnet
        cl.teardown_pod(sid)
        _assert_gone(ctrd, net, sid)
    med = statistics.median(samples)
    record_property("run_pod_sandbox_median_s", med)
    print("RunPodSandbox latency (bridge+host-local+portmap): median %.1f ms, min %.1f ms, max %.1f ms"
          % (med * 1e3, min(samples) * 1e3, max(samples) * 1e3))
    assert med < 10.0
