"""Lifecycle soak: PLEXUS_SOAK_PODS concurrent pods (default 20) x PLEXUS_SOAK_CYCLES ADD/DEL cycles (default 50),
with a random failure injected in 10% of the fake delegates' ADD and DEL calls. The fakes are chained after real
bridge + host-local (eth0) and macvlan + host-local (net2) so real resources are at stake; both host-local pools
live in one dataDir. The networks after the cluster network are attached concurrently (`parallelAttach`, the
default, set explicitly here) and torn down concurrently. A failed DEL is retried until it succeeds, as a runtime does. At the end: 0 leaked links, 0 host-local reservations, 0 cache files.

Totals are printed (run with -s to see them) and written to testenv/.work/soak-totals.json.
"""

import json
import os
import threading
import time

from testenv.lib import netns as nl
from testenv.lib import plexus as px
from testenv.lib.plexus import Pod

PODS = int(os.environ.get("PLEXUS_SOAK_PODS", "20"))
CYCLES = int(os.environ.get("PLEXUS_SOAK_CYCLES", "50"))
FAIL_P = 0.1
MAX_DEL_ATTEMPTS = 100
TOTALS_FILE = os.path.join(px.REPO, "testenv", ".work", "soak-totals.json")


def test_soak_concurrent_add_del_with_random_failures(pxenv):
    b = pxenv.bridge()
    master, _ = pxenv.veth()
    flaky = dict(failProbability=FAIL_P, failCommands=["ADD", "DEL"])
    lists = [
        px.conflist("pxs0", "1.0.0", [px.bridge(b, "10.231.90.0/24", pxenv.data_dir), px.fake(**flaky)]),
        px.conflist("pxs1", "1.0.0", [px.fake(stateDir=pxenv.state_dir, ip="10.231.91.2/24", **flaky)]),
        px.conflist("pxs2", "1.0.0", [px.macvlan(master, "10.231.92.0/24", pxenv.data_dir), px.fake(**flaky)]),
    ]
    cfg = json.dumps(pxenv.config("1.0.0", lists, logLevel="error", parallelAttach=True, parallelTeardown=True))
    pods = [Pod(pxenv, "pxsoak%d" % i) for i in range(PODS)]

    lock = threading.Lock()
    totals = {"pods": PODS, "cycles_per_pod": CYCLES, "cycles": 0, "add_ok": 0, "add_failed": 0,
              "del_calls": 0, "del_failed": 0, "injected_failures_observed": 0, "max_del_attempts": 0,
              "unexpected_errors": [], "kernel_mismatches": []}

    def injected(outcome):
        text = (outcome.out or {}).get("msg", "") + (outcome.out or {}).get("details", "")
        return text.count("random ADD failure") + text.count("random DEL failure")

    def note_unexpected(kind, pod, o):
        if injected(o) == 0:
            with lock:
                totals["unexpected_errors"].append("%s %s: %s" % (kind, pod.cid, o.stdout[:500] or o.stderr[-500:]))

    def worker(pod):
        for _ in range(CYCLES):
            a = pod.add(cfg)
            with lock:
                totals["cycles"] += 1
                totals["add_ok" if a.code == 0 else "add_failed"] += 1
                totals["injected_failures_observed"] += injected(a)
            if a.code == 0:
                want = sorted(px.result_ips(a.out))
                have = sorted(pod.addresses().get("eth0", []))
                links = pod.links()
                if want != have or links != ["eth0", "net2"]:
                    with lock:
                        totals["kernel_mismatches"].append("%s: result %s, eth0 %s, links %s" % (pod.cid, want, have, links))
            else:
                note_unexpected("ADD", pod, a)
            for attempt in range(1, MAX_DEL_ATTEMPTS + 1):
                d = pod.delete(cfg)
                with lock:
                    totals["del_calls"] += 1
                    totals["injected_failures_observed"] += injected(d)
                    if d.code != 0:
                        totals["del_failed"] += 1
                    totals["max_del_attempts"] = max(totals["max_del_attempts"], attempt)
                if d.code == 0:
                    break
                note_unexpected("DEL", pod, d)
            else:
                with lock:
                    totals["unexpected_errors"].append("DEL of %s never succeeded" % pod.cid)
                return

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(p,), name=p.cid) for p in pods]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    totals["seconds"] = round(time.monotonic() - t0, 1)

    # leaks
    leaked_links = [(p.ns, l) for p in pods for l in p.links()] + [("bridge " + b, l) for l in nl.bridge_ports(b)]
    leaked_links += [("host", l["ifname"]) for l in nl.ip_json("-d", "link", "show")
                     if l.get("linkinfo", {}).get("info_kind") == "macvlan" and l.get("link") == master]
    totals["leaked_links"] = len(leaked_links)
    totals["leaked_reservations"] = px.reservation_count(pxenv.data_dir)
    totals["leaked_cache_files"] = len(pxenv.cache_files())
    totals["leaked_fake_state_files"] = len(os.listdir(pxenv.state_dir))
    os.makedirs(os.path.dirname(TOTALS_FILE), exist_ok=True)
    with open(TOTALS_FILE, "w") as f:
        json.dump(totals, f, indent=1)
    print("\nsoak totals: " + json.dumps({k: v for k, v in totals.items() if not isinstance(v, list)}))
    for e in (totals["unexpected_errors"] + totals["kernel_mismatches"])[:20]:
        print("  " + e)

    assert totals["cycles"] == PODS * CYCLES
    assert not totals["unexpected_errors"], totals["unexpected_errors"][:10]
    assert not totals["kernel_mismatches"], totals["kernel_mismatches"][:10]
    assert leaked_links == [], leaked_links
    assert totals["leaked_reservations"] == 0, pxenv.reservations()
    assert totals["leaked_cache_files"] == 0, pxenv.cache_files()
    assert totals["leaked_fake_state_files"] == 0, os.listdir(pxenv.state_dir)
    if PODS * CYCLES >= 100:
        # 5 fake calls per successful cycle at p=0.1: failures must actually have been injected
        assert totals["injected_failures_observed"] > 0 and totals["add_failed"] > 0, totals
