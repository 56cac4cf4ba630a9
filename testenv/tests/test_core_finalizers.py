"""Finalizers in real netns with Debian's bridge + host-local: run once per pod after every network, from the
configuration's `finalizers` then `_finalize.d/` (lexical), with the pod's netns, the cluster interface and the
merged result of all attachments; DEL runs them first in reverse; a failing or hanging finalizer rolls everything
back (no IP held); the trace context reaches every delegate and finalizer and Plexus' log lines."""

import json
import os
import time

from testenv.lib import plexus as px
from testenv.lib.plexus import Pod

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE = {"TRACEPARENT": TRACEPARENT, "TRACESTATE": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "BAGGAGE": "userId=alice"}


def write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(json.dumps(obj))


class TwoNetworks:
    """eth0: bridge cluster network in ``<confDir>/10-cluster.conflist`` (named by path); net1: a second bridge whose
    chain ends in a recorder (so its DEL is seen). Finalizers record into the same directory."""

    def __init__(self, env):
        self.env = env
        self.bridges = [env.bridge(), env.bridge()]
        self.cluster_path = os.path.join(env.conf_dir, "10-cluster.conflist")
        write(self.cluster_path, px.conflist("pxfin-cl", "1.0.0", [px.bridge(self.bridges[0], env.subnet(), env.data_dir)]))
        self.second = px.conflist("pxfin-b", "1.0.0", [px.bridge(self.bridges[1], env.subnet(), env.data_dir),
                                                       px.fake(recordDir=env.rec_dir)])
        self.finalize_dir = os.path.join(env.conf_dir, "_finalize.d")

    def finalizer(self, name, **keys):
        return px.fake(name=name, recordDir=self.env.rec_dir, **keys)

    def drop_in(self, file, name, **keys):
        write(os.path.join(self.finalize_dir, file), self.finalizer(name, **keys))

    def config(self, finalizers=(), **extra):
        cfg = self.env.config("1.1.0", clusterNetwork=self.cluster_path, **extra)
        # The second network as a file named by defaultNetworks, so every pod gets both.
        second_path = os.path.join(self.env.conf_dir, "20-second.conflist")
        write(second_path, self.second)
        cfg["defaultNetworks"] = [second_path]
        if finalizers:
            cfg["finalizers"] = list(finalizers)
        return cfg


def names(records):
    return [r["stdin"]["name"] for r in records]


def test_finalizers_from_both_sources_run_in_order_with_the_merged_result(pxenv):
    nets = TwoNetworks(pxenv)
    nets.drop_in("20-second.conf", "fin-dir-20")
    nets.drop_in("10-first.conf", "fin-dir-10")
    cfg = nets.config([nets.finalizer("fin-config")])
    pod = Pod(pxenv)
    r = pod.add(cfg)
    assert r.code == 0, r
    adds = px.read_records(pxenv.rec_dir, "ADD")
    # The second network's recorder first (it is a network), then the finalizers: config list, then the directory.
    assert names(adds) == ["pxfin-b", "fin-config", "fin-dir-10", "fin-dir-20"], names(adds)
    for rec in adds[1:]:
        env = rec["env"]
        assert env["CNI_IFNAME"] == "eth0" and env["CNI_NETNS"] == pod.netns_path and env["CNI_CONTAINERID"] == pod.cid, env
        assert "K8S_POD_NAME=pxpod" in env["CNI_ARGS"], env
        prev = rec["stdin"]["prevResult"]
        sandbox = [i["name"] for i in prev["interfaces"] if i.get("sandbox")]
        assert sandbox == ["eth0", "net1"], prev
        # Every IP points at its own pod interface in the merged list.
        addrs = pod.addresses()
        for ip in prev["ips"]:
            iface = prev["interfaces"][int(ip["interface"])]["name"]
            assert ip["address"] in addrs[iface], (ip, addrs)
    # The runtime gets the cluster network's result: one pod interface.
    assert [i["name"] for i in r.out["interfaces"] if i.get("sandbox")] == ["eth0"], r.out

    assert pod.check(cfg).code == 0
    checks = px.read_records(pxenv.rec_dir, "CHECK")
    assert names(checks) == ["pxfin-b", "fin-config", "fin-dir-10", "fin-dir-20"], names(checks)

    r = pod.delete(cfg)
    assert r.code == 0, r
    dels = px.read_records(pxenv.rec_dir, "DEL")
    # Finalizers first, in reverse, then the networks (net1's recorder is the first plugin of its reverse chain).
    assert names(dels) == ["fin-dir-20", "fin-dir-10", "fin-config", "pxfin-b"], names(dels)
    assert dels[0]["stdin"]["prevResult"]["interfaces"], "DEL of a finalizer gets the merged result while it exists"
    pxenv.assert_clean(netns=[pod.ns], bridges=nets.bridges)


def test_a_failing_finalizer_rolls_everything_back(pxenv):
    nets = TwoNetworks(pxenv)
    nets.drop_in("50-fails.conf", "fin-fails", fail={"ADD": {"code": 7, "msg": "pxfinbad"}})
    cfg = nets.config([nets.finalizer("fin-ok")])
    pod = Pod(pxenv)
    r = pod.add(cfg)
    assert r.code == 1 and r.out["code"] == 7, r
    assert "pxfinbad" in r.out["msg"] and "fin-fails" in r.out["msg"] and "pxns/pxpod" in r.out["msg"], r.out
    dels = px.read_records(pxenv.rec_dir, "DEL")
    assert names(dels) == ["fin-fails", "fin-ok", "pxfin-b"], names(dels)
    assert pod.links() == [], "no interface may stay"
    assert not pxenv.reservations(), "no IP may stay allocated"
    pxenv.assert_clean(netns=[pod.ns], bridges=nets.bridges)


def test_a_hanging_finalizer_is_bounded_and_rolled_back(pxenv):
    nets = TwoNetworks(pxenv)
    pause = os.path.join(pxenv.tmp, "never")
    cfg = nets.config([nets.finalizer("fin-hangs", pauseFile=pause)], delegateTimeoutSeconds=2)
    pod = Pod(pxenv)
    started = time.monotonic()
    r = pod.add(cfg)
    elapsed = time.monotonic() - started
    assert r.code == 1 and r.out["code"] == 11 and "timed out" in r.out["msg"], r
    assert elapsed < 30, elapsed
    assert os.path.exists(pause + ".started"), "the finalizer never ran"
    assert not pxenv.reservations() and pod.links() == []
    pxenv.assert_clean(netns=[pod.ns], bridges=nets.bridges)


def test_trace_context_reaches_delegates_and_finalizers_and_the_log(pxenv):
    nets = TwoNetworks(pxenv)
    nets.drop_in("10-fin.conf", "fin-trace")
    cfg = nets.config()
    pod = Pod(pxenv)
    r = pod.add(cfg, extra=TRACE)
    assert r.code == 0, r
    assert "trace=4bf92f3577b34da6a3ce929d0e0e4736" in r.stderr, r.stderr[-2000:]
    r = pod.delete(cfg, extra=TRACE)
    assert r.code == 0, r
    records = px.read_records(pxenv.rec_dir)
    assert {rec["_command"] for rec in records} == {"ADD", "DEL"} and len(records) == 4, records
    for rec in records:
        for k, v in TRACE.items():
            assert rec["env"].get(k) == v, (k, rec["env"])
    # Without trace variables the delegates see none and the log has no trace field.
    pod2 = Pod(pxenv, name="pxpod2")
    r = pod2.add(cfg)
    assert r.code == 0 and "trace=" not in r.stderr, r
    last = px.read_records(pxenv.rec_dir, "ADD")[-1]
    assert not any(k in last["env"] for k in TRACE), last["env"]
    assert pod2.delete(cfg).code == 0
    pxenv.assert_clean(netns=[pod.ns, pod2.ns], bridges=nets.bridges)
