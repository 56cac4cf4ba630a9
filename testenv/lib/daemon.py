"""The node daemon (``plexus-daemon``) for integration tests: start it against the test API server, wait until its
watch caches are synced, scrape its metrics, stop it (SIGTERM drains) or kill it.

    d = Daemon(kenv, node="pxnode1").start()       # socket and metrics socket in the env's temp dir
    cfg = kenv.config(daemonSocket=d.socket)        # the thin plugin forwards ADDs there
    d.metrics()                                     # prometheus_client-parsed families, by name
    d.stop()
"""

import http.client
import os
import signal
import socket
import subprocess
import time

NODE = "pxnode1"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=5):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Daemon:
    def __init__(self, env, node=NODE, *, kubeconfig=None, metrics_tcp=False, extra_args=(), name="daemon"):
        self.env = env
        self.node = node
        self.dir = os.path.join(env.tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.socket = os.path.join(self.dir, "plexus.sock")
        self.metrics_port = free_port() if metrics_tcp else None
        self.metrics_socket = None if metrics_tcp else os.path.join(self.dir, "metrics.sock")
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.kubeconfig = kubeconfig or env.kubeconfig
        self.extra_args = list(extra_args)
        self.proc = None

    @property
    def binary(self):
        return os.path.join(self.env.bin_dir, "plexus-daemon")

    def args(self):
        addr = "127.0.0.1:%d" % self.metrics_port if self.metrics_port else "unix:" + self.metrics_socket
        return [self.binary, "--socket", self.socket, "--kubeconfig", self.kubeconfig, "--node-name", self.node,
                "--metrics-address", addr, "--bin-dir", self.env.bin_dir, "--log-level", "verbose",
                "--drain-seconds", "20"] + self.extra_args

    def start(self, wait_synced=True, timeout=20):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        self.env.daemons = getattr(self.env, "daemons", []) + [self]
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("plexus-daemon exited %s: %s" % (self.proc.returncode, self.read_log()))
            if os.path.exists(self.socket) and self._endpoint_up():
                if not wait_synced or self.get("/readyz")[0] == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError("plexus-daemon not ready: %s" % self.read_log())

    def _endpoint_up(self):
        try:
            self.get("/healthz")
            return True
        except OSError:
            return False

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def connection(self, timeout=5):
        if self.metrics_port:
            return http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=timeout)
        return UnixHTTPConnection(self.metrics_socket, timeout=timeout)

    def get(self, path):
        c = self.connection()
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode()
        finally:
            c.close()

    def metrics_text(self):
        st, body = self.get("/metrics")
        assert st == 200, body
        return body

    def metrics(self):
        """``{family name: Metric}`` parsed with prometheus_client's text parser."""
        from prometheus_client.parser import text_string_to_metric_families
        return {f.name: f for f in text_string_to_metric_families(self.metrics_text())}

    def sample(self, family, name=None, **labels):
        """The value of one sample (0 when absent): ``d.sample("plexus_cache_objects", resource="pods")``."""
        fams = self.metrics()
        # prometheus_client names a counter family without its "_total"; the sample keeps it.
        f = fams.get(family) or fams.get(family[:-len("_total")] if family.endswith("_total") else family)
        if f is None:
            return 0
        want = name or family
        for s in f.samples:
            if s.name == want and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        return 0

    def wait_cached(self, resource, count, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.sample("plexus_cache_objects", resource=resource) == count:
                return
            time.sleep(0.05)
        raise AssertionError("cache of %s never held %d objects: %s" % (resource, count, self.metrics_text()))

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None

    def stop(self, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
