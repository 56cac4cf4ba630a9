"""The node daemon (plexus-daemon) against the test API server: ADDs forwarded by the thin plugin are served from
watch caches of the NADs and of the node's pods (list + watch, bookmarks, 410 relist), with exactly one API
request per ADD (the network-status PATCH); NADs created, changed and deleted while it runs; the API down while it
runs; the daemon absent, killed mid-ADD or draining; 20 concurrent pods; metrics parsed by prometheus_client."""

import json
import os
import signal
import sys
import threading
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from testenv.lib import netns as nl  # noqa: E402
from testenv.lib import plexus as px  # noqa: E402
from testenv.lib.daemon import NODE, Daemon  # noqa: E402
from testenv.lib.k8s_scenarios import NETWORKS_ANN, STATUS_ANN, k8s_bins, kenv, kube  # noqa: E402,F401

NS = "pxk-dmn"


@pytest.fixture
def daemon(kenv, request):
    kenv.install_crd()
    d = Daemon(kenv)

    def fin():
        d.kill()
    request.addfinalizer(fin)
    return d


def _nads(kenv, names=("pxk-mv", "pxk-br")):
    out = {}
    for n in names:
        if "mv" in n:
            cfg, _ = kenv.macvlan_nad(n)
            out[n] = (cfg, None)
        else:
            cfg, br, _ = kenv.hostlocal_bridge_nad(n)
            out[n] = (cfg, br)
        kenv.apply_nad_kubectl(NS, n, cfg)
    return out


def _api_requests(kube, since=0):
    """Requests Plexus sent for CNI calls: everything but the daemon's own lists and watches."""
    return [r for r in kube.requests(since=since)
            if "watch=" not in (r.get("query") or "") and not r["path"].endswith(("/pods", "/network-attachment-definitions"))]


def _last_seq(kube):
    items = kube.requests(include_helper=True)
    return items[-1]["seq"] if items else 0


def _wait(cond, what, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(what)


def _clean(kenv, pod, nets):
    bridges = [b for _, b in nets.values() if b] + [kenv.cluster()["bridge"]]
    return kenv.leftovers(pods=[pod], bridges=bridges)


def test_add_through_daemon_uses_the_caches_and_one_request(kenv, daemon):
    nets = _nads(kenv)
    daemon.start()
    pod = kenv.pod(NS, "web", {NETWORKS_ANN: "pxk-mv, pxk-br"}, node_name=NODE)
    daemon.wait_cached("pods", 1)
    daemon.wait_cached("network-attachment-definitions", 2)
    cfg = kenv.config(daemonSocket=daemon.socket)
    since = _last_seq(kenv.kube)
    out = pod.add(cfg)
    assert out.ok, (out, daemon.read_log())
    reqs = _api_requests(kenv.kube, since)
    assert [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in reqs] == [("PATCH", "status")], reqs
    assert all(r["user_agent"].startswith("plexus-daemon") for r in reqs), reqs
    assert pod.links() == ["eth0", "net1", "net2"]
    assert [e["interface"] for e in pod.status()] == ["eth0", "net1", "net2"]
    # The result is the daemon's, relayed byte for byte: the cache entry the DEL replays is in the env's cniDir.
    result = json.loads(out.stdout)
    assert [i["name"] for i in result["interfaces"] if "sandbox" in i][:1] == ["eth0"]
    assert daemon.sample("plexus_daemon_requests_total", command="ADD", result="ok") == 1
    assert daemon.sample("plexus_cache_lookups_total", resource="pods", result="hit") == 1
    assert daemon.sample("plexus_cache_lookups_total", resource="network-attachment-definitions", result="hit") == 2
    # DEL never goes to the daemon: stop it first.
    daemon.stop()
    out = pod.delete(cfg)
    assert out.ok, out
    assert _clean(kenv, pod, nets) == []


def test_cache_misses_read_through_and_stale_uid_is_never_served(kenv, daemon):
    nets = _nads(kenv, ("pxk-mv",))
    daemon.start()
    # A pod the watch cannot have seen yet (no nodeName: outside the field selector) is read through.
    pod = kenv.pod(NS, "fresh", {NETWORKS_ANN: "pxk-mv"})
    cfg = kenv.config(daemonSocket=daemon.socket)
    since = _last_seq(kenv.kube)
    out = pod.add(cfg)
    assert out.ok, (out, daemon.read_log())
    assert [r["method"] for r in _api_requests(kenv.kube, since)] == ["GET", "PATCH"]
    assert daemon.sample("plexus_cache_lookups_total", resource="pods", result="miss") == 1
    assert pod.delete(cfg).ok
    assert _clean(kenv, pod, nets) == []

    # A cached pod whose uid differs from K8S_POD_UID (deleted and recreated under the same name) is read again.
    old = kenv.pod(NS, "again", {NETWORKS_ANN: "pxk-mv"}, node_name=NODE)
    daemon.wait_cached("pods", 1)
    fresh_cid_args = old.cni_args.replace(old.uid, "pxk-uid-other")
    since = _last_seq(kenv.kube)
    out = old.add(cfg, cni_args=fresh_cid_args)
    assert not out.ok and out.err_code == 3, out          # the API's pod has the cached uid: as the thin path says
    assert "UID" in out.msg and old.namespace + "/" + old.name in out.msg
    assert [r["method"] for r in _api_requests(kenv.kube, since)] == ["GET"]
    assert old.links() == []


def test_nad_created_changed_deleted_while_running(kenv, daemon):
    daemon.start()
    cfg = kenv.config(daemonSocket=daemon.socket)
    # Created after the daemon started: the watch brings it.
    mv1, _ = kenv.macvlan_nad("pxk-mv")
    kenv.apply_nad_kubectl(NS, "pxk-mv", mv1)
    daemon.wait_cached("network-attachment-definitions", 1)
    pod = kenv.pod(NS, "chg", {NETWORKS_ANN: "pxk-mv"}, node_name=NODE)
    daemon.wait_cached("pods", 1)
    since = _last_seq(kenv.kube)
    assert pod.add(cfg).ok
    assert [r["method"] for r in _api_requests(kenv.kube, since)] == ["PATCH"]
    first = nl.addresses(pod.netns)["net1"]
    assert pod.delete(cfg).ok
    # Changed: a new subnet; the next ADD uses it without any read of the NAD.
    mv2, sub2 = kenv.macvlan_nad("pxk-mv")
    kenv.apply_nad_kubectl(NS, "pxk-mv", mv2)
    _wait(lambda: daemon.sample("plexus_watch_events_total", resource="network-attachment-definitions",
                                type="MODIFIED") >= 1, "the watch never delivered the change")
    since = _last_seq(kenv.kube)
    out = pod.add(cfg)
    assert out.ok, out
    second = nl.addresses(pod.netns)["net1"]
    assert second[0].rsplit(".", 1)[0] == sub2.rsplit(".", 1)[0] and second != first, (first, second)
    assert [r["method"] for r in _api_requests(kenv.kube, since)] == ["PATCH"]
    assert pod.delete(cfg).ok
    # Deleted: the cache forgets it, the read-through gets 404, the ADD fails as on the thin path and attaches nothing.
    kenv.kube.delete_nad(NS, "pxk-mv")
    daemon.wait_cached("network-attachment-definitions", 0)
    out = pod.add(cfg)
    assert not out.ok and out.err_code == 7 and "pxk-mv" in out.msg, out
    assert pod.links() == []
    assert kenv.leftovers(pods=[pod]) == []


def test_api_down_while_running(kenv, daemon):
    nets = _nads(kenv)
    daemon.start()
    cfg = kenv.config(daemonSocket=daemon.socket, apiDeadlineSeconds=3)
    pod = kenv.pod(NS, "down", {NETWORKS_ANN: "pxk-mv, pxk-br"}, node_name=NODE)
    daemon.wait_cached("pods", 1)
    # Every read of the API fails now: the cached ADD does not need one; the status PATCH still goes through.
    kenv.kube.inject(method="GET", path="/(pods|network-attachment-definitions)/", action="status", code=503, count=1000)
    out = pod.add(cfg)
    assert out.ok, (out, daemon.read_log())
    assert pod.links() == ["eth0", "net1", "net2"]
    assert pod.delete(cfg).ok
    kenv.kube.clear_faults()
    # The whole API is down: the status write fails within apiDeadlineSeconds as on the thin path (code 11), and the
    # ADD is rolled back; the daemon stays healthy and keeps its caches.
    kenv.kube.stop()
    t0 = time.monotonic()
    out = pod.add(cfg)
    assert not out.ok and out.err_code == 11, out
    assert "network-status" in out.msg and NS + "/down" in out.msg, out
    assert time.monotonic() - t0 < 30
    assert _clean(kenv, pod, nets) == []
    assert daemon.get("/healthz")[0] == 200
    assert daemon.sample("plexus_cache_objects", resource="pods") == 1
    # The API comes back: the watches resume (restarts counted with reason "error") and ADDs work again.
    kenv.kube.start()
    _wait(lambda: daemon.sample("plexus_watch_restarts_total", resource="pods", reason="error") >= 1, "no watch restart")
    out = pod.add(cfg)
    assert out.ok, (out, daemon.read_log())
    assert pod.delete(cfg).ok
    assert _clean(kenv, pod, nets) == []


def test_daemon_absent_falls_back_and_logs_once(kenv, daemon):
    nets = _nads(kenv, ("pxk-mv",))
    log = os.path.join(kenv.tmp, "plexus.log")
    cfg = kenv.config(daemonSocket=daemon.socket, logFile=log, logLevel="error")
    pods = [kenv.pod(NS, "fb%d" % i, {NETWORKS_ANN: "pxk-mv"}, node_name=NODE) for i in range(2)]
    since = _last_seq(kenv.kube)
    for p in pods:
        out = p.add(cfg)
        assert out.ok, out
    reqs = _api_requests(kenv.kube, since)
    assert len(reqs) == 2 * 3 and all(r["user_agent"].startswith("plexus/") or r["user_agent"] == "plexus"
                                      for r in reqs), reqs
    with open(log) as f:
        lines = [l for l in f if "node daemon unavailable" in l]
    assert len(lines) == 1, lines
    assert os.path.exists(os.path.join(kenv.cni_dir, "daemon-unavailable"))
    # The daemon starts: the next ADD goes there and the marker goes away.
    daemon.start()
    daemon.wait_cached("pods", 2)
    for p in pods:
        assert p.delete(cfg).ok
    out = pods[0].add(cfg)
    assert out.ok, out
    assert daemon.sample("plexus_daemon_requests_total", command="ADD", result="ok") == 1
    assert not os.path.exists(os.path.join(kenv.cni_dir, "daemon-unavailable"))
    assert pods[0].delete(cfg).ok
    for p in pods:
        assert _clean(kenv, p, nets) == []


def _paused_nad(kenv, name, pause):
    """A bridge network whose chain ends in the test delegate paused on ADD (until <pause>.release exists)."""
    cfg, br, sub = kenv.hostlocal_bridge_nad(name)
    plugin = {k: v for k, v in cfg.items() if k not in ("cniVersion", "name")}
    conf = {"cniVersion": "1.0.0", "name": name, "plugins": [plugin, px.fake(pauseFile=pause)]}
    kenv.apply_nad_kubectl(NS, name, conf)
    return br


def _finish(proc, timeout=30):
    """stdout and stderr of a plugin started with popen (its stdin is closed already)."""
    proc.wait(timeout)
    return proc.stdout.read().decode(), proc.stderr.read().decode()


def _paused_add(kenv, d, name, others=()):
    """A pod on the paused network plus pods without extra networks; starts the daemon `d`, starts the first pod's
    ADD through it and returns once the delegate is paused: (proc, pod, other pods, bridge, config, pause path)."""
    pause = os.path.join(kenv.tmp, "pause")
    br = _paused_nad(kenv, "pxk-slow", pause)
    d.start()
    cfg = kenv.config(daemonSocket=d.socket)
    pod = kenv.pod(NS, name, {NETWORKS_ANN: "pxk-slow"}, node_name=NODE)
    rest = [kenv.pod(NS, o, {}, node_name=NODE) for o in others]
    d.wait_cached("pods", 1 + len(rest))
    proc = kenv.px.popen("ADD", cfg, pod.cid, pod.netns_path, cni_args=pod.cni_args)
    _wait_file(pause + ".started")
    return proc, pod, rest, br, cfg, pause


def _wait_file(path, timeout=30):
    _wait(lambda: os.path.exists(path), "%s never appeared" % path, timeout)


def test_daemon_killed_mid_add_then_thin_del_cleans_up(kenv, daemon):
    proc, pod, _, br, cfg, pause = _paused_add(kenv, daemon, "killed")
    delegate = int(open(pause + ".started").read())
    daemon.kill()
    os.kill(delegate, signal.SIGKILL)
    out, err = _finish(proc)
    assert proc.returncode == 1, (out, err)
    e = json.loads(out)
    assert e["code"] == 11 and "node daemon stopped" in e["msg"] and NS + "/killed" in e["msg"], e
    # The runtime's DEL (the plugin alone: the daemon is gone) removes what was attached, from the cache.
    assert pod.links(), "the ADD had attached eth0 and net1 before the kill"
    out = pod.delete(cfg)
    assert out.ok, out
    assert kenv.leftovers(pods=[pod], bridges=[br, kenv.cluster()["bridge"]]) == []


def test_sigterm_drains_in_flight_calls(kenv, daemon):
    proc, pod, (other,), br, cfg, pause = _paused_add(kenv, daemon, "drain", ["late"])
    daemon.proc.send_signal(signal.SIGTERM)
    # Draining: the socket is gone at once, so a new ADD runs in the plugin.
    _wait(lambda: not os.path.exists(daemon.socket), "socket still there while draining")
    assert daemon.proc.poll() is None
    late = other.add(cfg)
    assert late.ok, late
    open(pause + ".release", "w").close()
    out, err = _finish(proc)
    assert proc.returncode == 0, (out, err, daemon.read_log())
    assert daemon.proc.wait(timeout=20) == 0
    assert "stopped" in daemon.read_log()
    assert pod.links() == ["eth0", "net1"]
    for p in (pod, other):
        assert p.delete(cfg).ok
    assert kenv.leftovers(pods=list((pod, other)), bridges=[br, kenv.cluster()["bridge"]]) == []


def test_busy_daemon_answers_busy_and_the_plugin_runs_the_call(kenv, request):
    kenv.install_crd()
    d = Daemon(kenv, extra_args=["--max-concurrent", "1", "--max-queued", "0"])
    request.addfinalizer(d.kill)
    proc, slow, (quick,), br, cfg, pause = _paused_add(kenv, d, "slow", ["quick"])
    out = quick.add(cfg)
    assert out.ok, out
    assert d.sample("plexus_daemon_rejected_total", reason="busy") == 1
    open(pause + ".release", "w").close()
    assert proc.wait(timeout=30) == 0
    for p in (slow, quick):
        assert p.delete(cfg).ok
    assert kenv.leftovers(pods=list((slow, quick)), bridges=[br, kenv.cluster()["bridge"]]) == []


def test_twenty_concurrent_pods(kenv, daemon):
    nets = _nads(kenv)
    daemon.start()
    cfg = kenv.config(daemonSocket=daemon.socket)
    pods = [kenv.pod(NS, "c%02d" % i, {NETWORKS_ANN: "pxk-mv, pxk-br"}, node_name=NODE) for i in range(20)]
    daemon.wait_cached("pods", 20)
    since = _last_seq(kenv.kube)
    results = [None] * len(pods)

    def run(i):
        results[i] = pods[i].add(cfg)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(pods))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None and r.ok for r in results), [r for r in results if not (r and r.ok)]
    reqs = _api_requests(kenv.kube, since)
    assert sorted(r["method"] for r in reqs) == ["PATCH"] * 20, reqs
    ips = [tuple(p.addresses()[i][0] for i in ("eth0", "net1", "net2")) for p in pods]
    assert len({ip for t in ips for ip in t}) == 60, ips
    assert daemon.sample("plexus_daemon_requests_total", command="ADD", result="ok") == 20
    assert daemon.sample("plexus_daemon_request_duration_seconds", name="plexus_daemon_request_duration_seconds_count",
                         command="ADD") == 20
    for p in pods:
        assert p.delete(cfg).ok
    for p in pods:
        assert _clean(kenv, p, nets) == []


def test_watch_restarts_bookmarks_and_relist_after_410(kenv, daemon):
    nets = _nads(kenv, ("pxk-mv",))
    daemon.start()
    _wait(lambda: daemon.sample("plexus_watch_events_total", resource="pods", type="BOOKMARK") >= 1, "no bookmarks")
    # Compaction: every watch gets 410 Gone and the daemon lists again.
    kenv.kube.compact()
    _wait(lambda: daemon.sample("plexus_watch_restarts_total", resource="network-attachment-definitions",
                                reason="expired") >= 1, "no relist after 410")
    # A NAD deleted between compaction and relist is gone from the cache; one created is there.
    kenv.kube.delete_nad(NS, "pxk-mv")
    kenv.kube.compact()
    mv, _ = kenv.macvlan_nad("pxk-mv2")
    kenv.apply_nad_kubectl(NS, "pxk-mv2", mv)
    _wait(lambda: daemon.sample("plexus_cache_objects", resource="network-attachment-definitions") == 1, "cache wrong")
    # Connections cut: the watches come back by themselves.
    before = daemon.sample("plexus_watch_restarts_total", resource="pods", reason="error") + \
        daemon.sample("plexus_watch_restarts_total", resource="pods", reason="closed")
    assert kenv.kube.drop_watches() >= 2
    _wait(lambda: daemon.sample("plexus_watch_restarts_total", resource="pods", reason="error")
          + daemon.sample("plexus_watch_restarts_total", resource="pods", reason="closed") > before, "no rewatch")
    pod = kenv.pod(NS, "after", {NETWORKS_ANN: "pxk-mv2"}, node_name=NODE)
    daemon.wait_cached("pods", 1)
    cfg = kenv.config(daemonSocket=daemon.socket)
    since = _last_seq(kenv.kube)
    assert pod.add(cfg).ok
    assert [r["method"] for r in _api_requests(kenv.kube, since)] == ["PATCH"]
    assert pod.delete(cfg).ok
    assert kenv.leftovers(pods=[pod]) == []


def test_token_rotation(kenv, daemon):
    nets = _nads(kenv, ("pxk-mv",))
    daemon.start()
    pod = kenv.pod(NS, "rot", {NETWORKS_ANN: "pxk-mv"}, node_name=NODE)
    daemon.wait_cached("pods", 1)
    cfg = kenv.config(daemonSocket=daemon.socket)
    assert pod.add(cfg).ok            # the shared client has read the token now
    assert pod.delete(cfg).ok
    kenv.kube.rotate_token()          # the old token gets 401 from now on; the token file has the new one
    since = _last_seq(kenv.kube)
    out = pod.add(cfg)
    assert out.ok, (out, daemon.read_log())
    assert [r["status"] for r in _api_requests(kenv.kube, since)] == [401, 200]
    assert pod.delete(cfg).ok
    assert kenv.leftovers(pods=[pod]) == []
    # The watches reconnect with the new token too.
    kenv.kube.drop_watches()
    pod2 = kenv.pod(NS, "rot2", {}, node_name=NODE)
    daemon.wait_cached("pods", 2)


def test_metrics_and_probes(kenv, request):
    kenv.install_crd()
    d = Daemon(kenv, metrics_tcp=True)
    request.addfinalizer(d.kill)
    nets = _nads(kenv, ("pxk-mv",))
    d.start()
    pod = kenv.pod(NS, "m", {NETWORKS_ANN: "pxk-mv"}, node_name=NODE)
    d.wait_cached("pods", 1)
    bad = {"cniVersion": "1.0.0", "name": "bad", "type": "macvlan", "master": "pxnosuchlink0"}
    kenv.apply_nad_kubectl(NS, "pxk-bad", bad)
    d.wait_cached("network-attachment-definitions", 2)
    cfg = kenv.config(daemonSocket=d.socket)
    assert pod.add(cfg).ok
    assert pod.delete(cfg).ok
    failing = kenv.pod(NS, "f", {NETWORKS_ANN: "pxk-bad"}, node_name=NODE)
    d.wait_cached("pods", 2)
    assert not failing.add(cfg).ok
    fams = d.metrics()
    types = {n: f.type for n, f in fams.items()}
    for name, typ in [("plexus_daemon_requests", "counter"), ("plexus_daemon_request_duration_seconds", "histogram"),
                      ("plexus_delegate_failures", "counter"), ("plexus_api_requests", "counter"),
                      ("plexus_watch_events", "counter"), ("plexus_cache_objects", "gauge"),
                      ("plexus_daemon_inflight_requests", "gauge"), ("plexus_daemon_queued_requests", "gauge")]:
        assert types.get(name) == typ, (name, types)
    assert d.sample("plexus_delegate_failures_total", network="bad", command="ADD") == 1
    assert d.sample("plexus_daemon_requests_total", command="ADD", result="error") == 1
    assert d.sample("plexus_api_requests_total", call="patch_pod_status", result="ok") == 1
    buckets = [s for s in fams["plexus_daemon_request_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert buckets and buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 2
    assert d.get("/healthz") == (200, "ok\n")
    assert d.get("/readyz") == (200, "ok\n")
    assert d.get("/nope")[0] == 404
    assert kenv.leftovers(pods=[pod, failing]) == []


def test_deploy_rules_are_exactly_enough_for_the_daemon(kenv, request):
    """deploy/'s ClusterRole plexus + deploy/optional/daemon.yaml's plexus-daemon serve ADDs through the daemon with
    one request; without the daemon's list/watch rules its caches never sync (403) and ADDs read through."""
    import yaml
    from testenv.lib.deploy import DEPLOY_DIR, deploy_object
    base = deploy_object("ClusterRole", "plexus")["rules"]
    with open(os.path.join(DEPLOY_DIR, "optional", "daemon.yaml")) as f:
        extra = [d for d in yaml.safe_load_all(f) if d][0]["rules"]
    kenv.kube.define_roles({"pxd-exact": base + extra, "pxd-base": base})
    kenv.install_crd()
    nets = _nads(kenv, ("pxk-mv",))
    pod = kenv.pod(NS, "rbac", {NETWORKS_ANN: "pxk-mv"}, node_name=NODE)
    for role, synced in (("pxd-exact", True), ("pxd-base", False)):
        token = kenv.kube.add_token("pxd-%s-user" % role, role)
        kc = kenv.kube.write_kubeconfig(os.path.join(kenv.tmp, "kc-%s.yaml" % role), token=token)
        d = Daemon(kenv, kubeconfig=str(kc), name="d-" + role)
        request.addfinalizer(d.kill)
        d.start(wait_synced=False)
        cfg = kenv.config(kubeconfig=str(kc), daemonSocket=d.socket)
        if synced:
            d.wait_cached("pods", 1)
            d.wait_cached("network-attachment-definitions", 1)
        else:
            _wait(lambda: d.sample("plexus_watch_restarts_total", resource="pods", reason="error") >= 1, "no 403 retry")
            assert d.get("/readyz")[0] == 503
            assert "403" in d.read_log() or "orbidden" in d.read_log()
        since = _last_seq(kenv.kube)
        out = pod.add(cfg)
        assert out.ok, (role, out, d.read_log())
        methods = [r["method"] for r in _api_requests(kenv.kube, since)]
        assert methods == (["PATCH"] if synced else ["GET", "GET", "PATCH"]), (role, methods)
        assert pod.delete(cfg).ok
        d.stop()
    assert _clean(kenv, pod, nets) == []
