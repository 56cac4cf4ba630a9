"""Plexus end to end under containerd 1.6's CRI (see testenv/cri/PLEXUS.md).

``PlexusCRI(workdir)`` wires three things together, all private to ``workdir``:

* the test Kubernetes API server (``testenv/lib/kubeapi.KubeAPI``) with a tokenFile kubeconfig;
* a private containerd (``testenv/lib/cri.Containerd``) whose CNI bin dir holds copies of ``plexus`` and
  ``plexus-kubeconfig`` plus links to Debian's reference plugins, and whose ONLY CNI config is a conflist with
  the single plugin ``plexus`` (cluster network = a bridge + host-local + portmap conflist file);
* helpers to create host-side resources for NADs (px veth masters, bridge networks), to run pods the way a
  kubelet would (pod object on the API server with the same name/namespace/uid as the sandbox config), to
  parse Plexus' log (``command done ... ms=``) and to list what a sandbox may leave behind.

Every host link is named ``pxq<4 hex>...`` (``LINK_PREFIX``); subnets are 10.231.150-199.x/24; bridges use
``isGateway: false, ipMasq: false`` and portmap ``snat: false``, so ip_forward is never touched.
Root only.
"""

import ipaddress
import json
import os
import random
import re
import shutil
import subprocess
import threading
import time

from testenv.lib import cri
from testenv.lib.kubeapi import KubeAPI

LINK_PREFIX = "pxq"
SUBNET_THIRD_OCTETS = range(150, 200)
NETWORKS_ANNOTATION = "k8s.v1.cni.cncf.io/networks"
STATUS_ANNOTATION = "k8s.v1.cni.cncf.io/network-status"
LIBCNI_CACHE = "/var/lib/cni/results"
REQUIRED_PLUGINS = ("bridge", "host-local", "portmap", "macvlan", "loopback")


def plexus_build_dir():
    """``PLEXUS_BIN_DIR`` or ``swift build --show-bin-path`` (binaries are copied, so a rebuild mid-run is harmless)."""
    d = os.environ.get("PLEXUS_BIN_DIR")
    if d:
        return d
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = subprocess.run(["swift", "build", "--show-bin-path"], cwd=repo, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True, timeout=300, check=True)
    return p.stdout.strip()


def run(*cmd, check=False, ns=None):
    if ns:
        cmd = ("nsenter", "--net=" + ns, "--") + tuple(cmd)
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(map(str, cmd)), r.returncode, r.stderr.strip()))
    return r


def ip_json(*args, ns=None):
    out = run("ip", "-j", *args, check=True, ns=ns).stdout
    return json.loads(out) if out.strip() else []


def link_exists(name):
    return run("ip", "link", "show", "dev", name).returncode == 0


def host_links(prefix=LINK_PREFIX):
    return sorted(l["ifname"] for l in ip_json("link", "show") if l.get("ifname", "").startswith(prefix))


def bridge_ports(bridge):
    r = run("ip", "-o", "link", "show", "master", bridge)
    return r.stdout.strip().splitlines() if r.returncode == 0 else []


def ip_forward():
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        return f.read().strip()


def iptables_nat():
    return run("iptables", "-w", "-t", "nat", "-S", check=True).stdout


def is_ip(s):
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def sweep_stale_links():
    """Remove ``pxq*`` host links left by a crashed earlier run of this suite (this prefix is ours only)."""
    removed = []
    for n in host_links():
        if run("ip", "link", "del", n).returncode == 0:
            removed.append(n)
    return removed


# ----------------------------------------------------------------------------------------------------------------
# Plexus log
# ----------------------------------------------------------------------------------------------------------------

_KV = re.compile(r'([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|\S+)')
_LINE = re.compile(r"^(\S+) \[(\w+)\] (.*)$")


def parse_log_line(line):
    """``<ts> [level] message k=v k="v w"`` -> {"ts", "level", "msg", **kv} or None."""
    m = _LINE.match(line.rstrip("\n"))
    if not m:
        return None
    rest = m.group(3)
    first = _KV.search(rest)
    msg = rest[:first.start()].strip() if first else rest.strip()
    rec = {"ts": m.group(1), "level": m.group(2), "msg": msg}
    for k, v in _KV.findall(rest[first.start():] if first else ""):
        if v.startswith('"'):
            try:
                v = json.loads(v)
            except ValueError:
                v = v[1:-1]
        rec[k] = v
    return rec


# ----------------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------------

class SubnetPool:
    """Distinct 10.231.<150..199>.0/24 subnets for one run."""

    def __init__(self):
        self._free = random.sample(list(SUBNET_THIRD_OCTETS), len(SUBNET_THIRD_OCTETS))
        self._lock = threading.Lock()

    def take(self):
        with self._lock:
            return ipaddress.ip_network("10.231.%d.0/24" % self._free.pop())


class HostLocalNet:
    """A network using host-local with its dataDir under the workdir (reservations are IP-named files)."""

    def __init__(self, env, name, subnet):
        self.env, self.name, self.subnet = env, name, subnet
        self.ipam_dir = os.path.join(env.workdir, "ipam")

    def ipam(self):
        return {"type": "host-local", "ranges": [[{"subnet": str(self.subnet)}]], "dataDir": self.ipam_dir}

    def reservations(self):
        d = os.path.join(self.ipam_dir, self.name)
        return sorted(f for f in os.listdir(d) if is_ip(f)) if os.path.isdir(d) else []

    def reservations_of(self, sandbox_id):
        """IPs host-local reserved for this container id (each reservation file holds the id + ifname)."""
        d = os.path.join(self.ipam_dir, self.name)
        out = []
        for f in self.reservations():
            try:
                with open(os.path.join(d, f)) as fh:
                    if sandbox_id in fh.read():
                        out.append(f)
            except OSError:
                pass
        return out


class BridgeNet(HostLocalNet):
    """bridge (no gateway, no masquerade) + host-local [+ portmap]; the bridge is deleted by cleanup()."""

    def __init__(self, env, name, tag, portmap=False):
        super().__init__(env, name, env.subnets.take())
        self.bridge = "%sb%s%s" % (LINK_PREFIX, env.tag, tag)[:15]
        self.portmap = portmap

    def plugins(self):
        ps = [{"type": "bridge", "bridge": self.bridge, "isGateway": False, "ipMasq": False, "hairpinMode": False,
               "ipam": self.ipam()}]
        if self.portmap:
            ps.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": False})
        return ps

    def conflist(self):
        return {"cniVersion": "1.0.0", "name": self.name, "plugins": self.plugins()}

    def ports(self):
        return bridge_ports(self.bridge)

    def cleanup(self):
        if link_exists(self.bridge):
            run("ip", "link", "del", self.bridge)


class MacvlanNet(HostLocalNet):
    """macvlan (mode bridge) on a px veth master created in the host namespace (its peer stays down-less)."""

    def __init__(self, env, name, tag):
        super().__init__(env, name, env.subnets.take())
        self.master = "%sv%s%sa" % (LINK_PREFIX, env.tag, tag)[:15]
        self.peer = self.master[:-1] + "b"
        run("ip", "link", "add", self.master, "type", "veth", "peer", "name", self.peer, check=True)
        run("ip", "link", "set", self.master, "up", check=True)
        run("ip", "link", "set", self.peer, "up", check=True)

    def config(self):
        return {"cniVersion": "1.0.0", "name": self.name, "type": "macvlan", "master": self.master,
                "mode": "bridge", "ipam": self.ipam()}

    def macvlans_on_master(self):
        """macvlan links on the master still in the host namespace (there should never be any)."""
        return [l["ifname"] for l in ip_json("-d", "link", "show")
                if l.get("link") == self.master and (l.get("linkinfo") or {}).get("info_kind") == "macvlan"]

    def cleanup(self):
        if link_exists(self.master):
            run("ip", "link", "del", self.master)


# ----------------------------------------------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------------------------------------------

class PlexusCRI:
    """Private API server + containerd with Plexus as its only CNI config. ``start()`` / ``stop()``."""

    NETWORK_NAME = "pxcri-plexus"          # the conflist containerd loads (libcni cache: <name>-<sid>-eth0)
    CLUSTER_NAME = "pxq-cluster"           # the cluster network's name (network-status "name" of eth0)

    NODE_NAME = "pxq-node"

    def __init__(self, workdir, namespace="pxns", log_level="info", daemon=False):
        """``daemon``: also run ``plexus-daemon`` for this node; the conflist names its socket, so every ADD goes
        through it (and DEL stays in the plugin)."""
        self.use_daemon = daemon
        self.daemon = None
        self.workdir = os.path.abspath(workdir)
        self.namespace = namespace
        self.log_level = log_level
        self.tag = "%04x" % random.getrandbits(16)
        self.subnets = SubnetPool()
        self.cache_dir = os.path.join(self.workdir, "cache")
        self.conf_dir = os.path.join(self.workdir, "net.d-plexus")
        self.log_file = os.path.join(self.workdir, "plexus.log")
        self.kubeconfig = os.path.join(self.workdir, "kubeconfig")
        self.cluster_file = os.path.join(self.workdir, "cluster.conflist")
        self.kube = None
        self.ctrd = None
        self.cluster = None
        self.nets = []                      # host resources to clean up (BridgeNet / MacvlanNet)
        self.api_pods = set()               # (ns, name) created on the API server
        self.build_dir = None

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        os.makedirs(self.conf_dir, exist_ok=True)
        try:
            self.kube = KubeAPI(os.path.join(self.workdir, "kube"))
            self.kube.write_kubeconfig(self.kubeconfig, use_token_file=True)
            self.kube.create_namespace(self.namespace)
            self.ctrd = cri.Containerd(self.workdir)
            self.build_dir = plexus_build_dir()
            for b in ("plexus", "plexus-kubeconfig"):
                src = os.path.join(self.build_dir, b)
                if not os.access(src, os.X_OK):
                    raise FileNotFoundError("%s not built (swift build --product %s)" % (src, b))
                self.ctrd.add_cni_plugin(src, copy=True)
            for p in sorted(os.listdir(cri.DEBIAN_CNI_DIR)):
                if os.access(os.path.join(cri.DEBIAN_CNI_DIR, p), os.X_OK):
                    self.ctrd.add_cni_plugin(p)
            self.cluster = BridgeNet(self, self.CLUSTER_NAME, "c", portmap=True)
            self.nets.append(self.cluster)
            with open(self.cluster_file, "w") as f:
                json.dump(self.cluster.conflist(), f, indent=2)
            if self.use_daemon:
                from types import SimpleNamespace
                from testenv.lib.daemon import Daemon
                self.kube.install_nad_crd()       # before the daemon lists NADs (else it backs off until it exists)
                self.daemon = Daemon(SimpleNamespace(tmp=self.workdir, bin_dir=self.build_dir, kubeconfig=self.kubeconfig),
                                     node=self.NODE_NAME)
                self.daemon.start()
            self.ctrd.start()
            self.ctrd.set_cni_config(self.conflist())
        except BaseException:
            self.stop()
            raise
        return self

    def conflist(self):
        return {"cniVersion": "1.0.0", "name": self.NETWORK_NAME, "plugins": [{
            "type": "plexus", "cniDir": self.cache_dir, "confDir": self.conf_dir, "binDir": self.ctrd.bin_dir,
            "kubeconfig": self.kubeconfig, "logFile": self.log_file, "logLevel": self.log_level,
            "logToStderr": False,
            "capabilities": {"portMappings": True, "bandwidth": True, "io.kubernetes.cri.pod-annotations": True},
            "clusterNetwork": self.cluster_file, **({"daemonSocket": self.daemon.socket} if self.daemon else {})}]}

    def stop(self):
        """Tear everything down; returns the list of problems (containerd leftovers, cleanup failures)."""
        problems = []
        if self.daemon is not None:
            if os.path.exists(os.path.join(self.cache_dir, "daemon-unavailable")):
                problems.append("ADDs fell back to the plugin: the daemon did not answer")
            if self.daemon.proc and self.daemon.proc.poll() is not None:
                problems.append("plexus-daemon exited early: %s" % self.daemon.read_log()[-2000:])
        if self.ctrd is not None:
            try:
                problems += self.ctrd.stop()
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                problems.append("containerd stop: %r" % e)
        for n in reversed(self.nets):
            try:
                n.cleanup()
            except Exception as e:  # noqa: BLE001
                problems.append("cleanup %s: %r" % (n.name, e))
        if self.daemon is not None:
            self.daemon.stop()
        if self.kube is not None:
            self.kube.close()
        return problems

    def client(self, **kw):
        return self.ctrd.client(**kw)

    # -- NADs and pods ----------------------------------------------------------------------------------------

    def macvlan_nad(self, name, tag):
        net = MacvlanNet(self, name, tag)
        self.nets.append(net)
        self.kube.apply_nad(self.namespace, name, net.config())
        return net

    def bridge_nad(self, name, tag):
        net = BridgeNet(self, name, tag)
        self.nets.append(net)
        self.kube.apply_nad(self.namespace, name, {"cniVersion": "1.0.0", "name": name,
                                                   "plugins": net.plugins()})
        return net

    def remove_net(self, net):
        net.cleanup()
        self.nets.remove(net)

    @staticmethod
    def new_uid():
        return "pxq-uid-%012x" % random.getrandbits(48)

    def create_api_pod(self, name, networks=None, uid=None):
        uid = uid or self.new_uid()
        ann = {NETWORKS_ANNOTATION: networks} if networks else {}
        self.kube.create_pod(self.namespace, name, ann, uid=uid, create_namespace=False,
                             node_name=self.NODE_NAME if self.daemon else None)
        self.api_pods.add((self.namespace, name))
        return uid

    def delete_api_pod(self, name):
        self.kube.delete_pod(self.namespace, name)
        self.api_pods.discard((self.namespace, name))

    def run_pod(self, name, networks=None, client=None, port_mappings=None):
        """What a kubelet does: the pod exists on the API server (same name/namespace/uid), then RunPodSandbox
        with the pod's annotations. Returns (sandbox id, uid, seconds spent in RunPodSandbox)."""
        uid = self.create_api_pod(name, networks)
        cl = client or self.client()
        ann = {NETWORKS_ANNOTATION: networks} if networks else {}
        t0 = time.monotonic()
        sid = cl.run_pod_sandbox(name, self.namespace, uid, annotations=ann, port_mappings=port_mappings,
                                 labels={"app": "pxq"})
        return sid, uid, time.monotonic() - t0

    def network_status(self, pod_name):
        ann = self.kube.pod_annotations(self.namespace, pod_name) or {}
        v = ann.get(STATUS_ANNOTATION)
        return None if v is None else json.loads(v)

    # -- Plexus log -----------------------------------------------------------------------------------------

    def log_records(self, container=None, cmd=None):
        try:
            with open(self.log_file) as f:
                lines = f.readlines()
        except OSError:
            return []
        out = []
        for line in lines:
            rec = parse_log_line(line)
            if rec is None:
                continue
            if container is not None and rec.get("container") != container:
                continue
            if cmd is not None and rec.get("cmd") != cmd:
                continue
            out.append(rec)
        return out

    def command_results(self, container, cmd):
        """[("done", ms) | ("failed", error)] for each invocation of ``cmd`` on ``container``, in order."""
        out = []
        for r in self.log_records(container, cmd):
            if r["msg"] == "command done":
                out.append(("done", float(r.get("ms", "nan"))))
            elif r["msg"] == "command failed":
                out.append(("failed", r.get("error", "")))
        return out

    def add_ms(self, container):
        """Plexus' own time for the (single) successful ADD of ``container``, from ``command done ... ms=``."""
        done = [ms for kind, ms in self.command_results(container, "ADD") if kind == "done"]
        return done[-1] if done else None

    # -- wrappers -------------------------------------------------------------------------------------------

    def wrap_plexus(self):
        """Replace ``plexus`` in the CNI bin dir by a /bin/sh wrapper that records, per call, the command,
        container id, CNI_NETNS ('-' when empty/unset) and exit code; returns a callable reading the records.
        ``unwrap_plexus()`` restores the binary. Only for scenarios that do not measure latency."""
        real = os.path.join(self.ctrd.bin_dir, "plexus")
        keep = os.path.join(self.workdir, "plexus.real")
        rec = os.path.join(self.workdir, "plexus-calls.log")
        if not os.path.exists(keep):
            shutil.copy2(real, keep)
        script = ("#!/bin/sh\n%s\nrc=$?\nprintf '%%s %%s %%s %%s\\n' \"$CNI_COMMAND\" \"$CNI_CONTAINERID\" "
                  "\"${CNI_NETNS:--}\" \"$rc\" >> %s\nexit $rc\n" % (_sh_quote(keep), _sh_quote(rec)))
        tmp = real + ".pxq-tmp"
        with open(tmp, "w") as f:
            f.write(script)
        os.chmod(tmp, 0o755)
        os.replace(tmp, real)

        def calls(container=None):
            try:
                with open(rec) as f:
                    rows = [l.split() for l in f if l.strip()]
            except OSError:
                return []
            return [{"cmd": r[0], "container": r[1], "netns": "" if r[2] == "-" else r[2], "rc": int(r[3])}
                    for r in rows if len(r) == 4 and (container is None or r[1] == container)]
        return calls

    def unwrap_plexus(self):
        keep = os.path.join(self.workdir, "plexus.real")
        if os.path.exists(keep):
            self.ctrd.add_cni_plugin(keep, name="plexus", copy=True)

    # -- leftovers ------------------------------------------------------------------------------------------

    def plexus_cache_files(self, container=None):
        """Files under <cniDir>/attachments and <cniDir>/results (locks/ is ignored), optionally of one id."""
        out = []
        for sub in ("attachments", "results"):
            d = os.path.join(self.cache_dir, sub)
            if os.path.isdir(d):
                out += ["%s/%s" % (sub, f) for f in sorted(os.listdir(d))
                        if container is None or container in f]
        return out

    def libcni_cache_files(self, container):
        if not os.path.isdir(LIBCNI_CACHE):
            return []
        return sorted(f for f in os.listdir(LIBCNI_CACHE) if container in f)

    def containerd_paths_of(self, container):
        """Paths under containerd's root and state whose name contains the sandbox id (its CRI store, shim
        bundle, ...)."""
        out = []
        for top in (self.ctrd.root, self.ctrd.state, self.ctrd.runc_root):
            for dirpath, dirnames, filenames in os.walk(top):
                for n in dirnames + filenames:
                    if container in n:
                        out.append(os.path.join(dirpath, n))
        return out

    def leftovers(self, container, netns=None):
        """Everything a removed sandbox may leave on the node, as {what: [...]} (only non-empty entries)."""
        cl = self.client()
        found = {
            "sandbox": [s["id"] for s in cl.list_pod_sandbox() if s["id"] == container],
            "plexus cache": self.plexus_cache_files(container),
            "libcni cache": self.libcni_cache_files(container),
            "containerd root/state": self.containerd_paths_of(container),
            "netns": [netns] if netns and os.path.exists(netns) else [],
            "mounts": [l for l in _read("/proc/self/mountinfo").splitlines() if container in l],
        }
        for n in self.nets:
            if isinstance(n, BridgeNet):
                found["ports on %s" % n.bridge] = n.ports()
            if isinstance(n, MacvlanNet):
                found["macvlans on %s" % n.master] = n.macvlans_on_master()
            found["host-local %s" % n.name] = n.reservations_of(container)
        return {k: v for k, v in found.items() if v}

    def node_leftovers(self):
        """Node-wide: any sandbox, any cache file, any reservation, any bridge port (when no pod should exist)."""
        found = {"sandboxes": [s["id"] for s in self.client().list_pod_sandbox()],
                 "plexus cache": self.plexus_cache_files()}
        for n in self.nets:
            if isinstance(n, BridgeNet):
                found["ports on %s" % n.bridge] = n.ports()
            if isinstance(n, MacvlanNet):
                found["macvlans on %s" % n.master] = n.macvlans_on_master()
            found["host-local %s" % n.name] = n.reservations()
        return {k: v for k, v in found.items() if v}


def _read(path):
    with open(path) as f:
        return f.read()


def _sh_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def sandbox_id_from_error(text):
    m = re.search(r'sandbox \\?"([0-9a-f]{64})\\?"', text)
    return m.group(1) if m else None
