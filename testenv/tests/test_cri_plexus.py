"""Plexus end to end under containerd 1.6's CRI (root only; see testenv/cri/PLEXUS.md).

A private containerd has Plexus as its ONLY CNI config (cluster network: bridge + host-local + portmap from a
conflist file); a private test API server holds the pods (same name/namespace/uid as the sandbox configs) and
the NetworkAttachmentDefinitions. Tests drive sandboxes through the CRI and assert on kernel state, the API
server's objects and the runtime's answers. Host links are named ``pxq...``; subnets are 10.231.150-199.x/24;
ip_forward is never touched (asserted).

Figures (printed, written to testenv/.work/cri-figures.json, not asserted): RunPodSandbox latency with 1 network
and with 3 networks (2 NADs), split into Plexus' part (its log's ``command done cmd=ADD ... ms=``) and the rest.
"""

import ipaddress
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

INSTALL_SH = os.path.join(REPO, "testenv", "cri", "install.sh")
FIGURES = os.path.join(REPO, "testenv", ".work", "cri-figures.json")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (runs containerd, creates netns)")

NS = "pxns"
MV, BR2, BR3 = "pxq-mv", "pxq-br2", "pxq-br3"
TWO_NADS = "%s,%s@pxextra" % (MV, BR2)      # -> net1 (macvlan), pxextra (bridge): 3 networks with eth0


def _ensure_installed():
    from testenv.lib import cri
    why = cri.ensure_installed(extra_tools=("swift",), extra_plugins=("macvlan",))
    if why:
        pytest.skip("CRI test environment not installable: " + why)


@pytest.fixture(scope="module", params=["thin", "daemon"])
def px(request):
    """The whole suite runs twice: the plugin alone, then with plexus-daemon serving the ADDs."""
    _ensure_installed()
    from testenv.lib import cri_plexus as cp
    stale = cp.sweep_stale_links()
    if stale:
        sys.stderr.write("\nremoved stale pxq links of an earlier run: %s\n" % stale)
    forward_before = cp.ip_forward()
    workdir = tempfile.mkdtemp(prefix="pxq-", dir="/tmp")
    env = cp.PlexusCRI(workdir, namespace=NS, daemon=request.param == "daemon")
    problems = []
    try:
        env.start()
        env.mv = env.macvlan_nad(MV, "m")
        env.br2 = env.bridge_nad(BR2, "n")
        # A NAD whose conflist has portmap declaring portMappings: the runtime's port mappings must NOT reach it.
        env.br3 = cp.BridgeNet(env, BR3, "p", portmap=True)
        env.nets.append(env.br3)
        env.kube.apply_nad(NS, BR3, env.br3.conflist())
        yield env
    finally:
        served = env.daemon.sample("plexus_daemon_requests_total", command="ADD", result="ok") if env.daemon else None
        problems = env.stop()
        if env.use_daemon:
            assert served and served > 0, "the daemon served no ADD"
        links = cp.host_links()
        shutil.rmtree(workdir, ignore_errors=True)
        assert cp.ip_forward() == forward_before, "ip_forward changed"
        assert links == [], "pxq links left: %r" % links
        assert not problems, "teardown found leftovers: %r" % problems


@pytest.fixture
def cleanup(px):
    """After each test: every sandbox stopped+removed over CRI, API pods deleted, Plexus restored."""
    yield px
    px.unwrap_plexus()
    errors = px.client().teardown_all()
    for ns, name in list(px.api_pods):
        px.delete_api_pod(name)
    assert not errors, "sandbox teardown failed: %r" % errors


def _links_in(netns):
    """{ifname: {"kind", "mac", "ipv4": [addr], "master_ifindex"}} inside a pod netns (kernel view)."""
    from testenv.lib import cri_plexus as cp
    out = {}
    for l in cp.ip_json("-d", "addr", "show", ns=netns):
        out[l["ifname"]] = {"kind": (l.get("linkinfo") or {}).get("info_kind", ""),
                            "mac": l.get("address", ""), "state": l.get("operstate", ""),
                            "ipv4": [a["local"] for a in l.get("addr_info", []) if a.get("family") == "inet"]}
    return out


def _in(net, ip):
    return ipaddress.ip_address(ip) in net.subnet


def _assert_three_networks(px, name, sid):
    """Scenario 1's checks for one running pod with TWO_NADS; returns (status, kernel links, network-status)."""
    st = px.client().pod_sandbox_status(sid)
    assert st["state"] == "SANDBOX_READY"
    assert (st["name"], st["namespace"]) == (name, NS)
    assert st["ip"] and _in(px.cluster, st["ip"]), "PodSandboxStatus IP %r not on the cluster network %s" % (
        st["ip"], px.cluster.subnet)
    assert st["netns"].startswith("/var/run/netns/cni-")

    links = _links_in(st["netns"])
    assert sorted(links) == ["eth0", "lo", "net1", "pxextra"], links
    assert links["eth0"]["ipv4"] == [st["ip"]]
    assert links["eth0"]["kind"] == "veth"
    assert links["net1"]["kind"] == "macvlan"
    assert len(links["net1"]["ipv4"]) == 1 and _in(px.mv, links["net1"]["ipv4"][0]), links["net1"]
    assert links["pxextra"]["kind"] == "veth"
    assert len(links["pxextra"]["ipv4"]) == 1 and _in(px.br2, links["pxextra"]["ipv4"][0]), links["pxextra"]
    for i in ("eth0", "net1", "pxextra"):
        assert links[i]["state"] in ("UP", "UNKNOWN"), (i, links[i])

    # host-local on the node agrees with the kernel
    assert px.cluster.reservations_of(sid) == [st["ip"]]
    assert px.mv.reservations_of(sid) == links["net1"]["ipv4"]
    assert px.br2.reservations_of(sid) == links["pxextra"]["ipv4"]

    # the API server's view: network-status lists all three, matching the kernel
    status = px.network_status(name)
    assert status is not None, "no network-status on pod %s: %r" % (name, px.kube.pod_annotations(NS, name))
    by_if = {e.get("interface"): e for e in status}
    assert len(status) == 3 and sorted(by_if) == ["eth0", "net1", "pxextra"], status
    assert by_if["eth0"]["name"] == px.CLUSTER_NAME and by_if["eth0"].get("default") is True
    assert by_if["net1"]["name"] == "%s/%s" % (NS, MV) and not by_if["net1"].get("default")
    assert by_if["pxextra"]["name"] == "%s/%s" % (NS, BR2) and not by_if["pxextra"].get("default")
    for i in ("eth0", "net1", "pxextra"):
        assert by_if[i]["ips"] == links[i]["ipv4"], (i, by_if[i], links[i])
        assert by_if[i]["mac"].lower() == links[i]["mac"].lower(), (i, by_if[i], links[i])
    return st, links, status


# ----------------------------------------------------------------------------------------------------------------
# 1. two NADs
# ----------------------------------------------------------------------------------------------------------------

def test_pod_with_two_nads(px, cleanup):
    sid, uid, _ = px.run_pod("pxq-two", TWO_NADS)
    st, links, status = _assert_three_networks(px, "pxq-two", sid)
    # containerd's own view (what it got back from Plexus: the cluster network's result)
    eth0 = st["cni_result"]["Interfaces"]["eth0"]
    assert eth0["IPConfigs"][0]["IP"] == st["ip"]
    # Plexus logged one successful ADD for this sandbox, for this pod
    adds = px.log_records(sid, "ADD")
    assert [r["msg"] for r in adds if r["msg"].startswith("command")] == ["command done"], adds
    assert adds[-1].get("pod", "").startswith("%s/pxq-two" % NS), adds[-1]
    # the pod's macvlan lives in the pod netns only; the cluster bridge and br2 each got one port
    assert px.mv.macvlans_on_master() == []
    assert len(px.cluster.ports()) == 1 and len(px.br2.ports()) == 1
    px.client().teardown_pod(sid)
    assert px.leftovers(sid, st["netns"]) == {}


# ----------------------------------------------------------------------------------------------------------------
# 2. Stop (DEL #1, netns set) then Remove (DEL #2, no netns)
# ----------------------------------------------------------------------------------------------------------------

def test_stop_then_remove_two_dels(px, cleanup):
    calls = px.wrap_plexus()
    cl = px.client()
    sid, uid, _ = px.run_pod("pxq-del", TWO_NADS)
    st, links, _ = _assert_three_networks(px, "pxq-del", sid)
    netns = st["netns"]
    assert len(px.plexus_cache_files(sid)) >= 1, "Plexus cached nothing for the sandbox"

    cl.stop_pod_sandbox(sid)
    assert cl.pod_sandbox_status(sid)["state"] == "SANDBOX_NOTREADY"
    dels = [c for c in calls(sid) if c["cmd"] == "DEL"]
    assert [(c["netns"], c["rc"]) for c in dels] == [(netns, 0)], calls(sid)
    # after DEL #1 the networking is gone already
    assert not os.path.exists(netns), "netns still there after StopPodSandbox"
    assert px.plexus_cache_files(sid) == []
    for n in (px.cluster, px.mv, px.br2):
        assert n.reservations_of(sid) == [], n.name
    assert px.cluster.ports() == [] and px.br2.ports() == []

    cl.remove_pod_sandbox(sid)
    dels = [c for c in calls(sid) if c["cmd"] == "DEL"]
    assert [(c["netns"], c["rc"]) for c in dels] == [(netns, 0), ("", 0)], calls(sid)
    assert [k for k, _ in px.command_results(sid, "DEL")] == ["done", "done"], px.log_records(sid, "DEL")
    assert [c["cmd"] for c in calls(sid)] == ["ADD", "DEL", "DEL"]
    assert px.leftovers(sid, netns) == {}
    assert px.node_leftovers() == {}


# ----------------------------------------------------------------------------------------------------------------
# 3. missing NAD
# ----------------------------------------------------------------------------------------------------------------

def test_missing_nad_fails_cleanly(px, cleanup):
    from testenv.lib.cri import CRIError
    from testenv.lib.cri_plexus import sandbox_id_from_error
    calls = px.wrap_plexus()
    cl = px.client()
    with pytest.raises(CRIError) as ei:
        px.run_pod("pxq-miss", "%s,pxq-nosuchnad" % MV)
    err = ei.value
    assert err.code_name == "UNKNOWN", err
    assert 'plugin type="plexus" failed (add)' in err.details, err.details
    assert "pxq-nosuchnad" in err.details, err.details
    assert "NetworkAttachmentDefinition %s/pxq-nosuchnad not found" % NS in err.details, err.details
    sid = sandbox_id_from_error(err.details)
    assert sid, err.details

    rec = calls(sid)
    assert rec and rec[0]["cmd"] == "ADD" and rec[0]["rc"] != 0, rec
    netns = rec[0]["netns"]
    assert netns.startswith("/var/run/netns/cni-"), rec
    assert [r for r in rec if r["cmd"] == "DEL" and r["rc"] != 0] == [], "Plexus DEL failed: %r" % rec
    assert [r for r in rec if r["cmd"] == "DEL"], "containerd did not roll back with a DEL: %r" % rec
    # A runtime (kubelet) would stop/remove what is left of the sandbox; containerd keeps it only when the
    # rollback DEL failed, so with Plexus the sandbox should be gone already.
    left = [s for s in cl.list_pod_sandbox() if s["id"] == sid]
    if left:
        cl.stop_pod_sandbox(sid)
        cl.remove_pod_sandbox(sid)
    rec = calls(sid)
    assert [r for r in rec if r["cmd"] == "DEL" and r["rc"] != 0] == [], "Plexus DEL failed: %r" % rec
    assert [k for k, _ in px.command_results(sid, "DEL")] == ["done"] * len([r for r in rec if r["cmd"] == "DEL"])
    assert left == [], "containerd kept the failed sandbox although DEL succeeded: %r" % left
    # nothing attached, nothing reported
    _assert_no_network_status(px, "pxq-miss")
    assert px.leftovers(sid, netns) == {}
    assert px.node_leftovers() == {}


def _assert_no_network_status(px, name):
    from testenv.lib.cri_plexus import STATUS_ANNOTATION
    ann = px.kube.pod_annotations(NS, name) or {}
    assert STATUS_ANNOTATION not in ann, ann


# ----------------------------------------------------------------------------------------------------------------
# 4. host port mapping on the cluster network
# ----------------------------------------------------------------------------------------------------------------

def _dnat_rules(nat, host_port):
    return [l for l in nat.splitlines() if "--dport %d " % host_port in l + " " and "DNAT" in l]


def test_host_port_mapping_cluster_network_only(px, cleanup):
    import random
    from testenv.lib.cri_plexus import iptables_nat
    cl = px.client()
    host_port = random.randint(30000, 32000)
    while _dnat_rules(iptables_nat(), host_port):
        host_port = random.randint(30000, 32000)
    # the pod also joins BR3, whose conflist has portmap declaring portMappings: it must not receive the runtime's
    # port mappings (they belong to the cluster network only)
    sid, _, _ = px.run_pod("pxq-pm", "%s@pxpm" % BR3, port_mappings=[
        {"container_port": 80, "host_port": host_port, "protocol": "tcp", "host_ip": "127.0.0.1"}])
    st = cl.pod_sandbox_status(sid)
    assert _in(px.cluster, st["ip"])
    links = _links_in(st["netns"])
    assert sorted(links) == ["eth0", "lo", "pxpm"], links
    nat = iptables_nat()
    rules = _dnat_rules(nat, host_port)
    to_dest = [l for l in rules if "--to-destination" in l]
    assert len(to_dest) == 1, "expected one DNAT for host port %d, got:\n%s" % (host_port, "\n".join(rules))
    assert "--to-destination %s:80" % st["ip"] in to_dest[0], to_dest[0]
    assert "-d 127.0.0.1/32" in to_dest[0], to_dest[0]
    assert any(sid in l and px.CLUSTER_NAME in l for l in nat.splitlines()), \
        "no portmap rule names the sandbox and the cluster network"
    assert not any(sid in l and BR3 in l for l in nat.splitlines()), "portmap of the NAD got the port mappings"

    cl.teardown_pod(sid)
    nat = iptables_nat()
    assert sid not in nat
    assert _dnat_rules(nat, host_port) == []
    assert px.leftovers(sid, st["netns"]) == {}


# ----------------------------------------------------------------------------------------------------------------
# 5. ten pods concurrently
# ----------------------------------------------------------------------------------------------------------------

def test_ten_pods_concurrently(px, cleanup):
    n = 10
    barrier = threading.Barrier(n, timeout=240)
    results = [None] * n
    errors = []

    def worker(i):
        name = "pxq-conc%d" % i
        cl = px.client(timeout=180)
        r = {"name": name}
        results[i] = r
        try:
            r["sid"], r["uid"], r["secs"] = px.run_pod(name, TWO_NADS, client=cl)
            st = cl.pod_sandbox_status(r["sid"])
            r["ip"], r["netns"] = st["ip"], st["netns"]
            r["links"] = _links_in(st["netns"])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((name, "run", repr(e)))
        try:
            barrier.wait()     # all ten exist at the same time
        except threading.BrokenBarrierError:
            pass
        try:
            if r.get("sid"):
                cl.stop_pod_sandbox(r["sid"])
                cl.remove_pod_sandbox(r["sid"])
        except Exception as e:  # noqa: BLE001
            errors.append((name, "teardown", repr(e)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    wall = time.monotonic() - t0
    assert errors == [], errors
    ips = [r["ip"] for r in results]
    assert len(set(ips)) == n and all(_in(px.cluster, ip) for ip in ips), ips
    for r in results:
        assert sorted(r["links"]) == ["eth0", "lo", "net1", "pxextra"], r
        st = px.network_status(r["name"])
        assert st and [e.get("interface") for e in st] == ["eth0", "net1", "pxextra"], (r["name"], st)
        assert st[0]["ips"] == [r["ip"]]
        assert [k for k, _ in px.command_results(r["sid"], "ADD")] == ["done"], px.log_records(r["sid"], "ADD")
        assert [k for k, _ in px.command_results(r["sid"], "DEL")] == ["done", "done"], \
            px.log_records(r["sid"], "DEL")
        assert px.leftovers(r["sid"], r["netns"]) == {}, r["name"]
    assert px.node_leftovers() == {}
    secs = sorted(r["secs"] for r in results)
    print("\n10 concurrent pods (3 networks each): wall %.2f s start+stop+remove; RunPodSandbox median %.0f ms, "
          "max %.0f ms" % (wall, statistics.median(secs) * 1e3, secs[-1] * 1e3))


# ----------------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------------

def _measure(px, prefix, networks, count):
    cl = px.client()
    samples, requests = [], []
    for i in range(count + 1):          # the first run is a warm-up, not counted
        name = "%s%d" % (prefix, i)
        seen = px.kube.requests(include_helper=True)
        since = seen[-1]["seq"] if seen else 0
        sid, _, secs = px.run_pod(name, networks)
        plexus_ms = px.add_ms(sid)
        api_requests = len(px.kube.requests(since=since))   # Plexus' only (helper requests are left out)
        st = cl.pod_sandbox_status(sid)
        assert _in(px.cluster, st["ip"])
        cl.teardown_pod(sid)
        px.delete_api_pod(name)
        assert plexus_ms is not None, "no 'command done cmd=ADD' for %s in Plexus' log" % sid
        if i:
            samples.append((secs * 1e3, plexus_ms))
            requests.append(api_requests)
    assert px.node_leftovers() == {}
    total = [t for t, _ in samples]
    ours = [p for _, p in samples]
    rest = [t - p for t, p in samples]
    return {"n": len(samples), "networks": 1 + (len(networks.split(",")) if networks else 0),
            "run_pod_sandbox_ms": {"median": round(statistics.median(total), 1), "min": round(min(total), 1),
                                   "max": round(max(total), 1)},
            "plexus_add_ms": {"median": round(statistics.median(ours), 1), "min": round(min(ours), 1),
                              "max": round(max(ours), 1)},
            "runtime_ms": {"median": round(statistics.median(rest), 1), "min": round(min(rest), 1),
                           "max": round(max(rest), 1)},
            "api_requests_per_add": sorted(set(requests)),
            "plexus_share_of_median": round(statistics.median(ours) / statistics.median(total), 3),
            "samples_ms": [[round(t, 1), round(p, 1)] for t, p in samples]}


def test_latency_figures(px, cleanup):
    one = _measure(px, "pxq-lat1-", None, 10)
    three = _measure(px, "pxq-lat3-", TWO_NADS, 10)
    figures = {
        "what": "RunPodSandbox through containerd 1.6 CRI with Plexus as the only CNI config; plexus_add_ms from "
                "Plexus' log 'command done cmd=ADD ... ms=' (in-process time, excludes exec of the plexus binary); "
                "runtime_ms = RunPodSandbox - plexus_add_ms (containerd, runc, pause, loopback, plexus exec)",
        "plexus_build": px.build_dir,
        "cluster_network": "bridge + host-local + portmap",
        "nads": "macvlan (on a veth master) + bridge/host-local",
        "one_network": one,
        "three_networks": three,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = FIGURES.replace(".json", "-daemon.json") if px.use_daemon else FIGURES
    figures["daemon"] = px.use_daemon
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(figures, f, indent=2)
    for label, d in (("1 network (no annotation)", one), ("3 networks (2 NADs)", three)):
        print("\nRunPodSandbox, %s: median %.1f ms (min %.1f, max %.1f) of %d; Plexus ADD median %.1f ms "
              "(%.0f%%); runtime/rest median %.1f ms; API requests per ADD %s"
              % (label, d["run_pod_sandbox_ms"]["median"], d["run_pod_sandbox_ms"]["min"],
                 d["run_pod_sandbox_ms"]["max"], d["n"], d["plexus_add_ms"]["median"],
                 100 * d["plexus_share_of_median"], d["runtime_ms"]["median"], d["api_requests_per_add"]))
    print("figures written to %s" % path)
