"""A two-network pod and a peer for the ``plexus-policy-route`` integration tests (root only).

Topology (``Topology``), everything named ``pxpr<tag>...`` (``tag``: 4 hex characters per run), links <= 15 chars::

    pod netns  eth0 (bridge A, 10.231.160.0/24, default via .1)   net1 (bridge B, 10.231.161.0/24, no default route)
                  |                                                  |
    host       bridge A <- veth -> peer netns pa (10.231.160.1/24)  bridge B <- veth -> peer netns pb (10.231.161.1/24)
    peer netns lo: 10.231.169.1/32 ("remote"), strict reverse-path filtering (rp_filter=1) on all, default, pa, pb

The pod's interfaces come from Debian's ``bridge`` + ``host-local`` plugins run directly; ``merged_result()`` builds
the finalizer's prevResult as Plexus does (interfaces concatenated, ``ips[].interface`` re-indexed). IP forwarding is
never enabled: the peer sits on both bridges. ``ping()`` is ``ping -c1 -W1 -I <source>`` over a raw ICMP socket
(the test image has no iputils). ``Topology(dual_stack=True)`` adds fd31:16:1::/64 to net1 (peer: fd31:16:1::1 on
pb, fd31:16:9::1 on lo). Runs register in ``testenv/.work/pxpr-runs/<tag>.json``; ``sweep()``
removes what runs whose process is gone left behind.
"""

import json
import os
import re
import subprocess
import sys

from testenv.lib import netns as nl
from testenv.lib import plexus as px

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNS_DIR = os.path.join(REPO, "testenv", ".work", "pxpr-runs")
NETNS_DIR = "/var/run/netns"
BINARY = "plexus-policy-route"

SUBNET_A, GATEWAY_A = "10.231.160.0/24", "10.231.160.1"
SUBNET_B, GATEWAY_B = "10.231.161.0/24", "10.231.161.1"
REMOTE = "10.231.169.1"
# IPv6 on net1 only (``Topology(dual_stack=True)``): the peer's pb holds the gateway, its lo the remote address.
SUBNET_B6, GATEWAY_B6 = "fd31:16:1::/64", "fd31:16:1::1"
REMOTE6 = "fd31:16:9::1"

TAG = os.urandom(2).hex()
PREFIX = "pxpr" + TAG  # 8 characters: 7 left for the role


def binary():
    return os.path.join(os.environ.get("PLEXUS_BIN_DIR") or px.build_bin_dir(), BINARY)


def run(cmd, check=True, timeout=30):
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(map(str, cmd)), p.returncode, p.stderr.strip()))
    return p


def ip(*args, ns=None, check=True):
    return run(["ip"] + (["-n", ns] if ns else []) + list(args), check=check).stdout


def ip_json(*args, ns=None):
    out = ip("-j", *args, ns=ns)
    return json.loads(out) if out.strip() else []


def in_netns(ns, *cmd, check=True):
    return run(["ip", "netns", "exec", ns] + list(cmd), check=check)


# ``ping -c1 -W1 -I <source> <target>`` without iputils (Debian's reference image has none): a raw ICMP socket bound
# to the source address, so the kernel's route lookup (and with it the policy rules) sees that source.
_PING = r"""
import os, socket, struct, sys, time
source, target = sys.argv[1], sys.argv[2]
v6 = ":" in target
def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF
ident, seq = os.getpid() & 0xFFFF, 1
payload = b"pxpr-policy-route"
request, reply = (128, 129) if v6 else (8, 0)
header = struct.pack("!BBHHH", request, 0, 0, ident, seq)
# ICMPv6: the kernel fills the checksum (it covers a pseudo-header); ICMPv4: ours.
packet = header + payload if v6 else struct.pack("!BBHHH", request, 0, checksum(header + payload), ident, seq) + payload
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) if v6 else \
    socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.bind((source, 0))
s.sendto(packet, (target, 0))
deadline = time.monotonic() + 1.0
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        sys.exit(1)
    s.settimeout(left)
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        sys.exit(1)
    icmp = data if v6 else data[(data[0] & 0x0F) * 4:]   # IPv4 raw sockets deliver the IP header too
    if addr[0] == target and len(icmp) >= 8 and icmp[0] == reply and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
        sys.exit(0)
"""


def ping(ns, source, target):
    """One echo request from ``source`` (an address of ``ns``) to ``target``; True when answered within a second."""
    return in_netns(ns, sys.executable, "-c", _PING, source, target, check=False).returncode == 0


def netns_path(ns):
    return os.path.join(NETNS_DIR, ns)


def link_exists(name, ns=None):
    return run(["ip"] + (["-n", ns] if ns else []) + ["link", "show", "dev", name], check=False).returncode == 0


# ----------------------------------------------------------------------------------------------------------------
# Runs and sweeps
# ----------------------------------------------------------------------------------------------------------------

def register():
    nl.register_run(RUNS_DIR, TAG, PREFIX)


def unregister():
    nl.unregister_run(RUNS_DIR, TAG)


def remove_prefix(prefix):
    """Deletes every netns and host link named ``prefix*`` (``pxpr`` + a 4-hex tag)."""
    assert re.match(r"^pxpr[0-9a-f]{4}$", prefix), prefix
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        names = []
    for n in names:
        if n.startswith(prefix):
            ip("netns", "del", n, check=False)
    for link in ip_json("link", "show"):
        if link["ifname"].startswith(prefix):
            ip("link", "del", link["ifname"], check=False)


def sweep():
    """Removes the leftovers of earlier runs whose process is gone."""
    nl.sweep_stale_runs(RUNS_DIR, TAG, "pxpr", remove_prefix)


# ----------------------------------------------------------------------------------------------------------------
# CNI plugins run directly
# ----------------------------------------------------------------------------------------------------------------

def cni(binary_path, command, config, netns, ifname, cid, cni_path=px.DEBIAN_CNI_DIR):
    env = px.make_env(command, cid=cid, netns=netns, ifname=ifname, cni_path=cni_path)
    stdin = config if isinstance(config, (bytes, str)) else json.dumps(config)
    p = subprocess.run([binary_path], input=stdin.encode() if isinstance(stdin, str) else stdin, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    return px.Outcome(p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))


def merge(results):
    """The merged result Plexus hands a finalizer: interfaces concatenated, ips re-indexed, routes concatenated,
    the first attachment's DNS."""
    merged = {"cniVersion": results[0]["cniVersion"], "interfaces": [], "ips": [], "routes": [],
              "dns": results[0].get("dns", {})}
    for r in results:
        base = len(merged["interfaces"])
        merged["interfaces"] += r.get("interfaces", [])
        for entry in r.get("ips", []):
            entry = dict(entry)
            if "interface" in entry:
                entry["interface"] += base
            merged["ips"].append(entry)
        merged["routes"] += r.get("routes", [])
    return merged


def policy_config(prev_result, version="1.0.0", **options):
    c = {"cniVersion": version, "name": "pxpr-policy", "type": BINARY}
    c.update(options)
    if prev_result is not None:
        c["prevResult"] = prev_result
    return c


class Topology:
    """The pod, its two bridge attachments, and the peer. ``cleanup()`` removes everything (never raises)."""

    def __init__(self, data_dir, dual_stack=False):
        self.data_dir = str(data_dir)
        self.dual_stack = dual_stack
        self.cid = "pxpr-" + TAG
        self.pod = PREFIX + "pod"
        self.peer = PREFIX + "peer"
        self.bridge_a, self.bridge_b = PREFIX + "ba", PREFIX + "bb"
        self.veths = [(PREFIX + "pa", PREFIX + "ha"), (PREFIX + "pb", PREFIX + "hb")]
        self.attachments = []  # (config, ifname) ADDed, for the bridge plugin's DEL
        self.results = {}
        self.bridge_binary = os.path.join(px.DEBIAN_CNI_DIR, "bridge")

    @property
    def pod_path(self):
        return netns_path(self.pod)

    # -- set-up --------------------------------------------------------------------------------------------------

    def build(self, attach=True):
        """The netns, bridges and peer; with ``attach``, also the pod's two interfaces (bridge plugin run directly).
        Without it the caller attaches them (through Plexus: ``plexus_networks()``)."""
        for ns in (self.pod, self.peer):
            ip("netns", "add", ns)
            ip("link", "set", "lo", "up", ns=ns)
        for br in (self.bridge_a, self.bridge_b):
            ip("link", "add", br, "type", "bridge")
            ip("link", "set", br, "up")
        # The peer: one leg on each bridge, strict RPF, a remote address on lo. Forwarding stays off.
        for (peer_if, host_if), br, address in zip(self.veths, (self.bridge_a, self.bridge_b),
                                                   (GATEWAY_A + "/24", GATEWAY_B + "/24")):
            ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
            ip("link", "set", peer_if, "netns", self.peer)
            ip("link", "set", host_if, "master", br)
            ip("link", "set", host_if, "up")
            ip("addr", "add", address, "dev", peer_if, ns=self.peer)
            ip("link", "set", peer_if, "up", ns=self.peer)
        ip("addr", "add", REMOTE + "/32", "dev", "lo", ns=self.peer)
        if self.dual_stack:
            ip("addr", "add", GATEWAY_B6 + "/64", "dev", self.veths[1][0], "nodad", ns=self.peer)
            ip("addr", "add", REMOTE6 + "/128", "dev", "lo", ns=self.peer)
        for key in ("all", "default", self.veths[0][0], self.veths[1][0]):
            in_netns(self.peer, "sysctl", "-q", "-w", "net.ipv4.conf.%s.rp_filter=1" % key)
        if not attach:
            return self
        # The pod: eth0 (with the default route) and net1 from Debian's bridge + host-local.
        eth0, net1 = self.plexus_networks()
        for config, ifname in ((eth0, "eth0"), (net1, "net1")):
            out = cni(self.bridge_binary, "ADD", config, self.pod_path, ifname, self.cid)
            if not out.ok:
                raise RuntimeError("bridge ADD %s: %r" % (ifname, out))
            self.attachments.append((config, ifname))
            self.results[ifname] = out.out
        return self

    def plexus_networks(self):
        """The two networks' configurations: eth0 (bridge A, default route via the peer) and net1 (bridge B)."""
        eth0 = px.conf("pxpr-a", "1.0.0", px.bridge(self.bridge_a, SUBNET_A, self.data_dir))
        eth0["ipam"]["routes"] = [{"dst": "0.0.0.0/0"}]
        net1 = px.conf("pxpr-b", "1.0.0", px.bridge(self.bridge_b, SUBNET_B, self.data_dir))
        if self.dual_stack:
            net1["ipam"]["ranges"].append([{"subnet": SUBNET_B6}])
        return eth0, net1

    def merged_result(self):
        return merge([self.results["eth0"], self.results["net1"]])

    def address(self, ifname, family=4):
        """The pod's first address of ``family`` on ``ifname`` (from its attachment's result)."""
        return [i["address"].split("/")[0] for i in self.results[ifname]["ips"]
                if (":" in i["address"]) == (family == 6)][0]

    # -- the finalizer ---------------------------------------------------------------------------------------------

    def finalizer(self, command, config, netns="pod", ifname="eth0"):
        path = self.pod_path if netns == "pod" else netns
        return cni(binary(), command, config, path, ifname, self.cid)

    # -- kernel state --------------------------------------------------------------------------------------------

    def rules(self):
        """The pod's IPv4 rules as ``(priority, src, table)``, the kernel's own included."""
        out = []
        for r in ip_json("-4", "rule", "show", ns=self.pod):
            src = r.get("src", "all")
            if src != "all" and "srclen" in r:
                src = "%s/%d" % (src, r["srclen"])
            out.append((r.get("priority"), src, str(r.get("table"))))
        return out

    def rules6(self):
        return [(r.get("priority"), r.get("src", "all"), str(r.get("table"))) for r in ip_json("-6", "rule", "show", ns=self.pod)]

    def table(self, table, family="-4"):
        """``ip route show table`` as a set of ``(dst, gateway, dev, prefsrc, scope)``."""
        p = run(["ip", "-n", self.pod, "-j", family, "route", "show", "table", str(table)], check=False)
        if p.returncode != 0 or not p.stdout.strip():
            return set()
        return {(r.get("dst"), r.get("gateway"), r.get("dev"), r.get("prefsrc"), r.get("scope"))
                for r in json.loads(p.stdout)}

    # -- teardown ------------------------------------------------------------------------------------------------

    def cleanup(self):
        errors = []
        for config, ifname in reversed(self.attachments):
            try:
                netns = self.pod_path if os.path.exists(self.pod_path) else ""
                out = cni(self.bridge_binary, "DEL", config, netns, ifname, self.cid)
                if not out.ok:
                    errors.append("bridge DEL %s: %s" % (ifname, out.msg))
            except Exception as e:  # pragma: no cover - reported, never raised
                errors.append(str(e))
        self.attachments = []
        for ns in (self.pod, self.peer):
            if os.path.exists(netns_path(ns)):
                ip("netns", "del", ns, check=False)
        for name in [self.bridge_a, self.bridge_b] + [h for _, h in self.veths]:
            if link_exists(name):
                ip("link", "del", name, check=False)
        return errors
