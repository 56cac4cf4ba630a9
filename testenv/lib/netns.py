"""Network namespace, veth and link helpers for the Plexus integration tests (root only).

Every name this module creates starts with ``pxt`` followed by a per-run tag (``NAME_PREFIX``), so a sweep can
remove exactly what this run (or a crashed earlier run of this suite) created and nothing of other suites
(the CRI suite uses ``pxcr``).  Names stay <= 15 characters (IFNAMSIZ - 1).

Runs register themselves in ``testenv/.work/pxt-runs/<tag>.json`` with their PID; ``sweep_stale_runs()`` removes
the leftovers of runs whose process is gone.
"""

import json
import os
import re
import subprocess
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNS_DIR = os.path.join(REPO, "testenv", ".work", "pxt-runs")
NETNS_DIR = "/var/run/netns"

RUN_TAG = os.urandom(2).hex()          # 4 hex chars
NAME_PREFIX = "pxt" + RUN_TAG          # 7 chars: leaves 8 for the rest
_counter = 0
_lock = threading.Lock()


def _next(kind):
    global _counter
    with _lock:
        _counter += 1
        n = _counter
    name = "%s%s%d" % (NAME_PREFIX, kind, n)
    assert len(name) <= 15, name
    return name


def ip(*args, check=True, ns=None):
    """Runs ``ip`` and returns stdout (text)."""
    cmd = ["ip"] + (["-n", ns] if ns else []) + [str(a) for a in args]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.strip()))
    return p.stdout


def ip_json(*args, ns=None):
    out = ip("-j", *args, ns=ns)
    return json.loads(out) if out.strip() else []


# ----------------------------------------------------------------------------------------------------------------
# Kernel state queries
# ----------------------------------------------------------------------------------------------------------------

def netns_path(name):
    return os.path.join(NETNS_DIR, name)


def netns_exists(name):
    return os.path.exists(netns_path(name))


def list_netns():
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def links(ns=None):
    """``{ifname: link-json}`` of a namespace (host namespace when ns is None)."""
    return {l["ifname"]: l for l in ip_json("link", "show", ns=ns)}


def link_exists(name, ns=None):
    p = subprocess.run(["ip"] + (["-n", ns] if ns else []) + ["link", "show", "dev", name],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return p.returncode == 0


def links_left(names, timeout=10.0):
    """The host links of `names` that still exist once the kernel had up to `timeout` seconds: links of a deleted
    netns (and their veth peers) are destroyed asynchronously, from a workqueue."""
    deadline = time.monotonic() + timeout
    left = [n for n in names if link_exists(n)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [n for n in left if link_exists(n)]
    return left


def addresses(ns=None):
    """``{ifname: ["10.231.20.2/24", ...]}`` (IPv4 and global IPv6 only) from ``ip -j addr``."""
    out = {}
    for l in ip_json("addr", "show", ns=ns):
        addrs = []
        for a in l.get("addr_info", []):
            if a.get("family") == "inet6" and a.get("scope") == "link":
                continue
            addrs.append("%s/%d" % (a["local"], a["prefixlen"]))
        out[l["ifname"]] = addrs
    return out


def bridge_ports(bridge):
    """Names of the host links enslaved to ``bridge``."""
    return sorted(l["ifname"] for l in ip_json("link", "show", "master", bridge))


def host_links_with_prefix(prefix):
    return sorted(n for n in links() if n.startswith(prefix))


# ----------------------------------------------------------------------------------------------------------------
# Creation (tracked for cleanup)
# ----------------------------------------------------------------------------------------------------------------

class Tracker:
    """Records what a test created; ``cleanup()`` removes it (idempotent, never raises)."""

    def __init__(self):
        self.netns = []
        self.links = []

    def netns_add(self, name=None):
        name = name or _next("n")
        ip("netns", "add", name)
        self.netns.append(name)
        ip("link", "set", "lo", "up", ns=name)
        return name

    def bridge_add(self, name=None):
        name = name or _next("b")
        ip("link", "add", name, "type", "bridge")
        self.links.append(name)
        ip("link", "set", name, "up")
        return name

    def veth_add(self, a=None, b=None):
        a = a or _next("v")
        b = b or (a + "p")
        assert len(b) <= 15
        ip("link", "add", a, "type", "veth", "peer", "name", b)
        self.links += [a, b]
        ip("link", "set", a, "up")
        ip("link", "set", b, "up")
        return a, b

    def new_name(self, kind="x"):
        """A fresh name for a link someone else creates (still swept by prefix)."""
        return _next(kind)

    def cleanup(self):
        errors = []
        for n in reversed(self.links):
            if link_exists(n):
                try:
                    ip("link", "del", n)
                except Exception as e:  # pragma: no cover - reported, never raised
                    errors.append(str(e))
        for n in reversed(self.netns):
            if netns_exists(n):
                try:
                    ip("netns", "del", n)
                except Exception as e:  # pragma: no cover
                    errors.append(str(e))
        self.netns, self.links = [], []
        return errors


# ----------------------------------------------------------------------------------------------------------------
# Sweeps
# ----------------------------------------------------------------------------------------------------------------

def sweep_prefix(prefix):
    """Deletes every netns and host link whose name starts with ``prefix`` (must start with ``pxt``)."""
    assert prefix.startswith("pxt") and len(prefix) >= 7, prefix
    removed = []
    for n in list_netns():
        if n.startswith(prefix):
            ip("netns", "del", n, check=False)
            removed.append("netns " + n)
    for n in host_links_with_prefix(prefix):
        if link_exists(n):
            ip("link", "del", n, check=False)
            removed.append("link " + n)
    return removed


def register_run(runs_dir=RUNS_DIR, tag=RUN_TAG, prefix=NAME_PREFIX):
    """Records this process as the owner of names ``prefix*`` (another suite passes its own directory and tag)."""
    os.makedirs(runs_dir, exist_ok=True)
    with open(os.path.join(runs_dir, tag + ".json"), "w") as f:
        json.dump({"pid": os.getpid(), "prefix": prefix}, f)


def unregister_run(runs_dir=RUNS_DIR, tag=RUN_TAG):
    try:
        os.unlink(os.path.join(runs_dir, tag + ".json"))
    except FileNotFoundError:
        pass


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def sweep_stale_runs(runs_dir=RUNS_DIR, tag=RUN_TAG, family="pxt", remove=None):
    """Removes netns/links of earlier runs of this suite whose pytest process is gone: ``remove(family + tag)``
    (default ``sweep_prefix``) for each such run registered in ``runs_dir``."""
    remove = remove or sweep_prefix
    removed = []
    try:
        names = os.listdir(runs_dir)
    except FileNotFoundError:
        return removed
    for fn in names:
        m = re.match(r"^([0-9a-f]{4})\.json$", fn)
        if not m or m.group(1) == tag:
            continue
        path = os.path.join(runs_dir, fn)
        try:
            with open(path) as f:
                info = json.load(f)
        except (OSError, ValueError):
            info = {}
        if info.get("pid") and _alive(int(info["pid"])):
            continue
        removed += remove(family + m.group(1)) or []
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return removed
