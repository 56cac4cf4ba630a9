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

One more point lies before the first delegate has its configuration: the plan is staged, the delegate spawned, and
plexus is held (strace's fsync delay injection) inside the plan's fsync and killed there.
"""

import json
import os
import signal
import subprocess
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


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


def test_sigkill_while_the_plan_is_made_durable(pxenv):
    """ADD stages the plan, spawns the first delegate and only then makes the plan durable (fsync, rename, directory
    fsync) before writing the delegate's stdin. strace holds plexus inside that fsync; plexus is SIGKILLed there.
    The delegate never got a byte of its configuration, so nothing is allocated and no plan is in place; the
    runtime's DEL succeeds on a clean host, and GC removes the abandoned temp file."""
    bridges = [pxenv.bridge(), pxenv.bridge()]
    lists = [px.conflist("pxd%d" % k, "1.0.0", [px.bridge(bridges[k], pxenv.subnet(), pxenv.data_dir)]) for k in range(2)]
    cfg = pxenv.config("1.1.0", lists)
    pod = Pod(pxenv)
    env = pxenv.px.env("ADD", pod.cid, pod.netns_path, cni_args=pod.args)
    # Only plexus' own (main) thread is traced, and its first fsync is the plan's: hold it for 8 s (strace itself
    # exits only once the delay is over, even after its tracee is dead).
    proc = subprocess.Popen(["strace", "-qq", "-o", "/dev/null", "-e", "trace=fsync",
                             "-e", "inject=fsync:delay_enter=8000000:when=1", pxenv.px.binary],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    pxenv.procs.append(proc)
    proc.stdin.write(json.dumps(cfg).encode())
    proc.stdin.close()

    temp_prefix = ".pxnet-%s-eth0.tmp." % pod.cid
    deadline = time.time() + 60
    plexus_pid, delegate_pid = None, None
    while time.time() < deadline and delegate_pid is None:
        tracees = _children(proc.pid)
        if tracees:
            plexus_pid = tracees[0]
            kids = _children(plexus_pid)
            staged = [f for f in os.listdir(pxenv.cache.attachments_dir) if f.startswith(temp_prefix)] \
                if os.path.isdir(pxenv.cache.attachments_dir) else []
            if kids and staged:
                delegate_pid = kids[0]
                break
        time.sleep(0.01)
    assert delegate_pid is not None, "plexus never staged its plan and spawned the first delegate"
    pxenv.pids.append(delegate_pid)
    # The first delegate runs, waiting for its configuration; the plan is only staged.
    assert not os.path.exists(pxenv.cache.plan_path("pxnet", pod.cid, "eth0"))

    os.kill(plexus_pid, signal.SIGKILL)
    proc.wait(timeout=60)
    # The delegate saw its stdin close without a byte: it fails and allocates nothing.
    deadline = time.time() + 30
    while os.path.exists("/proc/%d" % delegate_pid) and time.time() < deadline:
        time.sleep(0.01)
    assert not pxenv.reservations(), pxenv.reservations()
    assert pod.links() == []
    assert not os.path.exists(pxenv.cache.plan_path("pxnet", pod.cid, "eth0"))
    temps = [f for f in os.listdir(pxenv.cache.attachments_dir) if f.startswith(temp_prefix)]
    assert len(temps) == 1, os.listdir(pxenv.cache.attachments_dir)

    d = pod.delete(cfg)
    assert d.code == 0, d
    pxenv.assert_clean(netns=[pod.ns], bridges=bridges)

    gc_cfg = dict(cfg)
    gc_cfg["cni.dev/valid-attachments"] = []
    g = pxenv.px.run("GC", gc_cfg)
    assert g.code == 0, g
    assert [f for f in os.listdir(pxenv.cache.attachments_dir) if ".tmp." in f] == []
