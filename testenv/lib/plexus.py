"""A small API to drive the ``plexus`` CNI plugin from Python tests.

* ``run(...)``: one invocation with env + stdin -> ``Outcome(code, out, stdout, stderr)``.
* config builders: ``bridge()``, ``macvlan()``, ``host_local()``, ``fake()``, ``conflist()``, ``plexus_config()``.
* cache inspection: ``Cache(cni_dir)`` (plan files under ``attachments/``, cniCacheV1 entries under ``results/``)
  and ``reservations(data_dir)`` (host-local's per-IP files).
* ``loads_literal()``: JSON parsing that keeps number literals as text, to compare values byte for byte.
"""

import base64
import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading

from testenv.lib import netns as nl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEBIAN_CNI_DIR = "/usr/lib/cni"
FAKE = "plexus-test-delegate"
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def build_bin_dir():
    """``PLEXUS_BIN_DIR``, else ``swift build --show-bin-path`` in the repository root."""
    d = os.environ.get("PLEXUS_BIN_DIR")
    if d:
        return d
    p = subprocess.run(["swift", "build", "--show-bin-path"], cwd=REPO, stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True, timeout=300, check=True)
    return p.stdout.strip()


def install_binaries(dest, names=("plexus", FAKE, "plexus-passthru", "plexus-policy-route")):
    """Copies ``names`` (default ``plexus``, the fake delegate, and the plugins Plexus ships for auxiliary chains and
    finalizers) from the build into ``dest`` (a rebuild during the run cannot change them)."""
    src = build_bin_dir()
    os.makedirs(dest, exist_ok=True)
    for b in names:
        s = os.path.join(src, b)
        if not os.access(s, os.X_OK):
            raise FileNotFoundError("%s not built (run: swift build --product %s)" % (s, b))
        shutil.copy2(s, os.path.join(dest, b))
    return dest


# ----------------------------------------------------------------------------------------------------------------
# Running plexus
# ----------------------------------------------------------------------------------------------------------------

class Outcome:
    def __init__(self, code, stdout, stderr):
        self.code = code
        self.stdout = stdout
        self.stderr = stderr
        try:
            self.out = json.loads(stdout) if stdout.strip() else None
        except ValueError:
            self.out = None

    @property
    def ok(self):
        return self.code == 0

    @property
    def err_code(self):
        return (self.out or {}).get("code")

    @property
    def msg(self):
        o = self.out or {}
        return "%s %s" % (o.get("msg", ""), o.get("details", ""))

    def __repr__(self):
        return "Outcome(exit=%s, stdout=%r, stderr=%r)" % (self.code, self.stdout[:2000], self.stderr[-3000:])


def _stdin_bytes(config):
    if isinstance(config, bytes):
        return config
    if isinstance(config, str):
        return config.encode()
    return json.dumps(config).encode()


def make_env(command, cid=None, netns=None, ifname=None, cni_args=None, cni_path=None, unset=(), extra=None):
    env = {"PATH": CLEAN_PATH, "CNI_COMMAND": command}
    for k, v in (("CNI_CONTAINERID", cid), ("CNI_NETNS", netns), ("CNI_IFNAME", ifname),
                 ("CNI_ARGS", cni_args), ("CNI_PATH", cni_path)):
        if v is not None:
            env[k] = v
    for k in unset:
        env.pop(k, None)
    env.update(extra or {})
    return env


class Plexus:
    """Runs one plexus binary with a default ``CNI_PATH`` (the directory holding the fake delegate)."""

    def __init__(self, bin_dir):
        self.bin_dir = bin_dir
        self.binary = os.path.join(bin_dir, "plexus")
        self.cni_path = bin_dir

    def env(self, command, cid=None, netns=None, ifname="eth0", cni_args=None, cni_path="default", unset=(),
            extra=None):
        return make_env(command, cid, netns, ifname, cni_args, self.cni_path if cni_path == "default" else cni_path,
                        unset, extra)

    def run(self, command, config, cid=None, netns=None, ifname="eth0", cni_args=None, cni_path="default",
            unset=(), extra=None, timeout=180):
        env = self.env(command, cid, netns, ifname, cni_args, cni_path, unset, extra)
        p = subprocess.run([self.binary], input=_stdin_bytes(config), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        return Outcome(p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))

    def popen(self, command, config, cid=None, netns=None, ifname="eth0", cni_args=None, cni_path="default",
              unset=(), extra=None):
        """Starts plexus without waiting; write stdin and close it here (the caller owns the process)."""
        env = self.env(command, cid, netns, ifname, cni_args, cni_path, unset, extra)
        p = subprocess.Popen([self.binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env)
        p.stdin.write(_stdin_bytes(config))
        p.stdin.close()
        return p

    # shorthands
    def add(self, config, cid, netns, **kw):
        return self.run("ADD", config, cid, netns_path_of(netns), **kw)

    def delete(self, config, cid, netns, **kw):
        return self.run("DEL", config, cid, netns_path_of(netns) if netns else netns, **kw)

    def check(self, config, cid, netns, **kw):
        return self.run("CHECK", config, cid, netns_path_of(netns), **kw)


def netns_path_of(ns):
    if ns is None or ns == "" or ns.startswith("/"):
        return ns
    return "/var/run/netns/" + ns


# ----------------------------------------------------------------------------------------------------------------
# Configuration builders
# ----------------------------------------------------------------------------------------------------------------

def host_local(subnet, data_dir, **extra):
    ipam = {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": subnet}]]}
    ipam.update(extra)
    return ipam


def bridge(bridge_name, subnet, data_dir, **extra):
    """A bridge plugin on ``bridge_name`` without gateway, masquerade or forwarding (host untouched)."""
    p = {"type": "bridge", "bridge": bridge_name, "isGateway": False, "isDefaultGateway": False, "ipMasq": False,
         "hairpinMode": False, "ipam": host_local(subnet, data_dir)}
    p.update(extra)
    return p


def macvlan(master, subnet, data_dir, **extra):
    p = {"type": "macvlan", "master": master, "mode": "bridge", "ipam": host_local(subnet, data_dir)}
    p.update(extra)
    return p


def fake(**keys):
    p = {"type": FAKE}
    p.update(keys)
    return p


def conflist(name, version, plugins, **extra):
    c = {"cniVersion": version, "name": name, "plugins": list(plugins)}
    c.update(extra)
    return c


def conf(name, version, plugin):
    """A single-plugin ``.conf`` object."""
    c = dict(plugin)
    c["cniVersion"] = version
    c["name"] = name
    return c


def plexus_config(version, cni_dir, conf_dir, delegates=None, name="pxnet", bin_dir=DEBIAN_CNI_DIR, **extra):
    c = {"cniVersion": version, "name": name, "type": "plexus", "cniDir": cni_dir, "confDir": conf_dir,
         "binDir": bin_dir, "logLevel": "debug"}
    if delegates is not None:
        c["delegates"] = delegates
    c.update(extra)
    return c


# ----------------------------------------------------------------------------------------------------------------
# Cache inspection
# ----------------------------------------------------------------------------------------------------------------

class Cache:
    def __init__(self, cni_dir):
        self.cni_dir = cni_dir
        self.attachments_dir = os.path.join(cni_dir, "attachments")
        self.results_dir = os.path.join(cni_dir, "results")

    @staticmethod
    def _ls(d):
        try:
            return sorted(f for f in os.listdir(d) if not f.startswith("."))
        except FileNotFoundError:
            return []

    def plan_files(self):
        return self._ls(self.attachments_dir)

    def result_files(self):
        return self._ls(self.results_dir)

    def files(self):
        """Every plan and result file (lock files under locks/ are ignored)."""
        return ["attachments/" + f for f in self.plan_files()] + ["results/" + f for f in self.result_files()]

    def plan_path(self, name, cid, ifname):
        return os.path.join(self.attachments_dir, "%s-%s-%s" % (name, cid, ifname))

    def result_path(self, network, cid, ifname):
        return os.path.join(self.results_dir, "%s-%s-%s" % (network, cid, ifname))

    def plan(self, name, cid, ifname):
        with open(self.plan_path(name, cid, ifname)) as f:
            return json.load(f)

    def result_entry(self, network, cid, ifname):
        with open(self.result_path(network, cid, ifname)) as f:
            return json.load(f)

    def files_of(self, cid):
        return [f for f in self.files() if ("-%s-" % cid) in f]


def entry_config(entry):
    """The decoded ``config`` bytes of a cniCacheV1 entry."""
    return base64.b64decode(entry["config"])


def reservations(data_dir, network=None):
    """host-local reservations: ``{network: {ip: container-id-line}}`` for files named like an IP."""
    out = {}
    try:
        nets = [network] if network else os.listdir(data_dir)
    except FileNotFoundError:
        return out
    for net in nets:
        d = os.path.join(data_dir, net)
        if not os.path.isdir(d):
            continue
        for f in os.listdir(d):
            try:
                ipaddress.ip_address(f)
            except ValueError:
                continue
            with open(os.path.join(d, f)) as fh:
                out.setdefault(net, {})[f] = fh.read().splitlines()[0] if os.path.getsize(os.path.join(d, f)) else ""
    return out


def reservation_count(data_dir):
    return sum(len(v) for v in reservations(data_dir).values())


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------

def result_ips(result):
    return sorted(i["address"] for i in result.get("ips", []))


def host_side_interfaces(result, bridge_name=None):
    """Interfaces of a result that live in the host namespace (bridge plugin: the host veth), minus the bridge."""
    return sorted(i["name"] for i in result.get("interfaces", [])
                  if not i.get("sandbox") and i.get("name") != bridge_name)


# ----------------------------------------------------------------------------------------------------------------
# Literal-preserving JSON
# ----------------------------------------------------------------------------------------------------------------

class Num(str):
    """A JSON number kept as its source text."""

    def __repr__(self):
        return "Num(%s)" % str.__repr__(self)


def loads_literal(text):
    if isinstance(text, bytes):
        text = text.decode()
    return json.loads(text, parse_int=Num, parse_float=Num)


def read_records(record_dir, command=None, ifname=None):
    """The fake delegate's recordings (``{env, stdin}``), in call order, stdin parsed literally."""
    out = []
    try:
        names = os.listdir(record_dir)
    except FileNotFoundError:
        return out

    def seq(n):
        return int(n.split("-", 1)[0])

    for n in sorted(names, key=seq):
        parts = n[:-len(".json")].split("-")
        # <seq>-<pid>-<COMMAND>-<ifname>.json
        cmd, ifn = parts[2], "-".join(parts[3:])
        if command and cmd != command:
            continue
        if ifname and ifn != ifname:
            continue
        with open(os.path.join(record_dir, n), "rb") as f:
            rec = loads_literal(f.read())
        rec["_file"] = n
        rec["_command"] = cmd
        out.append(rec)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Scenario helpers (used through the fixtures in testenv/conftest.py)
# ----------------------------------------------------------------------------------------------------------------

_subnets = itertools.cycle(range(20, 100))   # 10.231.20-99.0/24 (10.231.1-19 belong to another suite)
_subnet_lock = threading.Lock()
_cid_counter = itertools.count(1)


class Env:
    """One test's sandbox: directories, kernel objects, and the plexus runner."""

    def __init__(self, tmp, bin_dir):
        self.tmp = str(tmp)
        self.bin_dir = bin_dir
        self.px = Plexus(bin_dir)
        self.net = nl.Tracker()
        self.cni_dir = self.dir("cache")
        self.conf_dir = self.dir("conf")
        self.data_dir = self.dir("ipam")
        self.rec_dir = os.path.join(self.tmp, "records")
        self.state_dir = self.dir("state")
        self.cache = Cache(self.cni_dir)
        self.procs = []       # Popen objects to kill on teardown
        self.pids = []        # raw pids (orphaned delegates) to kill on teardown

    def dir(self, name):
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        return d

    # names and resources ------------------------------------------------------------------------------------
    def subnet(self):
        with _subnet_lock:
            return "10.231.%d.0/24" % next(_subnets)

    def cid(self, tag="c"):
        return "pxt-%s-%s-%d" % (nl.RUN_TAG, tag, next(_cid_counter))

    def netns(self):
        return self.net.netns_add()

    def bridge(self):
        return self.net.bridge_add()

    def veth(self):
        return self.net.veth_add()

    def config(self, version, delegates=None, **extra):
        return plexus_config(version, self.cni_dir, self.conf_dir, delegates, **extra)

    # state ------------------------------------------------------------------------------------------------------
    def cache_files(self):
        return self.cache.files()

    def reservations(self):
        return reservations(self.data_dir)

    def assert_clean(self, netns=(), bridges=(), host_links=()):
        """Nothing left: cache files, host-local reservations, links in the pods' netns, bridge ports, host links."""
        problems = []
        if self.cache_files():
            problems.append("cache files left: %s" % self.cache_files())
        if self.reservations():
            problems.append("host-local reservations left: %s" % self.reservations())
        for ns in netns:
            if nl.netns_exists(ns):
                extra = sorted(n for n in nl.links(ns) if n != "lo")
                if extra:
                    problems.append("links left in netns %s: %s" % (ns, extra))
        # Host links first: links_left waits for the kernel's asynchronous destruction of a deleted netns' veths,
        # which also unplugs them from their bridges.
        for l in nl.links_left(host_links):
            problems.append("host link %s still exists" % l)
        for b in bridges:
            ports = nl.bridge_ports(b)
            if ports:
                problems.append("ports left on bridge %s: %s" % (b, ports))
        assert not problems, "; ".join(problems)

    def kill_leftovers(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(timeout=10)
                except Exception:
                    pass
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


POD_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=pxns;K8S_POD_NAME=%s;K8S_POD_UID=%s"


class Pod:
    """A sandbox: its netns, container ID and the runtime's CNI_ARGS (K8S_POD_*)."""

    def __init__(self, env, name="pxpod"):
        self.env = env
        self.name = name
        self.ns = env.netns()
        self.cid = env.cid(name[-6:])
        self.args = POD_ARGS % (name, self.cid)

    @property
    def netns_path(self):
        return netns_path_of(self.ns)

    def run(self, command, config, ifname="eth0", **kw):
        kw.setdefault("cni_args", self.args)
        netns = kw.pop("netns", self.netns_path)
        return self.env.px.run(command, config, self.cid, netns, ifname=ifname, **kw)

    def add(self, config, **kw):
        return self.run("ADD", config, **kw)

    def delete(self, config, **kw):
        return self.run("DEL", config, **kw)

    def check(self, config, **kw):
        return self.run("CHECK", config, **kw)

    def links(self):
        return sorted(n for n in nl.links(self.ns) if n != "lo")

    def addresses(self):
        return nl.addresses(self.ns)


class ThreeNetworks:
    """eth0 = bridge, net1 = macvlan on a px veth end, net2 = a second bridge; all with host-local."""

    def __init__(self, env, versions=("1.0.0", "1.0.0", "1.0.0"), names=("pxa", "pxb", "pxc")):
        self.env = env
        self.bridges = [env.bridge(), env.bridge()]
        self.master, _ = env.veth()
        self.subnets = [env.subnet() for _ in range(3)]
        self.names = list(names)
        self.versions = list(versions)
        self.lists = [
            conflist(names[0], versions[0], [bridge(self.bridges[0], self.subnets[0], env.data_dir)]),
            conflist(names[1], versions[1], [macvlan(self.master, self.subnets[1], env.data_dir)]),
            conflist(names[2], versions[2], [bridge(self.bridges[1], self.subnets[2], env.data_dir)]),
        ]
        self.ifnames = ["eth0", "net1", "net2"]

    def host_links_of(self, pod):
        """Host-side veth names recorded in the cached bridge results of ``pod``."""
        out = []
        for i in (0, 2):
            p = self.env.cache.result_path(self.names[i], pod.cid, self.ifnames[i])
            if os.path.exists(p):
                e = self.env.cache.result_entry(self.names[i], pod.cid, self.ifnames[i])
                out += host_side_interfaces(e.get("result", {}), self.bridges[0 if i == 0 else 1])
        return out
