"""Plexus under podman 4.3 (Debian 12's package, CNI backend), with every piece of podman state private.

``PodmanEnv(workdir)`` gives a root podman that never reads or writes the host's container configuration:

* ``containers.conf`` / ``storage.conf`` under ``workdir`` (``CONTAINERS_CONF``, ``CONTAINERS_STORAGE_CONF``):
  graphroot, runroot, tmp_dir (file locks instead of ``/dev/shm/libpod_lock``), events log, image copy temp dir,
  ``network_config_dir`` (the CNI conf dir, never ``/etc/cni/net.d``) and ``cni_plugin_dirs`` (a private bin dir
  holding a copy of ``plexus``, then ``/usr/lib/cni``); runc through a wrapper that adds ``--root`` (never
  ``/run/runc``); cgroups under ``/pxpm-<tag>`` (``--cgroup-parent``), removed at the end.
* A private mount namespace (``MountNamespace``): podman 4.3 as root hard-codes ``/run/netns/netns-<uuid>`` for the
  container netns, libcni's cache ``/var/lib/cni/results`` and c/image's ``/var/lib/containers/cache``. Every podman
  command runs through ``nsenter --mount`` into a namespace where ``/run/netns`` and ``/var/lib`` are empty
  tmpfs mounts, so none of these reach the host; the test reads them through ``/proc/<holder>/root``.
* The image ``localhost/pxpm-busybox`` is a one-directory rootfs made from Debian's static busybox and
  ``podman import``-ed (no registry).
* ``PlexusNetwork``: a podman network is a conflist with the single plugin ``plexus`` whose ``delegates`` are
  bridge + host-local (+ portmap declaring ``portMappings``) conflists; host-local ``dataDir``, Plexus' ``cniDir``
  and ``confDir`` are under ``workdir``. Bridges use ``isGateway: false, ipMasq: false`` and portmap
  ``snat: false``, so ``net.ipv4.ip_forward`` and the other sysctls are never written.

Host links are ``pxpm<tag>...``; subnets are 10.231.100-130.0/24. ``lock_and_sweep()`` serialises runs of this
suite and removes what a crashed earlier run left (its runc containers, conmon processes, holder, links,
cgroups, portmap rules and workdir). Root only.
"""

import fcntl
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from testenv.lib import netns as nl
from testenv.lib import plexus as px
from testenv.lib.cri_plexus import iptables_nat, run as run_cmd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALL_SH = os.path.join(REPO, "testenv", "podman", "install.sh")
LOCK_FILE = os.path.join(REPO, "testenv", ".work", "pxpm.lock")
PREFIX = "pxpm"                      # host links, cgroups, workdirs, podman object names
WORK_PARENT = "/tmp"                 # short: conmon's attach socket path must stay < 108 bytes
IMAGE = "localhost/pxpm-busybox:latest"
HOSTPORT_CHAIN = "CNI-HOSTPORT-DNAT"  # portmap's shared top-level chain: removed (when empty) only if we made it
HOSTPORT_MARK = "hostport-chain-created"
TOOLS = ("podman", "runc", "conmon", "busybox", "nsenter", "iptables", "ip")
PLUGINS = ("bridge", "host-local", "portmap")
BUSYBOX_APPLETS = ("sh", "ip", "sleep", "true", "cat", "ls", "echo", "env", "hostname")
# Paths of the private mount namespace that podman 4.3 cannot be configured away from (tmpfs there).
PRIVATE_MOUNTS = ("/var/lib", "/run/netns")


def missing_dependencies():
    missing = [t for t in TOOLS if not shutil.which(t)]
    missing += ["/usr/lib/cni/" + p for p in PLUGINS if not os.access("/usr/lib/cni/" + p, os.X_OK)]
    return missing


def ensure_installed():
    """Runs testenv/podman/install.sh if anything is missing. Returns None when ready, else why it is not."""
    if not missing_dependencies():
        return None
    r = subprocess.run(["bash", INSTALL_SH], capture_output=True, text=True)
    still = missing_dependencies()
    if r.returncode != 0 or still:
        return "missing %s; install.sh said: %s" % (still, (r.stderr or r.stdout)[-2000:])
    return None


# ----------------------------------------------------------------------------------------------------------------
# Private mount namespace
# ----------------------------------------------------------------------------------------------------------------

HOLDER_MARK = "--pxpm-holder"
_HOLDER = r'''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def chk(r, what):
    if r != 0:
        e = ctypes.get_errno()
        sys.stderr.write("%s: %s\n" % (what, os.strerror(e)))
        sys.exit(1)
chk(libc.unshare(0x00020000), "unshare(CLONE_NEWNS)")
chk(libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None), "mount --make-rprivate /")
for t in sys.argv[2:]:
    chk(libc.mount(b"pxpm", t.encode(), b"tmpfs", 0, b"mode=0755,size=64m"), "tmpfs on " + t)
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.read()
'''


class MountNamespace:
    """A process holding a mount namespace where ``PRIVATE_MOUNTS`` are empty tmpfs mounts.

    It lives until its stdin closes (``close()``, or this Python process dying); the namespace itself lasts while
    any process started in it (conmon, a container) is alive."""

    def __init__(self, mounts=PRIVATE_MOUNTS):
        self.mounts = list(mounts)
        self.created_dirs = []
        for m in self.mounts:
            if not os.path.isdir(m):        # a mount point must exist on the host (only /run/netns may be missing)
                os.makedirs(m, mode=0o755)
                self.created_dirs.append(m)
        self.proc = subprocess.Popen([sys.executable, "-c", _HOLDER, HOLDER_MARK] + self.mounts,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        line = self.proc.stdout.readline().decode()
        if line.strip() != "ready":
            err = self.proc.stderr.read().decode()
            self.close()
            raise RuntimeError("mount namespace holder failed: %s" % (err.strip() or line))

    @property
    def pid(self):
        return self.proc.pid

    def wrap(self, argv):
        return ["nsenter", "--mount=/proc/%d/ns/mnt" % self.pid, "--"] + list(argv)

    def path(self, p):
        """``p`` as seen inside the namespace, readable from the host."""
        return "/proc/%d/root%s" % (self.pid, p)

    def listdir(self, p):
        try:
            return sorted(os.listdir(self.path(p)))
        except FileNotFoundError:
            return []

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except Exception:  # noqa: BLE001 - killed below
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for d in reversed(self.created_dirs):
            try:
                os.rmdir(d)
            except OSError:
                pass            # no longer empty: someone else uses it now


# ----------------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------------

class Delegate:
    """One delegate conflist: bridge (no gateway, no masquerade) + host-local [+ portmap]."""

    def __init__(self, env, name, bridge, octet, portmap=False):
        self.name, self.bridge, self.portmap = name, bridge, portmap
        self.subnet = "10.231.%d.0/24" % octet
        self.prefix = "10.231.%d." % octet
        self.data_dir = env.ipam_dir

    def conflist(self):
        plugins = [px.bridge(self.bridge, self.subnet, self.data_dir)]
        if self.portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": False})
        return px.conflist(self.name, "1.0.0", plugins)

    def reservations(self, cid=None):
        """host-local's reserved IPs (of ``cid`` only when given: a reservation file's first line is the id)."""
        res = px.reservations(self.data_dir, self.name).get(self.name, {})
        return sorted(ip for ip, owner in res.items() if cid is None or owner == cid)

    def has(self, cidr):
        """Whether ``a.b.c.d/nn`` is an address of this delegate's subnet."""
        return cidr.startswith(self.prefix) and cidr.endswith("/24")

    def ports(self):
        return nl.bridge_ports(self.bridge) if nl.link_exists(self.bridge) else []


class PlexusNetwork:
    """A podman network: a conflist whose only plugin is ``plexus`` with inline delegates."""

    def __init__(self, env, name, delegates, capabilities=True):
        self.env, self.name, self.delegates, self.capabilities = env, name, delegates, capabilities

    @property
    def cluster(self):
        return self.delegates[0]

    def conflist(self):
        extra = {"logFile": self.env.plexus_log, "logLevel": "debug", "logToStderr": False}
        if self.capabilities:
            extra["capabilities"] = {"portMappings": True}
        plugin = px.plexus_config("1.0.0", self.env.cni_dir, self.env.conf_dir,
                                  delegates=[d.conflist() for d in self.delegates], name=self.name,
                                  bin_dir=self.env.bin_dir, **extra)
        return px.conflist(self.name, "1.0.0", [plugin])


# ----------------------------------------------------------------------------------------------------------------
# podman
# ----------------------------------------------------------------------------------------------------------------

class PodmanError(RuntimeError):
    def __init__(self, argv, proc):
        self.argv, self.returncode, self.stdout, self.stderr = argv, proc.returncode, proc.stdout, proc.stderr
        super().__init__("podman %s failed (%d): %s" % (" ".join(argv), proc.returncode, proc.stderr.strip()))


def _sh_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


class PodmanEnv:
    """Private podman + Plexus networks. ``start()`` / ``stop()`` (returns the list of forced clean-ups)."""

    def __init__(self, workdir=None):
        self.tag = "%04x" % random.getrandbits(16)
        self.workdir = workdir or tempfile.mkdtemp(prefix="%s-%s-" % (PREFIX, self.tag), dir=WORK_PARENT)
        self.cgroup_parent = "/%s-%s" % (PREFIX, self.tag)
        w = self.workdir
        self.conf_path, self.storage_path = w + "/containers.conf", w + "/storage.conf"
        self.net_dir, self.bin_dir, self.runtime_dir = w + "/net.d", w + "/cni-bin", w + "/rt"
        self.runc_root, self.tmp_dir = w + "/runc", w + "/t"
        self.cni_dir, self.conf_dir, self.ipam_dir = w + "/plexus-cache", w + "/plexus-conf", w + "/ipam"
        self.plexus_log = w + "/plexus.log"
        self.ns = None
        self.networks = {}
        self.delegates = []
        self.container_ids = set()
        self.cache = px.Cache(self.cni_dir)

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self):
        try:
            for d in (self.net_dir, self.bin_dir, self.runtime_dir, self.runc_root, self.tmp_dir, self.cni_dir,
                      self.conf_dir, self.ipam_dir, self.workdir + "/root", self.workdir + "/run"):
                os.makedirs(d, exist_ok=True)
            shutil.copy2(os.path.join(px.build_bin_dir(), "plexus"), os.path.join(self.bin_dir, "plexus"))
            self._write_configs()
            if ("-N %s" % HOSTPORT_CHAIN) not in iptables_nat().splitlines():
                open(os.path.join(self.workdir, HOSTPORT_MARK), "w").close()    # ours to remove when empty
            self.ns = MountNamespace()
            self._import_image()
        except BaseException:
            self.stop()
            raise
        return self

    def _write_configs(self):
        w = self.workdir
        runc = os.path.join(self.runtime_dir, "runc")
        with open(runc, "w") as f:
            f.write("#!/bin/sh\nexec %s --root %s \"$@\"\n" % (_sh_quote(shutil.which("runc")),
                                                            _sh_quote(self.runc_root)))
        os.chmod(runc, 0o755)
        driver = "vfs" if run_cmd("stat", "-f", "-c", "%T", w).stdout.strip() == "overlayfs" else "overlay"
        with open(self.conf_path, "w") as f:
            f.write(CONTAINERS_CONF % {"w": w, "tmp": self.tmp_dir, "runc": runc, "net": self.net_dir,
                                       "bin": self.bin_dir})
        with open(self.storage_path, "w") as f:
            f.write('[storage]\ndriver = "%s"\ngraphroot = "%s/root"\nrunroot = "%s/run"\n' % (driver, w, w))

    def env(self):
        return {"PATH": px.CLEAN_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TMPDIR": self.tmp_dir,
                "CONTAINERS_CONF": self.conf_path, "CONTAINERS_STORAGE_CONF": self.storage_path}

    def _import_image(self):
        rootfs = os.path.join(self.workdir, "rootfs")
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "run"):
            os.makedirs(os.path.join(rootfs, d), exist_ok=True)
        shutil.copy2(os.path.realpath(shutil.which("busybox")), os.path.join(rootfs, "bin", "busybox"))
        for a in BUSYBOX_APPLETS:
            os.symlink("busybox", os.path.join(rootfs, "bin", a))
        with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/:/bin/sh\n")
        with open(os.path.join(rootfs, "etc", "group"), "w") as f:
            f.write("root:x:0:\n")
        tar = os.path.join(self.workdir, "rootfs.tar")
        run_cmd("tar", "-C", rootfs, "--numeric-owner", "-cf", tar, ".", check=True)
        self.podman("import", "--change", 'CMD ["/bin/sh"]', tar, IMAGE)

    def stop(self):
        """Remove every container (CNI DEL through Plexus), then force what is left. Returns what was forced."""
        problems = []
        if self.ns is not None and self.ns.proc.poll() is None:
            try:
                self.rm_all()
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                problems.append("podman rm: %s" % e)
            left = self.runc_containers()
            if left:
                problems.append("runc containers left: %s" % left)
        problems += force_cleanup(self.workdir, self.cgroup_parent)
        if self.ns is not None:
            self.ns.close()
        for d in self.delegates:
            if nl.link_exists(d.bridge):
                nl.ip("link", "del", d.bridge, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return problems

    # -- podman ---------------------------------------------------------------------------------------------

    def podman(self, *args, check=True, timeout=120):
        argv = [str(a) for a in args]
        p = subprocess.run(self.ns.wrap(["podman"] + argv), env=self.env(), capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise PodmanError(argv, p)
        return p

    def podman_json(self, *args):
        return json.loads(self.podman(*args).stdout or "null")

    def run(self, name, *opts, command=("sleep", "600")):
        """``podman run -d`` (cgroups under our parent); returns the full container id."""
        p = self.podman("run", "-d", "--name", name, "--cgroup-parent", self.cgroup_parent, *opts, IMAGE,
                        *command)
        cid = p.stdout.strip().splitlines()[-1]
        self.container_ids.add(cid)
        return cid

    def run_failing(self, name, *opts):
        """A ``podman run`` expected to fail: returns the CompletedProcess (the id of the failed container, if
        podman created it, is remembered for the leak checks)."""
        p = self.podman("run", "-d", "--name", name, "--cgroup-parent", self.cgroup_parent, *opts, IMAGE,
                        "sleep", "600", check=False)
        ids = self.podman("ps", "-a", "-q", "--no-trunc", "--filter", "name=^%s$" % name).stdout.split()
        self.container_ids.update(ids)
        return p

    def rm_all(self):
        self.podman("rm", "-a", "-f", "-t", "0")

    def inspect(self, ctr):
        return self.podman_json("container", "inspect", ctr)[0]

    def runc_containers(self):
        try:
            return sorted(os.listdir(self.runc_root))
        except FileNotFoundError:
            return []

    def add_network(self, name, delegates, capabilities=True):
        """Writes the podman network ``name``: Plexus with ``delegates`` = [(suffix, octet, portmap)], delegate
        ``<name>-<suffix>`` on bridge ``pxpm<tag><octet>`` and subnet 10.231.<octet>.0/24."""
        ds = []
        for suffix, octet, portmap in delegates:
            d = Delegate(self, "%s-%s" % (name, suffix), "%s%s%d" % (PREFIX, self.tag, octet), octet, portmap)
            assert len(d.bridge) <= 15, d.bridge
            ds.append(d)
        self.delegates += ds
        net = PlexusNetwork(self, name, ds, capabilities)
        with open(os.path.join(self.net_dir, name + ".conflist"), "w") as f:
            json.dump(net.conflist(), f, indent=2)
        self.networks[name] = net
        return net

    # -- container views ------------------------------------------------------------------------------------

    def container_links(self, ctr):
        """``{ifname: {"mac", "ipv4": [a.b.c.d/nn]}}`` from ``ip -o link`` / ``ip -o -4 addr`` in the container
        (busybox ip), loopback left out."""
        out = {}
        for line in self.podman("exec", ctr, "ip", "-o", "link").stdout.splitlines():
            m = re.match(r"^\d+:\s+([^:@\s]+)(?:@\S+)?:.*link/(\w+)\s+([0-9a-f:]+)", line)
            if m and m.group(2) != "loopback":
                out[m.group(1)] = {"mac": m.group(3), "ipv4": []}
        for line in self.podman("exec", ctr, "ip", "-o", "-4", "addr").stdout.splitlines():
            m = re.match(r"^\d+:\s+(\S+)\s+inet\s+(\S+)", line)
            if m and m.group(1) in out:
                out[m.group(1)]["ipv4"].append(m.group(2))
        return out

    def netns_path(self, ctr):
        """The container's netns file (``/run/netns/netns-<uuid>`` inside the private mount namespace)."""
        return self.inspect(ctr)["NetworkSettings"]["SandboxKey"]

    def netns_files(self):
        return self.ns.listdir("/run/netns")

    def libcni_cache(self, cid=None):
        return [f for f in self.ns.listdir("/var/lib/cni/results") if cid is None or cid in f]

    # -- Plexus cache ---------------------------------------------------------------------------------------

    def attachment_records(self, cid=None):
        """Parsed ``attachments/*`` records (of ``cid`` when given)."""
        return [r for r in (_load(os.path.join(self.cache.attachments_dir, f)) for f in self.cache.plan_files())
                if r is not None and (cid is None or r.get("containerId") == cid)]

    def result_entries(self, cid=None):
        """Parsed ``results/*`` cniCacheV1 entries (of ``cid`` when given)."""
        return [r for r in (_load(os.path.join(self.cache.results_dir, f)) for f in self.cache.result_files())
                if r is not None and (cid is None or r.get("containerId") == cid)]

    def host_veths(self, cid, delegates=None):
        """Host-side veths of ``cid``'s bridge delegates (all, or those of ``delegates``), from Plexus' cached
        results."""
        names = None if delegates is None else {d.name for d in delegates}
        out = []
        for e in self.result_entries(cid):
            if names is None or e.get("networkName") in names:
                out += px.host_side_interfaces(e.get("result", {}))
        return sorted(set(out) - {d.bridge for d in self.delegates})

    def log_tail(self, cid=None, n=30):
        """The last ``n`` lines of Plexus' log (of container ``cid`` when given)."""
        try:
            with open(self.plexus_log) as f:
                lines = [l for l in f if cid is None or cid in l]
        except OSError:
            return ""
        return "".join(lines[-n:])

    # -- leftovers ------------------------------------------------------------------------------------------

    def leftovers(self, cids=None, veths=(), netns=()):
        """What removed containers may leave, as ``{what: [...]}`` (only non-empty entries): of ``cids`` (plus
        the given host ``veths`` and ``netns`` files) when given, else of any container (none should exist)."""
        def mine(names):
            return sorted(n for n in names if cids is None or any(c in n for c in cids))
        found = {
            "podman containers": mine(self.podman("ps", "-a", "-q", "--no-trunc").stdout.split()),
            "plexus cache": mine(self.cache.files()),
            "libcni cache": mine(self.libcni_cache()),
            "runc state": mine(self.runc_containers()),
            "netns": self.netns_files() if cids is None else [n for n in netns if os.path.exists(self.ns.path(n))],
            "host veths": nl.links_left(list(veths)),
            "portmap rules": [l for l in iptables_nat().splitlines()
                              if any(c in l for c in (self.container_ids if cids is None else cids))],
        }
        for d in self.delegates:
            res = px.reservations(d.data_dir, d.name).get(d.name, {})
            found["host-local %s" % d.name] = sorted(ip for ip, owner in res.items()
                                                     if cids is None or owner in cids)
            if cids is None:
                found["ports on %s" % d.bridge] = d.ports()
        return {k: v for k, v in found.items() if v}

    def reset(self):
        """Back to no container at all after a test that leaked; returns what had to be removed by force."""
        removed = []
        for cid in self.runc_containers():
            run_cmd(shutil.which("runc"), "--root", self.runc_root, "delete", "-f", cid)
            removed.append("runc container " + cid)
        for f in self.cache.files():
            os.unlink(os.path.join(self.cni_dir, f))
            removed.append("plexus cache " + f)
        for d in self.delegates:
            for ip in d.reservations():
                os.unlink(os.path.join(d.data_dir, d.name, ip))
                removed.append("host-local %s %s" % (d.name, ip))
            for port in d.ports():
                nl.ip("link", "del", port, check=False)
                removed.append("link " + port)
        removed += ["nat chain " + c for c in _remove_nat_rules(lambda l: NAT_MARK in l)]
        for f in self.libcni_cache():
            os.unlink(self.ns.path("/var/lib/cni/results/" + f))
            removed.append("libcni cache " + f)
        for f in self.netns_files():
            run_cmd(*self.ns.wrap(["umount", "/run/netns/" + f]))
            run_cmd(*self.ns.wrap(["rm", "-f", "/run/netns/" + f]))
            removed.append("netns " + f)
        return removed


def _load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


CONTAINERS_CONF = """\
[containers]
log_driver = "k8s-file"
# at or below the hard limits of a root without CAP_SYS_RESOURCE (podman would ask for nofile=1048576)
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
lock_type = "file"
events_logger = "file"
events_logfile_path = "%(w)s/events.log"
tmp_dir = "%(tmp)s"
image_copy_tmp_dir = "%(tmp)s"
static_dir = "%(w)s/root/libpod"
volume_path = "%(w)s/root/volumes"

[engine.runtimes]
runc = ["%(runc)s"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["%(bin)s", "/usr/lib/cni"]
network_config_dir = "%(net)s"
# a network file of ours: podman would otherwise make up "podman" (bridge with isGateway/ipMasq: ip_forward=1)
default_network = "pxpm-a"
"""


# ----------------------------------------------------------------------------------------------------------------
# Host paths podman 4.3 writes by default
# ----------------------------------------------------------------------------------------------------------------

PODMAN_ONLY_PATHS = ("/dev/shm/libpod_lock", "/var/lib/containers", "/run/libpod", "/run/containers")
SHARED_DIRS = ("/var/lib/cni/results", "/var/lib/cni/networks", "/run/runc")   # other runtimes use them too


def _ls(d):
    try:
        return sorted(os.listdir(d))
    except OSError:
        return []


def host_traces(container_ids=()):
    """What root podman would leave on the host with default settings: podman-only paths (existence), podman-named
    netns files (``/run/netns/netns-*``), ``/etc/cni/net.d``, and entries naming one of ``container_ids`` in the
    directories other runtimes share (so a concurrent CRI suite does not count)."""
    traces = {p: os.path.exists(p) for p in PODMAN_ONLY_PATHS}
    traces["/run/netns/netns-*"] = [n for n in _ls("/run/netns") if n.startswith("netns-")]
    traces["/etc/cni/net.d"] = _ls("/etc/cni/net.d")
    for d in SHARED_DIRS:
        for root, dirs, files in os.walk(d):
            traces.setdefault(d, [])
            traces[d] += [os.path.join(root, n) for n in dirs + files if any(c in n for c in container_ids)]
            for f in files:
                try:
                    with open(os.path.join(root, f), errors="replace") as fh:
                        head = fh.read(200)
                except OSError:
                    continue
                if any(c in head for c in container_ids):   # host-local reservations hold the id
                    traces[d].append(os.path.join(root, f))
    return {k: v for k, v in traces.items() if v != []}


# ----------------------------------------------------------------------------------------------------------------
# Sweeps (crashed runs, forced cleanup)
# ----------------------------------------------------------------------------------------------------------------

def _cmdline(pid):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _pids_with_arg(pred):
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            argv = [a.decode("utf-8", "replace") for a in _cmdline(pid)]
            if argv and pred(argv):
                out.append(int(pid))
    return out


def _kill(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _remove_cgroups(parent):
    for top in [os.path.join("/sys/fs/cgroup", h) for h in os.listdir("/sys/fs/cgroup")]:
        root = top + parent
        if not os.path.isdir(root):
            continue
        for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda t: -len(t[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def _remove_nat_rules(match):
    """Deletes portmap's rules whose comment matches, and the ``CNI-DN-*`` chains they jump to."""
    chains = set()
    for line in iptables_nat().splitlines():
        if line.startswith("-A ") and match(line):
            m = re.search(r"-j (CNI-DN-\w+)", line)
            if m:
                chains.add(m.group(1))
            run_cmd(*(["iptables", "-w", "-t", "nat", "-D"] + shlex.split(line[3:])))
    for c in chains:
        run_cmd("iptables", "-w", "-t", "nat", "-F", c)
        run_cmd("iptables", "-w", "-t", "nat", "-X", c)
    return sorted(chains)


def _remove_empty_hostport_chain():
    nat = iptables_nat().splitlines()
    if any(l.startswith("-A %s " % HOSTPORT_CHAIN) for l in nat):
        return
    for hook in ("PREROUTING", "OUTPUT"):
        run_cmd("iptables", "-w", "-t", "nat", "-D", hook, "-m", "addrtype", "--dst-type", "LOCAL", "-j",
                HOSTPORT_CHAIN)
    run_cmd("iptables", "-w", "-t", "nat", "-X", HOSTPORT_CHAIN)


NAT_MARK = 'dnat name: \\"%s-' % PREFIX     # portmap's comment on the rules of our delegate networks


def force_cleanup(workdir, cgroup_parent):
    """Everything a podman workdir may still hold, removed by force: runc containers (in its private runc root),
    conmon and podman processes naming the workdir, portmap rules of our networks, its cgroups. Returns what
    had to be removed."""
    forced = []
    runc_root = os.path.join(workdir, "runc")
    runc = shutil.which("runc") or "runc"
    for cid in (os.listdir(runc_root) if os.path.isdir(runc_root) else []):
        run_cmd(runc, "--root", runc_root, "delete", "-f", cid)
        forced.append("runc container %s" % cid[:12])

    def procs():
        return _pids_with_arg(lambda argv: any(workdir in a for a in argv) and
                              os.path.basename(argv[0]) in ("conmon", "podman"))
    # conmon sees its container die and runs `podman container cleanup` (CNI DEL through Plexus): let it finish
    wait_for(lambda: not procs(), timeout=15)
    left = procs()
    _kill(left)
    forced += ["process %d" % p for p in left]
    forced += ["nat chain %s" % c for c in _remove_nat_rules(lambda l: NAT_MARK in l)]
    if os.path.exists(os.path.join(workdir, HOSTPORT_MARK)):
        _remove_empty_hostport_chain()
    _remove_cgroups(cgroup_parent)
    return forced


def lock_and_sweep():
    """Takes this suite's lock (held until the returned file is closed) and removes what crashed earlier runs
    left: their holders, runc containers, conmons, ``pxpm*`` links, cgroups and workdirs."""
    os.makedirs(os.path.dirname(LOCK_FILE), exist_ok=True)
    lock = open(LOCK_FILE, "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    removed = []
    for wd in sorted(os.listdir(WORK_PARENT)):
        m = re.match(r"^%s-([0-9a-f]{4})-" % PREFIX, wd)
        if not m:
            continue
        path = os.path.join(WORK_PARENT, wd)
        removed += force_cleanup(path, "/%s-%s" % (PREFIX, m.group(1)))
        shutil.rmtree(path, ignore_errors=True)
        removed.append("workdir " + path)
    holders = _pids_with_arg(lambda argv: HOLDER_MARK in argv)
    _kill(holders)
    removed += ["holder %d" % p for p in holders]
    for n in nl.host_links_with_prefix(PREFIX):
        nl.ip("link", "del", n, check=False)
        removed.append("link " + n)
    for h in os.listdir("/sys/fs/cgroup"):
        for d in os.listdir(os.path.join("/sys/fs/cgroup", h)) if os.path.isdir("/sys/fs/cgroup/" + h) else []:
            if d.startswith(PREFIX + "-"):
                _remove_cgroups("/" + d)
    return lock, removed


def wait_for(pred, timeout=10.0, interval=0.05):
    deadline = time.monotonic() + timeout
    v = pred()
    while not v and time.monotonic() < deadline:
        time.sleep(interval)
        v = pred()
    return v
