"""Helpers for the deployment suites (testenv/tests/test_deploy_*.py).

* ``Node``: a sandboxed node: ``etc/cni/net.d`` and ``opt/cni/bin`` under a temp dir (never the host's real ones),
  a pod-side service account dir (``sa/token``, ``sa/ca.crt``) and the ``plexus-install`` runner.
* ``tree(root)``: a full listing (path, type, mode, SHA-256) to compare a directory before and after.
* ``deploy_docs()`` / ``daemonset()``: the objects of deploy/*.yaml (needs PyYAML).
* ``runtime_add()``: runs a generated conflist the way libcni does (plugin object + name + cniVersion).

Use from a test module::

    from testenv.lib.deploy import deploy_bins, node  # noqa: F401  (pytest fixtures)
"""

import glob
import hashlib
import json
import os
import signal
import stat
import subprocess
import time

import pytest

from testenv.lib import plexus as px

REPO = px.REPO
DEPLOY_DIR = os.path.join(REPO, "deploy")
BINARIES = ("plexus", "plexus-install", "plexus-kubeconfig")
CONFIG_NAME = "00-plexus.conflist"


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree(root):
    """Every entry below ``root``: ``(relative path, kind, mode, sha256 or link target)``, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            mode = oct(stat.S_IMODE(st.st_mode))
            if stat.S_ISLNK(st.st_mode):
                out.append((rel, "link", mode, os.readlink(p)))
            elif stat.S_ISDIR(st.st_mode):
                out.append((rel, "dir", mode, ""))
            else:
                out.append((rel, "file", mode, sha256_of(p)))
    return sorted(out)


def wait_for(predicate, timeout=20.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))


def replace_file(path, text, mode=0o644):
    """Atomic replacement (as kubelet swaps a projected volume's files): the old inode is never half-written."""
    tmp = "%s.pxtmp" % path
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class Node:
    """A sandboxed node and its installer. ``proc`` is the running watch-mode installer, if any."""

    def __init__(self, tmp, bins):
        self.tmp = str(tmp)
        self.bins = bins
        self.installer = os.path.join(bins, "plexus-install")
        self.root = os.path.join(self.tmp, "node")
        self.conf_dir = os.path.join(self.root, "etc", "cni", "net.d")
        self.bin_dir = os.path.join(self.root, "opt", "cni", "bin")
        self.sa_dir = os.path.join(self.tmp, "sa")
        self.cni_dir = os.path.join(self.tmp, "cache")      # Plexus' cniDir (never /var/lib/cni/multus)
        self.multus_conf_dir = os.path.join(self.tmp, "multus.d")
        for d in (self.conf_dir, self.sa_dir):
            os.makedirs(d, exist_ok=True)
        self.write_token("pxt-token-initial")
        with open(os.path.join(self.sa_dir, "ca.crt"), "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot used\n-----END CERTIFICATE-----\n")
        self.procs = []
        self.logs = []

    # files ----------------------------------------------------------------------------------------------------
    @property
    def token_path(self):
        return os.path.join(self.sa_dir, "token")

    @property
    def ca_path(self):
        return os.path.join(self.sa_dir, "ca.crt")

    @property
    def config_path(self):
        return os.path.join(self.conf_dir, CONFIG_NAME)

    @property
    def state_dir(self):
        return os.path.join(self.conf_dir, "plexus.d")

    def write_token(self, token):
        replace_file(self.token_path, token + "\n", 0o600)

    def write_conf(self, name, conf):
        text = conf if isinstance(conf, str) else json.dumps(conf)
        replace_file(os.path.join(self.conf_dir, name), text)

    def config(self):
        with open(self.config_path) as f:
            return json.load(f)

    def manifest(self):
        with open(os.path.join(self.state_dir, "install-manifest.json")) as f:
            return json.load(f)

    def tree(self):
        return tree(self.root)

    # installer --------------------------------------------------------------------------------------------------
    def args(self, api_server=None, ca_file=None, extra=()):
        a = ["--cni-conf-dir", self.conf_dir, "--cni-bin-dir", self.bin_dir, "--source-bin-dir", self.bins,
             "--token-file", self.token_path, "--ca-file", ca_file or self.ca_path,
             "--cni-dir", self.cni_dir, "--conf-dir", self.multus_conf_dir, "--log-level", "debug",
             "--interval-ms", "100"]
        if api_server:
            a += ["--api-server", api_server]
        else:
            a += ["--skip-kubeconfig"]
        return a + list(extra)

    def run(self, *args, timeout=60):
        p = subprocess.run([self.installer, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, env={"PATH": px.CLEAN_PATH})
        return p

    def start(self, *args):
        """Starts ``plexus-install install`` (watch mode); stderr goes to a log file (``log(proc)``)."""
        log_path = os.path.join(self.tmp, "install-%d.log" % len(self.procs))
        log = open(log_path, "wb")
        p = subprocess.Popen([self.installer, "install", *args], stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, env={"PATH": px.CLEAN_PATH})
        log.close()
        p.log_path = log_path
        self.procs.append(p)
        return p

    @staticmethod
    def log(p):
        with open(p.log_path, errors="replace") as f:
            return f.read()

    def stop(self, p, sig=signal.SIGTERM, timeout=30):
        p.send_signal(sig)
        return p.wait(timeout)

    def status(self, *args):
        return self.run("status", *args)

    def wait_installed(self, p, *args, timeout=30):
        def ok():
            if p.poll() is not None:
                raise AssertionError("installer exited %s:\n%s" % (p.returncode, self.log(p)))
            return self.status(*args).returncode == 0
        return wait_for(ok, timeout, 0.1, "the installation to be complete")

    def kill_leftovers(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    pass


def runtime_add(command, conflist_path, cid, netns_path, ifname, bin_dirs, cni_args=None, timeout=120):
    """Runs the (single-plugin) generated conflist as libcni does: the plugin object with the list's ``name`` and
    ``cniVersion`` injected, no runtimeConfig (no capability arguments given), ``CNI_PATH`` = ``bin_dirs``."""
    with open(conflist_path) as f:
        lst = json.load(f)
    assert len(lst["plugins"]) == 1, lst
    conf = dict(lst["plugins"][0], name=lst["name"], cniVersion=lst["cniVersion"])
    plugin = os.path.join(bin_dirs[0], conf["type"])
    env = px.make_env(command, cid, netns_path, ifname, cni_args, ":".join(bin_dirs))
    p = subprocess.run([plugin], input=json.dumps(conf).encode(), env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    return px.Outcome(p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))


# ----------------------------------------------------------------------------------------------------------------
# deploy/ manifests
# ----------------------------------------------------------------------------------------------------------------

def deploy_files():
    return sorted(glob.glob(os.path.join(DEPLOY_DIR, "*.yaml")))


def deploy_docs():
    """[(file, object)] of every YAML document in deploy/ (empty documents skipped)."""
    import yaml
    out = []
    for f in deploy_files():
        with open(f) as fh:
            for doc in yaml.safe_load_all(fh):
                if doc:
                    out.append((os.path.basename(f), doc))
    return out


def deploy_object(kind, name=None):
    found = [d for _, d in deploy_docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, "expected one %s %s in deploy/, found %d" % (kind, name or "", len(found))
    return found[0]


# ----------------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def deploy_bins(tmp_path_factory):
    return px.install_binaries(str(tmp_path_factory.mktemp("pxdbin")), BINARIES)


@pytest.fixture
def node(deploy_bins, tmp_path, request):
    n = Node(tmp_path / "pxd", deploy_bins)
    request.addfinalizer(n.kill_leftovers)
    return n
