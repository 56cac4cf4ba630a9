"""Scenario helpers and fixtures for the Kubernetes end-to-end tests (testenv/tests/test_k8s_*.py).

Plexus runs as root in real network namespaces with Debian's reference plugins (/usr/lib/cni), against the test
API server (testenv/lib/kubeapi.py). Everything here reuses the core suite's helpers (testenv/lib/plexus.py and
netns.py: ``pxt<tag>*`` names, swept by the ``px_session`` fixture of testenv/conftest.py), but with:

* a bin dir holding ``plexus``, ``plexus-kubeconfig`` (the YAML kubeconfig converter, looked up next to plexus)
  and ``plexus-test-delegate``;
* subnets 10.231.100-149.0/24 only (the core suite owns 10.231.20-99);
* one private API server per test (``kube``), and pods that exist both as a netns and as an API object.

Use from a test module::

    from testenv.lib.k8s_scenarios import k8s_bins, kube, kenv  # noqa: F401  (pytest fixtures)
"""

import itertools
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from testenv.lib import netns as nl
from testenv.lib import plexus as px
from testenv.lib.kubeapi import KUBECTL, NAD_CRD_DIR, KubeAPI

REPO = px.REPO
WORK_DIR = os.path.join(REPO, "testenv", ".work")
FIGURES_PATH = os.path.join(WORK_DIR, "k8s-figures.json")
BINARIES = ("plexus", "plexus-kubeconfig", "plexus-admin", "plexus-daemon", px.FAKE)

NETWORKS_ANN = "k8s.v1.cni.cncf.io/networks"
DEFAULT_NET_ANN = "v1.multus-cni.io/default-network"
STATUS_ANN = "k8s.v1.cni.cncf.io/network-status"

_subnets = itertools.cycle(range(100, 150))   # 10.231.100-149.0/24 belong to this suite
_subnet_lock = threading.Lock()
_uid_counter = itertools.count(1)


def install_k8s_binaries(dest):
    return px.install_binaries(dest, BINARIES)


def nad_yaml(ns, name, config):
    """A NetworkAttachmentDefinition manifest; ``config`` (dict or str) becomes ``spec.config`` (None: no spec.config).
    The JSON text is embedded as a JSON string literal, which is a valid YAML double-quoted scalar."""
    lines = ["apiVersion: k8s.cni.cncf.io/v1", "kind: NetworkAttachmentDefinition", "metadata:",
             "  name: %s" % name, "  namespace: %s" % ns]
    if config is None:
        lines.append("spec: {}")
    else:
        text = config if isinstance(config, str) else json.dumps(config)
        lines += ["spec:", "  config: %s" % json.dumps(text)]
    return "\n".join(lines) + "\n"


def pod_cni_args(ns, name, cid, uid=None):
    a = "IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s" % (ns, name, cid)
    if uid:
        a += ";K8S_POD_UID=%s" % uid
    return a


def ips_of(ns_name):
    """``{ifname: ["10.231.100.2/24", ...]}`` of a netns (IPv4 + global IPv6) from ``ip -j -n``."""
    return nl.addresses(ns_name)


def macs_of(ns_name):
    return {l["ifname"]: l.get("address") for l in nl.ip_json("link", "show", ns=ns_name)}


def bare(cidrs):
    return sorted(c.split("/")[0] for c in cidrs)


class K8sPod:
    """A pod: a netns + container ID + an API object whose identity goes into CNI_ARGS."""

    def __init__(self, env, ns, name, annotations=None, uid=None, create=True, node_name=None):
        self.env = env
        self.namespace = ns
        self.name = name
        self.netns = env.netns()
        self.cid = env.cid(name[-6:])
        self.uid = uid or "pxk-uid-%s-%d" % (nl.RUN_TAG, next(_uid_counter))
        if create:
            env.kube.create_pod(ns, name, annotations or {}, uid=self.uid, node_name=node_name)
        self.cni_args = pod_cni_args(ns, name, self.cid, self.uid)
        env.pods.append(self)

    @property
    def netns_path(self):
        return px.netns_path_of(self.netns)

    def run(self, command, config, ifname="eth0", cni_args=None, **kw):
        return self.env.px.run(command, config, self.cid, self.netns_path, ifname=ifname,
                               cni_args=self.cni_args if cni_args is None else cni_args, **kw)

    def add(self, config, **kw):
        return self.run("ADD", config, **kw)

    def delete(self, config, **kw):
        return self.run("DEL", config, **kw)

    def links(self):
        return sorted(n for n in nl.links(self.netns) if n != "lo")

    def addresses(self):
        return ips_of(self.netns)

    def status(self):
        """The pod's network-status annotation, parsed (None when absent), read through the API."""
        ann = self.env.kube.pod_annotations(self.namespace, self.name) or {}
        v = ann.get(STATUS_ANN)
        return None if v is None else json.loads(v)

    def status_kubectl(self):
        r = self.env.kube.kubectl("get", "pod", self.name, "-n", self.namespace, "-o",
                                  "jsonpath={.metadata.annotations.k8s\\.v1\\.cni\\.cncf\\.io/network-status}")
        return json.loads(r.stdout) if r.stdout.strip() else None


class K8sEnv(px.Env):
    """One test's sandbox (dirs, links, netns, plexus runner) plus its API server and kubeconfig."""

    def __init__(self, tmp, bin_dir, kube):
        super().__init__(tmp, bin_dir)
        self.kube = kube
        self.pods = []
        self.configs = []            # plexus configs used on ADD (for best-effort DEL at teardown)
        self.kubeconfig = str(kube.write_kubeconfig(os.path.join(self.tmp, "kubeconfig.yaml"), use_token_file=True))
        self._cluster = None

    def subnet(self):
        with _subnet_lock:
            return "10.231.%d.0/24" % next(_subnets)

    # --- networks ---------------------------------------------------------------------------------------------
    def cluster(self):
        """The cluster network (eth0): a bridge with host-local, as an inline delegate conflist."""
        if self._cluster is None:
            br = self.bridge()
            sub = self.subnet()
            self._cluster = {"bridge": br, "subnet": sub, "name": "pxk-cluster",
                             "list": px.conflist("pxk-cluster", "1.0.0", [px.bridge(br, sub, self.data_dir)])}
        return self._cluster

    def config(self, delegates=None, **extra):
        """A Plexus config with this env's kubeconfig and the cluster network as the only delegate."""
        c = {"cniVersion": "1.0.0", "name": "pxk", "type": "plexus", "cniDir": self.cni_dir, "confDir": self.conf_dir,
             "binDir": px.DEBIAN_CNI_DIR, "kubeconfig": self.kubeconfig, "logLevel": "verbose",
             "delegates": delegates if delegates is not None else [self.cluster()["list"]]}
        c.update(extra)
        self.configs.append(c)
        return c

    def macvlan_nad(self, name="pxk-mv"):
        master, _ = self.veth()
        sub = self.subnet()
        cfg = {"cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": master, "mode": "bridge",
               "ipam": px.host_local(sub, self.data_dir)}
        return cfg, sub

    def static_bridge_nad(self, name="pxk-st"):
        br = self.bridge()
        cfg = {"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": br, "isGateway": False,
               "isDefaultGateway": False, "ipMasq": False, "hairpinMode": False,
               "capabilities": {"ips": True}, "ipam": {"type": "static"}}
        return cfg, br

    def hostlocal_bridge_nad(self, name="pxk-br"):
        br = self.bridge()
        sub = self.subnet()
        cfg = {"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": br, "isGateway": False,
               "isDefaultGateway": False, "ipMasq": False, "hairpinMode": False,
               "ipam": px.host_local(sub, self.data_dir)}
        return cfg, br, sub

    # --- API objects ------------------------------------------------------------------------------------------
    def install_crd(self):
        """``kubectl apply -f crds/`` (through the API when kubectl is absent)."""
        if KUBECTL:
            r = self.kube.kubectl("apply", "-f", str(NAD_CRD_DIR))
            return r.stdout
        self.kube.install_nad_crd()
        return None

    def apply_nad_kubectl(self, ns, name, config):
        """Writes a manifest and ``kubectl apply -f`` it (API fallback without kubectl)."""
        if not KUBECTL:
            return self.kube.apply_nad(ns, name, config)
        self.kube.create_namespace(ns)
        path = os.path.join(self.tmp, "nad-%s-%s.yaml" % (ns, name))
        with open(path, "w") as f:
            f.write(nad_yaml(ns, name, config))
        return self.kube.kubectl("apply", "-f", path).stdout

    def pod(self, ns, name, annotations=None, uid=None, create=True, node_name=None):
        return K8sPod(self, ns, name, annotations, uid, create, node_name)

    # --- state --------------------------------------------------------------------------------------------------
    def leftovers(self, pods=(), bridges=()):
        """What is still attached: links in the pods' netns, host-local reservations, cache files, bridge ports."""
        problems = []
        if self.cache_files():
            problems.append("cache files: %s" % self.cache_files())
        if self.reservations():
            problems.append("host-local reservations: %s" % self.reservations())
        for p in pods:
            if p.links():
                problems.append("links in %s: %s" % (p.netns, p.links()))
        for b in bridges:
            if nl.bridge_ports(b):
                problems.append("ports on bridge %s: %s" % (b, nl.bridge_ports(b)))
        return problems

    def teardown(self):
        """Best effort: DEL every pod with every config used (works without the API), then the env cleanup."""
        for p in self.pods:
            if nl.netns_exists(p.netns) and p.links():
                for c in reversed(self.configs):
                    try:
                        p.delete(c, timeout=60)
                    except Exception:
                        pass
        self.kill_leftovers()
        return self.net.cleanup()


# ----------------------------------------------------------------------------------------------------------------
# Fixtures (import them into a test module)
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def k8s_bins(tmp_path_factory):
    return install_k8s_binaries(str(tmp_path_factory.mktemp("pxkbin")))


@pytest.fixture
def kube(tmp_path, request):
    k = KubeAPI(tmp_path / "kube")
    request.addfinalizer(k.close)
    return k


@pytest.fixture
def kenv(px_session, k8s_bins, kube, tmp_path, request):
    env = K8sEnv(tmp_path / "env", k8s_bins, kube)

    def fin():
        errors = env.teardown()
        if errors:
            sys.stderr.write("kenv cleanup errors: %s\n" % errors)

    request.addfinalizer(fin)
    return env


# ----------------------------------------------------------------------------------------------------------------
# Running delegates directly (the "runtime without Plexus" baseline of the figures)
# ----------------------------------------------------------------------------------------------------------------

def run_plugin(plugin_type, command, conf, cid, netns_path, ifname, bin_dirs=(px.DEBIAN_CNI_DIR,), cni_args=None):
    """One posix_spawn-style plugin run (no preexec, no cwd, close_fds=False), as a runtime execs a delegate."""
    path = None
    for d in bin_dirs:
        if os.access(os.path.join(d, plugin_type), os.X_OK):
            path = os.path.join(d, plugin_type)
            break
    assert path, "plugin %s not found in %s" % (plugin_type, bin_dirs)
    env = px.make_env(command, cid, netns_path, ifname, cni_args, ":".join(bin_dirs))
    p = subprocess.run([path], input=json.dumps(conf).encode(), env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, close_fds=False, timeout=60)
    return px.Outcome(p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))


def run_network_direct(command, netconf, cid, netns_path, ifname, runtime_config=None, cni_args=None):
    """ADD/DEL one network (conf or conflist) the way libcni does: each plugin in order (reverse for DEL) with
    name/cniVersion injected, runtimeConfig for declared capabilities, prevResult chained on ADD."""
    plugins = netconf.get("plugins") or [netconf]
    name, version = netconf["name"], netconf["cniVersion"]
    order = plugins if command == "ADD" else list(reversed(plugins))
    prev = None
    for pl in order:
        conf = {k: v for k, v in pl.items() if k != "capabilities"}
        conf["name"], conf["cniVersion"] = name, version
        rc = {k: v for k, v in (runtime_config or {}).items() if (pl.get("capabilities") or {}).get(k)}
        if rc:
            conf["runtimeConfig"] = rc
        if prev is not None:
            conf["prevResult"] = prev
        o = run_plugin(pl["type"], command, conf, cid, netns_path, ifname, cni_args=cni_args)
        if not o.ok:
            return o
        if command == "ADD":
            prev = o.out
    return px.Outcome(0, json.dumps(prev) if prev is not None else "", "")


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def write_figures(section, figures):
    """Merges ``{section: figures}`` into testenv/.work/k8s-figures.json and prints it."""
    os.makedirs(WORK_DIR, exist_ok=True)
    data = {}
    try:
        with open(FIGURES_PATH) as f:
            data = json.load(f)
    except (OSError, ValueError):
        pass
    data[section] = dict(figures, measured_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
    tmp = FIGURES_PATH + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, FIGURES_PATH)
    print("\nk8s figures [%s]: %s" % (section, json.dumps(figures, sort_keys=True)))
    return data
