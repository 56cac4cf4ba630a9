#!/usr/bin/env python3
"""Fake kubelet PodResources v1 server (``v1.PodResourcesLister``) on a unix socket, for integration tests.

Python stubs are generated from ``api.proto`` (beside this file) with ``grpc_tools.protoc`` on first use, into
``<system temp dir>/plexus-fake-kubelet-<uid>/<hash>/`` keyed by the proto, grpcio-tools and protobuf versions (never
into the repository). The same stubs serve tests as a real generated client: ``load_stubs()``.

In-process use::

    with FakeKubelet("/tmp/x/kubelet.sock") as kl:
        kl.set_pod("default", "sriov-pod", containers=[
            {"name": "app", "devices": [{"resource_name": "intel.com/intel_sriov_netdevice",
                                         "device_ids": ["0000:03:02.0"], "numa": 0}]}])
        kl.set_get_mode("unimplemented")                  # Get -> UNIMPLEMENTED, clients fall back to List
        kl.inject_error("List", "RESOURCE_EXHAUSTED", "rejected by rate limit", count=2)
        ...
        kl.requests()                                      # [{"method": "Get", "pod_name": ..., "code": ...}, ...]

As a separate process (a control unix socket speaks JSON lines; see README.md)::

    python3 testenv/kubelet/fake_kubelet.py /tmp/x/kubelet.sock [--control PATH] [--state FILE] [--log FILE]

or from Python: ``FakeKubeletProcess(socket_path).start()``, which has the same methods as ``FakeKubelet``.
"""

import argparse
import copy
import hashlib
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import socketserver
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_PATH = os.path.join(HERE, "api.proto")
STUB_NAME = "plexus_kubelet_podresources_v1"  # module names: <STUB_NAME>_pb2, <STUB_NAME>_pb2_grpc
SERVICE = "v1.PodResourcesLister"
METHODS = ("List", "GetAllocatableResources", "Get")
GET_MODES = ("ok", "unimplemented", "disabled")

# Messages of the real kubelet (shared/reference/device-plugins.md §1.1).
MSG_GET_UNIMPLEMENTED = "unknown method Get for service v1.PodResourcesLister"
MSG_GET_DISABLED = "PodResources API Get method disabled"
MSG_RATE_LIMIT = "rejected by rate limit"


def pod_not_found_message(namespace, name):
    return "pod %s in namespace %s not found" % (name, namespace)


# --------------------------------------------------------------------------------------------------------------------
# Stub generation


class StubsUnavailable(RuntimeError):
    """grpc_tools (grpcio-tools) cannot be imported, or protoc failed."""


_stubs = None
_stubs_lock = threading.Lock()


def _dist_version(name):
    try:
        import importlib.metadata as md
        return md.version(name)
    except Exception:  # noqa: BLE001 - a missing distribution only weakens the cache key
        return "?"


def _private_dir(path):
    """Creates `path` (mode 0700) or checks that an existing one is ours and not writable by others."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise StubsUnavailable("stub cache %s is not a private directory of uid %d" % (path, os.geteuid()))
    return path


def stub_cache_dir():
    """The directory holding the generated stubs for the current api.proto and toolchain (may not exist yet)."""
    h = hashlib.sha256()
    with open(PROTO_PATH, "rb") as f:
        h.update(f.read())
    h.update(("\0grpcio-tools=%s\0protobuf=%s\0grpcio=%s" % (
        _dist_version("grpcio-tools"), _dist_version("protobuf"), grpc.__version__)).encode())
    root = os.path.join(tempfile.gettempdir(), "plexus-fake-kubelet-%d" % os.geteuid())
    return os.path.join(root, h.hexdigest()[:24])


def _generate(dest):
    try:
        from grpc_tools import protoc
    except ImportError as e:
        raise StubsUnavailable("grpc_tools cannot be imported (pip install grpcio-tools): %s" % e) from e
    parent = _private_dir(os.path.dirname(dest))
    work = tempfile.mkdtemp(prefix=".gen-", dir=parent)
    try:
        proto = os.path.join(work, STUB_NAME + ".proto")
        shutil.copyfile(PROTO_PATH, proto)
        rc = protoc.main(["grpc_tools.protoc", "-I" + work, "--python_out=" + work,
                          "--grpc_python_out=" + work, proto])
        if rc != 0:
            raise StubsUnavailable("grpc_tools.protoc failed on %s (exit %s)" % (PROTO_PATH, rc))
        try:
            os.rename(work, dest)  # atomic publish; a concurrent generator may have won the race
        except OSError:
            if not os.path.isdir(dest):
                raise
    finally:
        if os.path.isdir(work):
            shutil.rmtree(work, ignore_errors=True)


def _load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def load_stubs():
    """Returns ``(pb2, pb2_grpc)`` for api.proto, generating them into the temp-dir cache if needed."""
    global _stubs
    with _stubs_lock:
        if _stubs is not None:
            return _stubs
        d = stub_cache_dir()
        pb2_path = os.path.join(d, STUB_NAME + "_pb2.py")
        grpc_path = os.path.join(d, STUB_NAME + "_pb2_grpc.py")
        if not (os.path.isfile(pb2_path) and os.path.isfile(grpc_path)):
            _generate(d)
        _private_dir(os.path.dirname(d))
        pb2 = _load_module(STUB_NAME + "_pb2", pb2_path)  # registered first: pb2_grpc imports it by name
        pb2_grpc = _load_module(STUB_NAME + "_pb2_grpc", grpc_path)
        svc = pb2.DESCRIPTOR.services_by_name["PodResourcesLister"]
        if svc.full_name != SERVICE or sorted(svc.methods_by_name) != sorted(METHODS):
            raise StubsUnavailable("api.proto does not define %s with %s" % (SERVICE, ", ".join(METHODS)))
        _stubs = (pb2, pb2_grpc)
        return _stubs


# --------------------------------------------------------------------------------------------------------------------
# Argument normalisation


def status_code(code):
    """grpc.StatusCode from a StatusCode, its number (8) or its name ("RESOURCE_EXHAUSTED")."""
    if isinstance(code, grpc.StatusCode):
        sc = code
    elif isinstance(code, bool):
        raise TypeError("status code must be a grpc.StatusCode, int or name, not bool")
    elif isinstance(code, int):
        sc = next((c for c in grpc.StatusCode if c.value[0] == code), None)
        if sc is None:
            raise ValueError("unknown gRPC status code %d" % code)
    elif isinstance(code, str):
        try:
            sc = grpc.StatusCode[code.strip().upper()]
        except KeyError:
            raise ValueError("unknown gRPC status code %r" % code) from None
    else:
        raise TypeError("status code must be a grpc.StatusCode, int or name, not %r" % (code,))
    if sc is grpc.StatusCode.OK:
        raise ValueError("an injected error cannot have status OK")
    return sc


def _methods(method):
    if method in (None, "*"):
        return frozenset(METHODS)
    names = [method] if isinstance(method, str) else list(method)
    for m in names:
        if m not in METHODS:
            raise ValueError("unknown method %r (expected one of %s or '*')" % (m, ", ".join(METHODS)))
    return frozenset(names)


def _count(count):
    if count is None:
        return None
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError("count must be None (all calls) or an int >= 0, not %r" % (count,))
    return count


def _numa(value):
    if value is None:
        return None
    nodes = [value] if isinstance(value, int) else list(value)
    for n in nodes:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError("numa must be None, an int or a list of ints, not %r" % (value,))
    return nodes


def _devices(devices, where):
    out = []
    for d in devices or ():
        if not isinstance(d, dict) or not isinstance(d.get("resource_name"), str):
            raise TypeError("%s: a device needs a string resource_name: %r" % (where, d))
        ids = d.get("device_ids", [])
        if isinstance(ids, str) or not all(isinstance(i, str) for i in ids):
            raise TypeError("%s: device_ids must be a list of strings: %r" % (where, ids))
        unknown = set(d) - {"resource_name", "device_ids", "numa"}
        if unknown:
            raise TypeError("%s: unknown device keys %s" % (where, sorted(unknown)))
        out.append({"resource_name": d["resource_name"], "device_ids": list(ids), "numa": _numa(d.get("numa"))})
    return out


def _containers(containers, where):
    out = []
    for c in containers or ():
        if isinstance(c, str):
            c = {"name": c}
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise TypeError("%s: a container needs a string name: %r" % (where, c))
        unknown = set(c) - {"name", "devices", "cpu_ids"}
        if unknown:
            raise TypeError("%s: unknown container keys %s" % (where, sorted(unknown)))
        cpus = list(c.get("cpu_ids", []))
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in cpus):
            raise TypeError("%s: cpu_ids must be ints" % where)
        out.append({"name": c["name"], "devices": _devices(c.get("devices"), where + "/" + c["name"]),
                    "cpu_ids": cpus})
    return out


# --------------------------------------------------------------------------------------------------------------------
# The server


class _Abort(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class FakeKubelet:
    """A ``v1.PodResourcesLister`` server on ``socket_path`` with a mutable pod table and fault injection.

    All methods are thread-safe and may be called while the server runs. ``requests()`` is the request log.
    """

    def __init__(self, socket_path, max_workers=8, log_path=None):
        self.socket_path = os.path.abspath(socket_path)
        self.log_path = log_path
        self._max_workers = max_workers
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server = None
        self._pb2 = None
        self.reset()

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self):
        """Binds the unix socket (removing a stale socket file first) and serves; returns self."""
        with self._lock:
            if self._server is not None:
                return self
            pb2, _ = load_stubs()
            self._pb2 = pb2
            os.makedirs(os.path.dirname(self.socket_path), exist_ok=True)
            _remove_stale_socket(self.socket_path)

            def ser(msg):
                return msg if isinstance(msg, bytes) else msg.SerializeToString()

            handlers = {
                "List": grpc.unary_unary_rpc_method_handler(
                    self._rpc_list, request_deserializer=pb2.ListPodResourcesRequest.FromString,
                    response_serializer=ser),
                "GetAllocatableResources": grpc.unary_unary_rpc_method_handler(
                    self._rpc_allocatable, request_deserializer=pb2.AllocatableResourcesRequest.FromString,
                    response_serializer=ser),
                "Get": grpc.unary_unary_rpc_method_handler(
                    self._rpc_get, request_deserializer=pb2.GetPodResourcesRequest.FromString,
                    response_serializer=ser),
            }
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=self._max_workers,
                                                            thread_name_prefix="fake-kubelet"))
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
            try:
                port = server.add_insecure_port("unix:" + self.socket_path)
            except RuntimeError as e:
                raise OSError("fake kubelet: cannot bind unix:%s: %s" % (self.socket_path, e)) from e
            if port == 0:
                raise OSError("fake kubelet: cannot bind unix:%s" % self.socket_path)
            self._stopping.clear()
            server.start()
            os.chmod(self.socket_path, 0o600)
            self._server = server
            return self

    def stop(self, grace=0):
        """Stops serving (cancelling calls in progress, including injected delays) and removes the socket."""
        with self._lock:
            server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.stop(grace).wait(10)
        _remove_stale_socket(self.socket_path)

    @property
    def running(self):
        return self._server is not None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def reset(self):
        """Empties the pod table, faults, allocatable override, Get mode, shuffle and request log."""
        with self._lock:
            self._pods = {}  # (namespace, name) -> containers, in insertion order
            self._allocatable = None
            self._rules = []
            self._not_found = {}
            self._get_mode = "ok"
            self._shuffle = None
            self._log = []
            self._next_rule = 1

    # -- pod table -------------------------------------------------------------------------------------------------

    def set_pod(self, namespace, name, containers=()):
        """Adds or replaces a pod. ``containers``: ``[{"name", "devices": [{"resource_name", "device_ids",
        "numa"}], "cpu_ids"}]`` where ``numa`` is None (no topology), a node number or a list of them; each
        device dict becomes one ``ContainerDevices`` entry. A bare string is a container without devices."""
        if not isinstance(namespace, str) or not isinstance(name, str):
            raise TypeError("namespace and name must be strings")
        norm = _containers(containers, "%s/%s" % (namespace, name))
        with self._lock:
            self._pods.pop((namespace, name), None)
            self._pods[(namespace, name)] = norm

    def remove_pod(self, namespace, name):
        """Removes a pod; returns whether it was present."""
        with self._lock:
            return self._pods.pop((namespace, name), None) is not None

    def clear_pods(self):
        with self._lock:
            self._pods.clear()

    def pods(self):
        """The pod table: ``[{"namespace", "name", "containers"}]`` (copies)."""
        with self._lock:
            return [{"namespace": ns, "name": n, "containers": copy.deepcopy(c)} for (ns, n), c in self._pods.items()]

    def set_allocatable(self, devices=None, cpu_ids=()):
        """What ``GetAllocatableResources`` returns; ``devices=None`` (default) derives it from the pod table."""
        with self._lock:
            if devices is None:
                self._allocatable = None
            else:
                self._allocatable = {"devices": _devices(devices, "allocatable"), "cpu_ids": list(cpu_ids)}

    def set_shuffle(self, enabled=True, seed=None):
        """Randomises the order of pods, devices and device IDs in every response (as the kubelet's Go maps do)."""
        with self._lock:
            self._shuffle = random.Random(seed) if enabled else None

    # -- faults ----------------------------------------------------------------------------------------------------

    def set_get_mode(self, mode):
        """``"ok"``; ``"unimplemented"``: Get fails with UNIMPLEMENTED (kubelet < 1.27); ``"disabled"``: Get fails
        with UNKNOWN "PodResources API Get method disabled" (kubelet >= 1.27 with the feature gate off)."""
        if mode not in GET_MODES:
            raise ValueError("get mode must be one of %s" % ", ".join(GET_MODES))
        with self._lock:
            self._get_mode = mode

    def _add_rule(self, kind, method, count, **fields):
        rule = dict(kind=kind, methods=_methods(method), remaining=_count(count), **fields)
        with self._lock:
            rule["id"] = self._next_rule
            self._next_rule += 1
            self._rules.append(rule)
            return rule["id"]

    def inject_error(self, method, code, message="", count=None):
        """The next ``count`` calls (None: all calls) of ``method`` ("List", "Get", "GetAllocatableResources",
        a list of them, or "*" for any) fail with ``code`` (StatusCode, number or name) and ``message``. With "*"
        (or a list) the count is shared by the methods. Returns a rule id for ``clear_faults``."""
        return self._add_rule("error", method, count, code=status_code(code), message=str(message))

    def rate_limit(self, count=None, method="*"):
        """The kubelet's rate-limit answer: RESOURCE_EXHAUSTED "rejected by rate limit" for the next ``count``."""
        return self.inject_error(method, grpc.StatusCode.RESOURCE_EXHAUSTED, MSG_RATE_LIMIT, count)

    def inject_delay(self, method, seconds, count=None):
        """Sleeps ``seconds`` before answering the next ``count`` calls (None: all). The sleep ends early when the
        client gives up (deadline/cancel) or the server stops. Applied before error rules."""
        seconds = float(seconds)
        if seconds < 0:
            raise ValueError("delay must be >= 0")
        return self._add_rule("delay", method, count, seconds=seconds)

    def inject_raw(self, method, data, count=None):
        """Answers the next ``count`` calls with ``data`` (bytes) as the message body, e.g. invalid protobuf."""
        if isinstance(data, str):
            data = bytes.fromhex(data)
        return self._add_rule("raw", method, count, data=bytes(data))

    def pod_not_found(self, namespace, name, count):
        """The first ``count`` Get calls for this pod and List calls (any) behave as if the pod did not exist:
        Get fails with UNKNOWN "pod <name> in namespace <ns> not found", List omits it. Then it is found."""
        with self._lock:
            self._not_found[(namespace, name)] = _count(count)

    def clear_faults(self, rule_id=None):
        """Removes one rule (by id) or all rules, not-found counters and the Get mode."""
        with self._lock:
            if rule_id is not None:
                self._rules = [r for r in self._rules if r["id"] != rule_id]
                return
            self._rules = []
            self._not_found = {}
            self._get_mode = "ok"

    def faults(self):
        """The active rules (with ``remaining``, None = unlimited) and not-found counters, JSON-friendly."""
        with self._lock:
            rules = []
            for r in self._rules:
                d = {k: v for k, v in r.items() if k not in ("methods", "code", "data")}
                d["methods"] = sorted(r["methods"])
                if "code" in r:
                    d["code"] = r["code"].name
                if "data" in r:
                    d["data"] = r["data"].hex()
                rules.append(d)
            return {"rules": rules, "get_mode": self._get_mode,
                    "not_found": [{"namespace": ns, "name": n, "remaining": c}
                                  for (ns, n), c in self._not_found.items()]}

    # -- request log -----------------------------------------------------------------------------------------------

    def requests(self, method=None):
        """The request log, oldest first: ``{"seq", "method", "pod_name", "pod_namespace", "time", "code",
        "message", "duration"}``. ``pod_*`` are the Get request's fields (None for List and
        GetAllocatableResources); ``time`` is time.time() at arrival; ``code`` is the status name ("OK",
        "UNIMPLEMENTED", ...; "CANCELLED" when the client gave up during a delay; None while in progress)."""
        with self._lock:
            return [dict(e) for e in self._log if method is None or e["method"] == method]

    def calls(self, method=None):
        """How many calls (of ``method``, or all) arrived."""
        return len(self.requests(method))

    def clear_requests(self):
        with self._lock:
            self._log = []

    def wait_for_calls(self, n, method=None, timeout=10.0):
        """Waits until at least ``n`` calls (of ``method``) have completed; returns whether they did."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if sum(1 for e in self.requests(method) if e["code"] is not None) >= n:
                return True
            time.sleep(0.01)
        return False

    # -- RPC handlers ----------------------------------------------------------------------------------------------

    def _take(self, kind, method):
        """The first rule of ``kind`` for ``method`` with calls left, consuming one call (caller holds the lock)."""
        for r in self._rules:
            if r["kind"] == kind and method in r["methods"] and (r["remaining"] is None or r["remaining"] > 0):
                if r["remaining"] is not None:
                    r["remaining"] -= 1
                return r
        return None

    def _serve(self, method, context, request, answer):
        pod_name = request.pod_name if method == "Get" else None
        pod_ns = request.pod_namespace if method == "Get" else None
        entry = {"seq": 0, "method": method, "pod_name": pod_name, "pod_namespace": pod_ns, "time": time.time(),
                 "code": None, "message": None, "duration": None}
        start = time.monotonic()
        with self._lock:
            entry["seq"] = len(self._log) + 1
            self._log.append(entry)
            delay = self._take("delay", method)
        code, message = grpc.StatusCode.OK, ""
        try:
            if delay is not None and not self._sleep(delay["seconds"], context):
                code, message = grpc.StatusCode.CANCELLED, "client gave up during the injected delay"
                return b""
            with self._lock:
                err = self._take("error", method)
                if err is not None:
                    raise _Abort(err["code"], err["message"])
                if method == "Get" and self._get_mode == "unimplemented":
                    raise _Abort(grpc.StatusCode.UNIMPLEMENTED, MSG_GET_UNIMPLEMENTED)
                if method == "Get" and self._get_mode == "disabled":
                    raise _Abort(grpc.StatusCode.UNKNOWN, MSG_GET_DISABLED)
                raw = self._take("raw", method)
                if raw is not None:
                    return raw["data"]
                return answer(request)
        except _Abort as a:
            code, message = a.code, a.message
            context.abort(a.code, a.message)
        finally:
            with self._lock:
                entry["code"] = code.name
                entry["message"] = message
                entry["duration"] = round(time.monotonic() - start, 6)
                self._write_log(entry)

    def _sleep(self, seconds, context):
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return True
            if not context.is_active() or self._stopping.is_set():
                return False
            self._stopping.wait(min(left, 0.02))

    def _write_log(self, entry):
        if not self.log_path:
            return
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")

    def _rpc_list(self, request, context):
        return self._serve("List", context, request, self._answer_list)

    def _rpc_get(self, request, context):
        return self._serve("Get", context, request, self._answer_get)

    def _rpc_allocatable(self, request, context):
        return self._serve("GetAllocatableResources", context, request, self._answer_allocatable)

    # Answers run with the lock held.

    def _hidden(self, key, consume):
        left = self._not_found.get(key)
        if not left:
            return False
        if consume:
            self._not_found[key] = left - 1
        return True

    def _answer_list(self, _request):
        pods = []
        for key, containers in self._pods.items():
            if not self._hidden(key, consume=False):
                pods.append(self._pod_msg(key, containers))
        for key in list(self._not_found):
            self._hidden(key, consume=True)  # every List call counts against every not-found pod
        if self._shuffle is not None:
            self._shuffle.shuffle(pods)
        return self._pb2.ListPodResourcesResponse(pod_resources=pods)

    def _answer_get(self, request):
        key = (request.pod_namespace, request.pod_name)
        if self._hidden(key, consume=True) or key not in self._pods:
            raise _Abort(grpc.StatusCode.UNKNOWN, pod_not_found_message(request.pod_namespace, request.pod_name))
        return self._pb2.GetPodResourcesResponse(pod_resources=self._pod_msg(key, self._pods[key]))

    def _answer_allocatable(self, _request):
        if self._allocatable is not None:
            devices, cpus = self._allocatable["devices"], self._allocatable["cpu_ids"]
        else:
            devices, cpus = [], []
            for containers in self._pods.values():
                for c in containers:
                    devices.extend(c["devices"])
                    cpus.extend(c["cpu_ids"])
        return self._pb2.AllocatableResourcesResponse(devices=self._devices_msg(devices), cpu_ids=cpus)

    def _devices_msg(self, devices):
        pb2 = self._pb2
        out = []
        for d in devices:
            ids = list(d["device_ids"])
            if self._shuffle is not None:
                self._shuffle.shuffle(ids)
            m = pb2.ContainerDevices(resource_name=d["resource_name"], device_ids=ids)
            if d["numa"] is not None:
                m.topology.CopyFrom(pb2.TopologyInfo(nodes=[pb2.NUMANode(ID=n) for n in d["numa"]]))
            out.append(m)
        if self._shuffle is not None:
            self._shuffle.shuffle(out)
        return out

    def _pod_msg(self, key, containers):
        pb2 = self._pb2
        cs = [pb2.ContainerResources(name=c["name"], devices=self._devices_msg(c["devices"]), cpu_ids=c["cpu_ids"])
              for c in containers]
        return pb2.PodResources(namespace=key[0], name=key[1], containers=cs)


def _remove_stale_socket(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError("fake kubelet: %s exists and is not a socket; not removing it" % path)
    os.unlink(path)


# --------------------------------------------------------------------------------------------------------------------
# Control interface (process mode)

# Operations the control socket accepts: FakeKubelet methods with JSON arguments.
CONTROL_OPS = ("set_pod", "remove_pod", "clear_pods", "pods", "set_allocatable", "set_shuffle", "set_get_mode",
               "inject_error", "rate_limit", "inject_delay", "inject_raw", "pod_not_found", "clear_faults", "faults",
               "requests", "calls", "clear_requests", "reset")


def _dispatch(kubelet, command):
    if not isinstance(command, dict) or not isinstance(command.get("op"), str):
        raise ValueError('a command is {"op": NAME, "args": {...}}')
    op = command["op"]
    args = command.get("args") or {}
    if not isinstance(args, dict):
        raise ValueError("args must be an object")
    if op == "ping":
        return {"pid": os.getpid(), "socket": kubelet.socket_path}
    if op not in CONTROL_OPS:
        raise ValueError("unknown op %r" % op)
    return getattr(kubelet, op)(**args)


class _ControlHandler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            if not line.strip():
                continue
            try:
                reply = {"ok": True, "result": _dispatch(self.server.kubelet, json.loads(line))}
            except Exception as e:  # noqa: BLE001 - every error goes back to the client
                reply = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
            self.wfile.write((json.dumps(reply) + "\n").encode())
            self.wfile.flush()


class _ControlServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def serve_control(kubelet, control_path):
    """Serves the JSON-lines control protocol for ``kubelet`` on ``control_path``; returns the server (call
    ``shutdown()`` and ``server_close()`` to stop it)."""
    _remove_stale_socket(control_path)
    srv = _ControlServer(control_path, _ControlHandler)
    os.chmod(control_path, 0o600)
    srv.kubelet = kubelet
    threading.Thread(target=srv.serve_forever, name="fake-kubelet-control", daemon=True).start()
    return srv


class ControlClient:
    """Client of the control socket: ``call(op, **args)`` returns the result or raises ``RuntimeError``."""

    def __init__(self, control_path, timeout=10.0):
        self.control_path = control_path
        self.timeout = timeout

    def call(self, op, **args):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.control_path)
            s.sendall((json.dumps({"op": op, "args": args}) + "\n").encode())
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("fake kubelet control: connection closed before a reply")
                buf += chunk
        reply = json.loads(buf)
        if not reply.get("ok"):
            raise RuntimeError("fake kubelet control %s: %s" % (op, reply.get("error")))
        return reply.get("result")


class FakeKubeletProcess:
    """The fake kubelet as a child process (``python3 fake_kubelet.py``), driven through its control socket. It
    has the methods of ``FakeKubelet`` listed in ``CONTROL_OPS`` (bytes for ``inject_raw`` become hex, status
    codes become names). ``start()`` waits for the ready line; ``stop()`` ends the process by its pid."""

    def __init__(self, socket_path, control_path=None, log_path=None, state_path=None, python=sys.executable,
                 start_timeout=30.0):
        self.socket_path = os.path.abspath(socket_path)
        self.control_path = os.path.abspath(control_path or self.socket_path + ".control")
        self.log_path = log_path
        self.state_path = state_path
        self.python = python
        self.start_timeout = start_timeout
        self.proc = None
        self._stderr = None
        self.stderr_text = ""  # the child's stderr, after stop()
        self.control = ControlClient(self.control_path)

    def start(self):
        if self.proc is not None:
            return self
        cmd = [self.python, os.path.abspath(__file__), self.socket_path, "--control", self.control_path]
        if self.log_path:
            cmd += ["--log", self.log_path]
        if self.state_path:
            cmd += ["--state", self.state_path]
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty child never blocks on it
        proc = self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=self._stderr)
        ready = []
        reader = threading.Thread(target=lambda: ready.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.start_timeout)
        line = ready[0] if ready else b""
        if not line.startswith(b"{"):
            self.stop()
            raise RuntimeError("fake kubelet process did not become ready (stdout %r): %s"
                               % (line, self.stderr_text[-4000:]))
        return self

    def stop(self, timeout=10.0):
        """SIGTERM to the child (by pid), SIGKILL after ``timeout``; idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
        if self._stderr is not None:
            self._stderr.seek(0)
            self.stderr_text = self._stderr.read().decode(errors="replace")
            self._stderr.close()
            self._stderr = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def __getattr__(self, name):
        if name in CONTROL_OPS:
            def op(*args, **kwargs):
                if args:
                    raise TypeError("%s over the control socket takes keyword arguments only" % name)
                if "code" in kwargs and isinstance(kwargs["code"], grpc.StatusCode):
                    kwargs["code"] = kwargs["code"].name
                if isinstance(kwargs.get("data"), (bytes, bytearray)):
                    kwargs["data"] = bytes(kwargs["data"]).hex()
                return self.control.call(name, **kwargs)
            return op
        raise AttributeError(name)


# --------------------------------------------------------------------------------------------------------------------
# Command line


def main(argv=None):
    p = argparse.ArgumentParser(description="Fake kubelet PodResources v1 server on a unix socket.")
    p.add_argument("socket", help="unix socket path to serve v1.PodResourcesLister on")
    p.add_argument("--control", help="control socket path (default: SOCKET.control)")
    p.add_argument("--state", help='JSON file: a list of control commands [{"op": ..., "args": {...}}] run at start')
    p.add_argument("--log", help="append one JSON line per completed request to this file")
    p.add_argument("--workers", type=int, default=8, help="gRPC worker threads (default 8)")
    a = p.parse_args(argv)
    control_path = os.path.abspath(a.control or a.socket + ".control")

    kubelet = FakeKubelet(a.socket, max_workers=a.workers, log_path=a.log)
    if a.state:
        with open(a.state, encoding="utf-8") as f:
            commands = json.load(f)
        for c in commands if isinstance(commands, list) else [commands]:
            _dispatch(kubelet, c)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    ctl = serve_control(kubelet, control_path)
    try:
        kubelet.start()
        sys.stdout.write(json.dumps({"ready": True, "pid": os.getpid(), "socket": kubelet.socket_path,
                                     "control": control_path}) + "\n")
        sys.stdout.flush()
        while not done.wait(1.0):
            pass
    finally:
        kubelet.stop()
        ctl.shutdown()
        ctl.server_close()
        _remove_stale_socket(control_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
