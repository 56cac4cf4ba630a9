"""Figures (printed and written to testenv/.work/k8s-figures.json, never asserted): median wall time of a Plexus ADD
of a pod with 2 NADs against the test API server, versus a runtime running the same delegate configurations
itself (each network's plugins posix-spawned in order), interleaved; and API requests per ADD."""

import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from testenv.lib.daemon import NODE, Daemon  # noqa: E402
from testenv.lib.plexus import build_bin_dir  # noqa: E402
from testenv.lib.k8s_scenarios import (FIGURES_PATH, NETWORKS_ANN, k8s_bins, kenv, kube,  # noqa: E402,F401
                                       median, run_network_direct, write_figures)

NS = "pxk-perf"
ROUNDS = 15


def _cached_daemon(kenv, request, pods, nads):
    """A node daemon whose watch caches hold `pods` pods and `nads` NADs, and a configuration that forwards to it."""
    daemon = Daemon(kenv)
    request.addfinalizer(daemon.kill)
    daemon.start()
    daemon.wait_cached("pods", pods)
    daemon.wait_cached("network-attachment-definitions", nads)
    return daemon, kenv.config(daemonSocket=daemon.socket)


def test_add_time_plexus_vs_direct_delegates(kenv, request):
    kube = kenv.kube
    kenv.install_crd()
    mv_cfg, _ = kenv.macvlan_nad("pxk-mv")
    st_cfg, _ = kenv.static_bridge_nad("pxk-st")
    kenv.apply_nad_kubectl(NS, "pxk-mv", mv_cfg)
    kenv.apply_nad_kubectl(NS, "pxk-st", st_cfg)
    static_ip = "10.231.%s.9/24" % kenv.subnet().split(".")[2]
    pod = kenv.pod(NS, "perf", {NETWORKS_ANN: json.dumps(
        [{"name": "pxk-mv"}, {"name": "pxk-st", "interface": "net2", "ips": [static_ip]}])}, node_name=NODE)
    cluster = kenv.cluster()["list"]
    cfg = kenv.config()
    # the same pod through the node daemon (its watch caches hold the pod and both NADs)
    daemon, daemon_cfg = _cached_daemon(kenv, request, pods=1, nads=2)
    # the direct baseline runs the networks one after the other: so does this variant
    daemon_serial_cfg = kenv.config(daemonSocket=daemon.socket, parallelAttach=False)
    direct_ns = kenv.netns()
    direct_path = "/var/run/netns/" + direct_ns
    # what the runtime would run itself: the same three networks, same ifnames, same per-network runtimeConfig
    direct_networks = [(cluster, "eth0", {}), (mv_cfg, "net1", {}), (st_cfg, "net2", {"ips": [static_ip]})]
    # decomposition: Plexus with the same three networks as inline delegates and no API (static address inline)
    local_ns = kenv.netns()
    st_inline = dict(st_cfg, ipam={"type": "static", "addresses": [{"address": static_ip}]})
    st_inline.pop("capabilities")
    local_cfg = kenv.config(delegates=[cluster, mv_cfg, st_inline])
    local_cfg.pop("kubeconfig")

    def plexus_round(i, config=cfg, tag="pp"):
        pod.cid = kenv.cid("%s%d" % (tag, i))
        pod.cni_args = pod.cni_args.split(";K8S_POD_INFRA_CONTAINER_ID=")[0] + \
            ";K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=%s" % (pod.cid, pod.uid)
        since = kube.requests()[-1]["seq"] if kube.requests() else 0
        t0 = time.perf_counter()
        out = pod.add(config)
        dt = time.perf_counter() - t0
        assert out.ok, out
        # the daemon's own lists and watches are not requests of this ADD
        n = len([r for r in kube.requests(since=since) if "watch=" not in (r.get("query") or "")])
        assert pod.links() == ["eth0", "net1", "net2"]
        d = pod.delete(config)
        assert d.ok, d
        return dt, n

    def direct_round(i):
        cid = kenv.cid("pd%d" % i)
        t0 = time.perf_counter()
        for netconf, ifname, rc in direct_networks:
            o = run_network_direct("ADD", netconf, cid, direct_path, ifname, runtime_config=rc)
            assert o.ok, o
        dt = time.perf_counter() - t0
        for netconf, ifname, rc in reversed(direct_networks):
            o = run_network_direct("DEL", netconf, cid, direct_path, ifname, runtime_config=rc)
            assert o.ok, o
        return dt

    def local_round(i):
        cid = kenv.cid("pl%d" % i)
        t0 = time.perf_counter()
        out = kenv.px.run("ADD", local_cfg, cid, "/var/run/netns/" + local_ns)
        dt = time.perf_counter() - t0
        assert out.ok, out
        d = kenv.px.run("DEL", local_cfg, cid, "/var/run/netns/" + local_ns)
        assert d.ok, d
        return dt

    # warm-up (page cache, first dlopen of libcurl), not counted
    plexus_round(-1)
    plexus_round(-1, daemon_cfg, "pdm")
    plexus_round(-2, daemon_serial_cfg, "pds")
    direct_round(-1)
    local_round(-1)
    px_times, direct_times, local_times, req_counts = [], [], [], []
    daemon_times, daemon_req_counts, daemon_serial_times = [], [], []
    for i in range(ROUNDS):
        order = ["px", "direct", "local", "daemon", "daemon-serial"]
        order = order[i % 5:] + order[:i % 5]          # rotate who goes first
        for who in order:
            if who == "px":
                dt, n = plexus_round(i)
                px_times.append(dt)
                req_counts.append(n)
            elif who == "daemon-serial":
                daemon_serial_times.append(plexus_round(i, daemon_serial_cfg, "pds")[0])
            elif who == "daemon":
                dt, n = plexus_round(i, daemon_cfg, "pdm")
                daemon_times.append(dt)
                daemon_req_counts.append(n)
            elif who == "direct":
                direct_times.append(direct_round(i))
            else:
                local_times.append(local_round(i))

    assert kenv.leftovers(pods=[pod]) == []
    px_med, direct_med, local_med = median(px_times), median(direct_times), median(local_times)
    figures = {
        "rounds": ROUNDS,
        "nads": 2,
        "plexus_add_median_ms": round(px_med * 1000, 2),
        "direct_delegates_add_median_ms": round(direct_med * 1000, 2),
        "ratio_plexus_over_direct": round(px_med / direct_med, 3),
        "overhead_median_ms": round((px_med - direct_med) * 1000, 2),
        "plexus_no_api_add_median_ms": round(local_med * 1000, 2),
        "ratio_plexus_no_api_over_direct": round(local_med / direct_med, 3),
        "bin_dir": build_bin_dir(),
        "plexus_add_ms_all": [round(t * 1000, 2) for t in px_times],
        "direct_add_ms_all": [round(t * 1000, 2) for t in direct_times],
        "api_requests_per_add": sorted(set(req_counts)),
        "api_requests_per_add_median": median(req_counts),
        "daemon_add_median_ms": round(median(daemon_times) * 1000, 2),
        "ratio_daemon_over_direct": round(median(daemon_times) / direct_med, 3),
        "daemon_overhead_median_ms": round((median(daemon_times) - direct_med) * 1000, 2),
        "daemon_add_ms_all": [round(t * 1000, 2) for t in daemon_times],
        "daemon_serial_attach_add_median_ms": round(median(daemon_serial_times) * 1000, 2),
        "ratio_daemon_serial_attach_over_direct": round(median(daemon_serial_times) / direct_med, 3),
        "api_requests_per_add_daemon": sorted(set(daemon_req_counts)),
    }
    assert daemon.sample("plexus_daemon_requests_total", command="ADD", result="ok") == 2 * ROUNDS + 2
    write_figures("add_2_nads_vs_direct", figures)
    assert os.path.exists(FIGURES_PATH)


def _timed_add_del(kenv, pod, cfg, tag, pattern):
    """One ADD (timed) and DEL of `pod` under a fresh container ID; returns (seconds, the float groups `pattern`
    found in the ADD's log, or None)."""
    pod.cid = kenv.cid(tag)
    pod.cni_args = pod.cni_args.split(";K8S_POD_INFRA_CONTAINER_ID=")[0] + \
        ";K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=%s" % (pod.cid, pod.uid)
    t0 = time.perf_counter()
    out = pod.add(cfg)
    dt = time.perf_counter() - t0
    assert out.ok, out
    m = pattern.search(out.stderr)
    assert pod.delete(cfg).ok
    return dt, (tuple(float(g) for g in m.groups()) if m else None)


def test_default_route_step_cost(kenv):
    """Figures for default-route (netlink): the same pod (cluster network + one bridge NAD) added with and without
    a `default-route` request, interleaved; plus the step's own time as Plexus logs it (setting the route, re-reading
    routes, rewriting the cached results) and the kernel read for network-status, which both kinds of ADD pay."""
    import re
    kenv.install_crd()
    cfg_nad, _, sub = kenv.hostlocal_bridge_nad("pxk-gw")
    gw = sub.replace(".0/24", ".1")
    cfg_nad["ipam"]["gateway"] = gw
    kenv.apply_nad_kubectl(NS, "pxk-gw", cfg_nad)
    cluster = kenv.cluster()
    cluster_list = json.loads(json.dumps(cluster["list"]))
    cluster_list["plugins"][0]["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}]
    cfg = kenv.config(delegates=[cluster_list])
    plain = kenv.pod(NS, "plain", {NETWORKS_ANN: "pxk-gw"})
    moved = kenv.pod(NS, "moved", {NETWORKS_ANN: json.dumps([{"name": "pxk-gw", "default-route": [gw]}])})
    step = re.compile(r"default routes set.*?routes_ms=([0-9.]+).*? ms=([0-9.]+)")

    def round_(pod, i):
        return _timed_add_del(kenv, pod, cfg, "dr%d" % i, step)

    round_(plain, -1)
    round_(moved, -2)
    plain_t, moved_t, steps = [], [], []
    for i in range(ROUNDS):
        for who in ((plain, moved) if i % 2 == 0 else (moved, plain)):
            dt, s = round_(who, i)
            (moved_t if who is moved else plain_t).append(dt)
            if who is moved and s is not None:
                steps.append(s)
    assert kenv.leftovers(pods=[plain, moved]) == []
    assert len(steps) == ROUNDS, "the verbose log must report the step on every ADD with default-route"
    write_figures("default_route_step", {
        "rounds": ROUNDS,
        "add_without_default_route_median_ms": round(median(plain_t) * 1000, 2),
        "add_with_default_route_median_ms": round(median(moved_t) * 1000, 2),
        "difference_median_ms": round((median(moved_t) - median(plain_t)) * 1000, 2),
        "step_routes_netlink_median_ms": median([s[0] for s in steps]),
        "step_in_process_median_ms": median([s[1] for s in steps]),
        "bin_dir": build_bin_dir(),
    })


def test_device_backed_network_cost(kenv):
    """Figures for device plugins: the same pod (cluster network + one NAD with the test delegate) added with the NAD
    carrying a resourceName (one kubelet PodResources Get over gRPC, a device-info copy) and without, interleaved;
    plus the kubelet call's own time as Plexus logs it."""
    import re
    import shutil
    import tempfile
    from testenv.kubelet.fake_kubelet import FakeKubelet
    d = tempfile.mkdtemp(prefix="pxkl-")
    sock = os.path.join(d, "kubelet.sock")
    kl = FakeKubelet(sock).start()
    try:
        kenv.install_crd()
        res = "intel.com/bench"
        for name, ann in (("pxk-dev", {"k8s.v1.cni.cncf.io/resourceName": res}), ("pxk-nodev", None)):
            kenv.kube.apply_nad(NS, name, {"cniVersion": "1.0.0", "name": name, "type": "plexus-test-delegate",
                                           "capabilities": {"deviceID": True, "CNIDeviceInfoFile": True}},
                                annotations=ann)
        os.makedirs(os.path.join(d, "devinfo", "dp"))
        with open(os.path.join(d, "devinfo", "dp", "intel.com-bench-0000:03:02.0-device.json"), "w") as f:
            json.dump({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:02.0"}}, f)
        cfg = kenv.config(podResourcesSocket=sock, deviceInfoDir=os.path.join(d, "devinfo"))
        with_dev = kenv.pod(NS, "withdev", {NETWORKS_ANN: "pxk-dev"})
        without = kenv.pod(NS, "nodev", {NETWORKS_ANN: "pxk-nodev"})
        kl.set_pod(NS, with_dev.name, containers=[{"name": "app", "devices": [
            {"resource_name": res, "device_ids": ["0000:03:02.0"], "numa": 0}]}])
        step = re.compile(r"kubelet PodResources answered.*? ms=([0-9.]+)")

        def round_(pod, i):
            dt, groups = _timed_add_del(kenv, pod, cfg, "dv%d" % i, step)
            return dt, (groups[0] if groups else None)

        round_(with_dev, -1)
        round_(without, -2)
        dev_t, plain_t, calls = [], [], []
        for i in range(ROUNDS):
            for who in ((with_dev, without) if i % 2 == 0 else (without, with_dev)):
                dt, s = round_(who, i)
                (dev_t if who is with_dev else plain_t).append(dt)
                if s is not None:
                    calls.append(s)
        assert len(calls) == ROUNDS, "the verbose log must report the kubelet call on every device-backed ADD"
        assert kenv.leftovers(pods=[with_dev, without]) == []
        write_figures("device_backed_network", {
            "rounds": ROUNDS,
            "add_without_resource_median_ms": round(median(plain_t) * 1000, 2),
            "add_with_resource_median_ms": round(median(dev_t) * 1000, 2),
            "difference_median_ms": round((median(dev_t) - median(plain_t)) * 1000, 2),
            "kubelet_call_in_process_median_ms": median(calls),
            "kubelet_requests": len(kl.requests()),
            "bin_dir": build_bin_dir(),
        })
    finally:
        kl.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_dra_backed_network_cost(kenv, request):
    """Figures for DRA: the same pod (cluster network + one NAD with the test delegate) with the NAD carrying a
    resourceName served by the pod's ResourceClaim (one claim GET, one ResourceSlice LIST) and without, interleaved,
    on the thin path and through the node daemon (which watch-caches pods and NADs but reads claims and slices
    through its kept-alive connection); plus Plexus' own time for the claim reads and the API requests of one ADD
    from the server log."""
    import re
    from testenv.lib.dra_scenarios import API, NS as DRA_NS, DRAEnv
    dra = DRAEnv(kenv)
    dra.vf_slice()
    dra.claim("bench-nics", count=1)
    dra.allocate("bench-nics", ["vf-0"])
    for name, res in (("pxk-dra", "intel.com/sriov_dra"), ("pxk-nodra", None)):
        kenv.kube.apply_nad(DRA_NS, name, {"cniVersion": "1.0.0", "name": name, "type": "plexus-test-delegate",
                                           "capabilities": {"deviceID": True}},
                            annotations={"k8s.v1.cni.cncf.io/resourceName": res} if res else None)
    # ResourceClaims are namespaced: both pods live in the claim's namespace.
    with_dra = dra.pod("withdra", "pxk-dra", [("nic", "bench-nics")])
    without = kenv.pod(DRA_NS, "nodra", {NETWORKS_ANN: "pxk-nodra"}, node_name=NODE)
    cfg = kenv.config()
    step = re.compile(r"ResourceClaims read.*? ms=([0-9.]+)")

    def round_(pod, i):
        dt, groups = _timed_add_del(kenv, pod, cfg, "dr%d" % i, step)
        return dt, (groups[0] if groups else None)

    round_(with_dra, -1)
    round_(without, -2)
    seq = dra.last_seq()
    round_(with_dra, -3)
    one_add = [r for r in kenv.kube.requests(since=seq)]
    dra_t, plain_t, reads = [], [], []
    for i in range(ROUNDS):
        for who in ((with_dra, without) if i % 2 == 0 else (without, with_dra)):
            dt, s = round_(who, i)
            (dra_t if who is with_dra else plain_t).append(dt)
            if s is not None:
                reads.append(s)
    assert len(reads) == ROUNDS, "the verbose log must report the claim reads on every DRA-backed ADD"

    # The same two pods through the node daemon (its log, not the ADD's stderr, has the step lines).
    daemon, daemon_cfg = _cached_daemon(kenv, request, pods=2, nads=2)
    round_daemon = lambda pod, i: _timed_add_del(kenv, pod, daemon_cfg, "dd%d" % i, step)[0]  # noqa: E731
    round_daemon(with_dra, -1)
    round_daemon(without, -2)
    seq = dra.last_seq()
    round_daemon(with_dra, -3)
    # the daemon's own lists and watches are not requests of this ADD
    one_add_daemon = [r for r in kenv.kube.requests(since=seq) if "watch=" not in (r.get("query") or "")]
    dra_d, plain_d = [], []
    for i in range(ROUNDS):
        for who in ((with_dra, without) if i % 2 == 0 else (without, with_dra)):
            (dra_d if who is with_dra else plain_d).append(round_daemon(who, i))
    assert daemon.sample("plexus_daemon_requests_total", command="ADD", result="ok") == 2 * ROUNDS + 3
    assert kenv.leftovers(pods=[with_dra, without]) == []
    write_figures("dra_backed_network", {
        "rounds": ROUNDS,
        "add_without_device_median_ms": round(median(plain_t) * 1000, 2),
        "add_with_dra_device_median_ms": round(median(dra_t) * 1000, 2),
        "difference_median_ms": round((median(dra_t) - median(plain_t)) * 1000, 2),
        "claim_reads_in_process_median_ms": median(reads),
        # one ADD + DEL: GET pod, GET NAD, GET claim, LIST slices, PATCH pods/status (DEL makes none)
        "api_requests_one_add": [(r["method"], r["path"].replace(API, "<dra>")) for r in one_add],
        "daemon_add_without_device_median_ms": round(median(plain_d) * 1000, 2),
        "daemon_add_with_dra_device_median_ms": round(median(dra_d) * 1000, 2),
        "daemon_difference_median_ms": round((median(dra_d) - median(plain_d)) * 1000, 2),
        "daemon_api_requests_one_add": [(r["method"], r["path"].replace(API, "<dra>")) for r in one_add_daemon],
        "bin_dir": build_bin_dir(),
    })


def test_daemon_rss_with_10k_pods_and_1k_nads(kenv, request):
    """Figure: the daemon's resident memory with 10,000 pods of its node and 1,000 NADs in its watch caches."""
    kenv.install_crd()
    daemon = Daemon(kenv)
    request.addfinalizer(daemon.kill)
    daemon.start()
    empty_kib = daemon.rss_kib()
    nad_cfg = json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "macvlan", "master": "eth0",
                          "ipam": {"type": "host-local", "subnet": "10.231.250.0/24"}})
    objects = [{"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                "metadata": {"name": "nad-%04d" % i, "namespace": "pxk-rss%d" % (i % 10)}, "spec": {"config": nad_cfg}}
               for i in range(1000)]
    objects += [{"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "pod-%05d" % i, "namespace": "pxk-rss%d" % (i % 10),
                              "labels": {"app": "rss", "pod-template-hash": "5d8f7c9b4"},
                              "annotations": {NETWORKS_ANN: "nad-%04d, nad-%04d" % (i % 1000, (i + 1) % 1000)}},
                 "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                                                            "resources": {"requests": {"cpu": "10m"}}}]}}
                for i in range(10000)]
    t0 = time.time()
    kenv.kube.bulk_create(objects)
    daemon.wait_cached("network-attachment-definitions", 1000, timeout=120)
    daemon.wait_cached("pods", 10000, timeout=120)
    synced_s = time.time() - t0
    watched_kib = daemon.rss_kib()
    # and once more after a full relist (compaction: 410, list again in pages)
    kenv.kube.compact()
    deadline = time.time() + 60
    while time.time() < deadline and daemon.sample("plexus_watch_restarts_total", resource="pods", reason="expired") < 1:
        time.sleep(0.1)
    time.sleep(2)
    daemon.wait_cached("pods", 10000, timeout=120)
    relisted_kib = daemon.rss_kib()
    write_figures("daemon_rss", {
        "pods": 10000, "nads": 1000,
        "rss_empty_mib": round(empty_kib / 1024, 1),
        "rss_cached_mib": round(watched_kib / 1024, 1),
        "rss_after_relist_mib": round(relisted_kib / 1024, 1),
        "seconds_to_cache_after_bulk_create": round(synced_s, 2),
    })
