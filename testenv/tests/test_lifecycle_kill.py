"""Lifecycle: SIGKILL plexus at each step of a three-network ADD, deterministically.

Every network is a chain ``[fake head, bridge + host-local, fake tail]``; exactly one fake carries a ``pauseFile``
(it writes ``<pause>.started`` with its PID, then waits for ``<pause>.release``). Pausing in

* net0's head: the plan is written, no delegate has allocated anything yet ("before the first delegate");
* net1's head: network 0 is complete and cached, network 1 untouched ("between two networks");
* net0's / net1's / net2's tail: that network's bridge and host-local allocated, its result not cached
  ("inside a delegate chain").

plexus is SIGKILLed there, the orphaned delegate is killed too, and then the runtime's DEL (or a retried ADD
followed by DEL) must leave a clean host: no links, no host-local reservations, no cache files, no plan.

These points are the serial order (`parallelAttach: false`). With concurrent attach (the default) net1 and net2 run
at once after eth0: "inside-concurrent-batch" pauses net1's tail once net2 is complete and cached.
"""

import os
import signal
import time

import pytest

from testenv.lib import netns as nl
from testenv.lib import plexus as px
from testenv.lib.plexus import Pod

POINTS = {
    # name: (network index, "head"|"tail", networks complete+cached when paused, networks with a bridge allocation,
    #        concurrent attach)
    "before-first-delegate": (0, "head", [], 0, False),
    "inside-net0-chain": (0, "tail", [], 1, False),
    "between-net0-and-net1": (1, "head", [0], 1, False),
    "inside-net1-chain": (1, "tail", [0], 2, False),
    "inside-net2-chain": (2, "tail", [0, 1], 3, False),
    "inside-concurrent-batch": (1, "tail", [0, 2], 3, True),
}


def wait_for(path, timeout=60):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > deadline:
            raise AssertionError("%s did not appear within %ss" % (path, timeout))
        time.sleep(0.01)


def build(pxenv, point):
    idx, where, _, _, concurrent = POINTS[point]
    pause = os.path.join(pxenv.tmp, "pause")
    bridges = [pxenv.bridge() for _ in range(3)]
    lists = []
    for k in range(3):
        head = px.fake(recordDir=pxenv.rec_dir)
        tail = px.fake(recordDir=pxenv.rec_dir)
        if k == idx:
            (head if where == "head" else tail)["pauseFile"] = pause
        lists.append(px.conflist("pxk%d" % k, "1.0.0", [head, px.bridge(bridges[k], pxenv.subnet(), pxenv.data_dir),
                                                       tail]))
    return pxenv.config("1.0.0", lists, parallelAttach=concurrent), bridges, pause


def kill_at(pxenv, pod, cfg, pause, point):
    _, _, complete, allocated, concurrent = POINTS[point]
    proc = pxenv.px.popen("ADD", cfg, pod.cid, pod.netns_path, cni_args=pod.args)
    pxenv.procs.append(proc)
    wait_for(pause + ".started")
    delegate_pid = int(open(pause + ".started").read().strip())
    pxenv.pids.append(delegate_pid)
    if concurrent:
        # net2 runs beside the paused net1: wait until it is complete and cached.
        wait_for(pxenv.cache.result_path("pxk2", pod.cid, "net2"))

    # the intermediate state is what the point promises
    plan = pxenv.cache.plan("pxnet", pod.cid, "eth0")
    assert [n["ifName"] for n in plan["networks"]] == ["eth0", "net1", "net2"], plan
    assert sorted(pxenv.cache.result_files()) == sorted(
        "pxk%d-%s-%s" % (k, pod.cid, "eth0" if k == 0 else "net%d" % k) for k in complete)
    assert len(pxenv.reservations()) == allocated, pxenv.reservations()
    assert len(pod.links()) == allocated, pod.links()

    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    os.kill(delegate_pid, signal.SIGKILL)   # the orphaned delegate
    deadline = time.time() + 10
    while os.path.exists("/proc/%d" % delegate_pid) and time.time() < deadline:
        try:
            with open("/proc/%d/stat" % delegate_pid) as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.01)
    # nothing was cleaned up by anyone yet: the plan is still there
    assert os.path.exists(pxenv.cache.plan_path("pxnet", pod.cid, "eth0"))


@pytest.mark.parametrize("followup", ["del", "del-netns-gone", "add-again-then-del"])
@pytest.mark.parametrize("point", list(POINTS))
def test_sigkill_during_add_then_cleanup(pxenv, point, followup):
    cfg, bridges, pause = build(pxenv, point)
    pod = Pod(pxenv)
    kill_at(pxenv, pod, cfg, pause, point)
    host_links = [p for b in bridges for p in nl.bridge_ports(b)]

    if followup == "del":
        d = pod.delete(cfg)
        assert d.code == 0, d
        pxenv.assert_clean(netns=[pod.ns], bridges=bridges, host_links=host_links)
    elif followup == "del-netns-gone":
        nl.ip("netns", "del", pod.ns)
        d = pod.delete(cfg)
        assert d.code == 0, d
        pxenv.assert_clean(bridges=bridges, host_links=host_links)
    else:
        open(pause + ".release", "w").close()   # the retried ADD must not pause again
        a = pod.add(cfg)
        assert a.code == 0, a
        assert pod.links() == ["eth0", "net1", "net2"], pod.links()
        res = pxenv.reservations()
        assert sorted(len(v) for v in res.values()) == [1, 1, 1], "stale reservations after re-ADD: %s" % res
        assert len(pxenv.cache_files()) == 4, pxenv.cache_files()
        assert [n["ifName"] for n in pxenv.cache.plan("pxnet", pod.cid, "eth0")["networks"]] == ["eth0", "net1", "net2"]
        d = pod.delete(cfg)
        assert d.code == 0, d
        pxenv.assert_clean(netns=[pod.ns], bridges=bridges, host_links=host_links)
