"""Start and drive the Plexus test API server (testenv/apiserver/server.py) from pytest.

    from testenv.lib.kubeapi import KubeAPI   # with the repo root on sys.path

    @pytest.fixture
    def kube(tmp_path):
        with KubeAPI(tmp_path / "kube") as k:
            yield k

    kube.create_namespace("ns1")
    kube.create_pod("ns1", "web", {"k8s.v1.cni.cncf.io/networks": "macvlan"}, uid="1234")
    kube.apply_nad("ns1", "macvlan", '{"cniVersion":"1.0.0","type":"macvlan"}')
    kube.inject(method="GET", path="/pods/web$", action="status", code=429, retry_after=1, count=1)
    ... run the plugin with kube.kubeconfig_path ...
    assert len(kube.requests(method="GET", path="/pods/web$")) == 2

Python stdlib only. The server keeps its PKI, tokens, request log and (by default) objects in the state dir,
so restart() brings it back on the same port with the same CA and data.
"""

import atexit
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import weakref
from pathlib import Path
from urllib.parse import quote

SERVER = Path(__file__).resolve().parents[1] / "apiserver" / "server.py"
REPO = Path(__file__).resolve().parents[2]
NAD_CRD_DIR = REPO / "crds"
NAD_GROUP, NAD_VERSION, NAD_PLURAL = "k8s.cni.cncf.io", "v1", "network-attachment-definitions"
DRA_GROUP, DRA_VERSION = "resource.k8s.io", "v1"
DRA_API = f"/apis/{DRA_GROUP}/{DRA_VERSION}"
KUBECTL = shutil.which("kubectl")
HELPER_UA = "plexus-testenv/kubeapi"

_live = weakref.WeakSet()


@atexit.register
def _stop_all():
    for k in list(_live):
        try:
            k.close()
        except Exception:
            pass


def _server_module():
    """server.py imported as a module (for its NAD_CRD constant)."""
    import importlib.util
    mod = sys.modules.get("plexus_test_apiserver")
    if mod is None:
        spec = importlib.util.spec_from_file_location("plexus_test_apiserver", SERVER)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["plexus_test_apiserver"] = mod
    return mod


class KubeAPIError(Exception):
    def __init__(self, status, body, method, path):
        self.status, self.body = status, body
        msg = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path} -> {status}: {msg}")


class KubeAPI:
    """A running test API server. Usable as a context manager; stop() is idempotent."""

    def __init__(self, state_dir=None, *, port=0, persist=True, minor=32, preinstall_nad_crd=False,
                 extra_args=(), start=True, ready_timeout=20.0, bookmark_interval=None, paginate_rv0=False):
        self._own_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="plexus-kubeapi-")).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.persist, self.minor, self.preinstall_nad_crd = persist, minor, preinstall_nad_crd
        self.bookmark_interval = bookmark_interval   # --bookmark-interval (None: the server's default, 1 s)
        self.paginate_rv0 = paginate_rv0             # --paginate-rv0
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.proc = None
        self._log = None
        self.home = self.state_dir / "home"          # private HOME for kubectl (discovery cache, P4)
        self.home.mkdir(exist_ok=True)
        self.tokens_path = self.state_dir / "tokens"
        self.token_file = self.state_dir / "token"   # client-side token file (kubeconfig tokenFile)
        self.extra_tokens = []                       # add_token() entries, kept across rotate_token()
        if not self.tokens_path.exists():
            self.token = secrets.token_hex(16)
            self.readonly_token = secrets.token_hex(16)
            self.multus_token = secrets.token_hex(16)
            self._write_server_tokens()
        else:
            self._read_server_tokens()
        self.token_file.write_text(self.token + "\n")
        self._kubeconfigs = {}                        # path -> write_kubeconfig kwargs (rewritten on rotation)
        _live.add(self)
        if start:
            self.start()

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_path(self):
        return self.state_dir / "pki" / "ca.crt"

    @property
    def client_cert_path(self):
        return self.state_dir / "pki" / "client.crt"

    @property
    def client_key_path(self):
        return self.state_dir / "pki" / "client.key"

    @property
    def kubeconfig_path(self):
        return self.state_dir / "kubeconfig"

    @property
    def requests_path(self):
        return self.state_dir / "requests.jsonl"

    def start(self):
        """Start the server (on self.port if it is non-zero, e.g. after stop()) and wait for /readyz."""
        if self.running():
            return self
        port_file = self.state_dir / "port"
        if port_file.exists():
            port_file.unlink()
        cmd = [sys.executable, str(SERVER), "--state-dir", str(self.state_dir), "--port", str(self.port),
               "--minor", str(self.minor), "--exit-with-parent", str(os.getpid())]
        if self.persist:
            cmd.append("--persist")
        if self.preinstall_nad_crd:
            cmd.append("--preinstall-nad-crd")
        if self.bookmark_interval is not None:
            cmd += ["--bookmark-interval", str(self.bookmark_interval)]
        if self.paginate_rv0:
            cmd.append("--paginate-rv0")
        cmd += self.extra_args
        self._log = open(self.state_dir / "server.log", "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout
        last_err = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if port_file.exists():
                text = port_file.read_text().strip()
                if text:
                    self.port = int(text)
                    try:
                        st, _ = self._raw("GET", "/readyz", auth=False, timeout=2)
                        if st == 200:
                            if not self.kubeconfig_path.exists():
                                self.write_kubeconfig(self.kubeconfig_path)
                            return self
                    except (OSError, http.client.HTTPException) as e:
                        last_err = e
            time.sleep(0.05)
        log = self.server_log()[-3000:]
        self.stop()
        raise RuntimeError(f"test API server did not become ready ({last_err}); log:\n{log}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM):
        """Stop the server process (SIGTERM, then SIGKILL after 5 s). Pass sig=signal.SIGKILL for a crash."""
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if self._log:
            self._log.close()
            self._log = None

    def restart(self, **changes):
        """Stop and start again on the same port with the same CA, tokens and (with persist) objects."""
        self.stop()
        for k, v in changes.items():
            setattr(self, k, v)
        return self.start()

    def close(self):
        self.stop()
        _live.discard(self)
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def server_log(self):
        try:
            return (self.state_dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------------ kubeconfig / tokens
    def write_kubeconfig(self, path=None, *, token=None, use_token_file=False, embed_ca=False, client_cert=False,
                         server=None, ca_path=None, user="plexus", context="plexus", namespace=None):
        """Write a kubeconfig (YAML) and return its path. Auth: inline token (default), tokenFile
        (use_token_file=True -> self.token_file, or a path), or the admin client certificate (client_cert=True).
        Kubeconfigs written with default token arguments are rewritten by rotate_token()."""
        path = Path(path or self.kubeconfig_path)
        kwargs = dict(token=token, use_token_file=use_token_file, embed_ca=embed_ca, client_cert=client_cert,
                      server=server, ca_path=ca_path, user=user, context=context, namespace=namespace)
        ca = Path(ca_path or self.ca_path)
        if embed_ca:
            import base64
            ca_line = f"    certificate-authority-data: {base64.b64encode(ca.read_bytes()).decode()}"
        else:
            ca_line = f"    certificate-authority: {json.dumps(str(ca))}"
        if client_cert:
            auth = [f"    client-certificate: {json.dumps(str(self.client_cert_path))}",
                    f"    client-key: {json.dumps(str(self.client_key_path))}"]
        elif use_token_file:
            tf = self.token_file if use_token_file is True else Path(use_token_file)
            auth = [f"    tokenFile: {json.dumps(str(tf))}"]
        else:
            auth = [f"    token: {json.dumps(token or self.token)}"]
        lines = ["apiVersion: v1", "kind: Config", "clusters:", "- name: plexus-test", "  cluster:",
                 f"    server: {json.dumps(server or self.url)}", ca_line,
                 "users:", f"- name: {json.dumps(user)}", "  user:", *auth,
                 "contexts:", f"- name: {json.dumps(context)}", "  context:", "    cluster: plexus-test",
                 f"    user: {json.dumps(user)}"]
        if namespace:
            lines.append(f"    namespace: {json.dumps(namespace)}")
        lines += [f"current-context: {json.dumps(context)}", "preferences: {}"]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, path)
        if token is None:
            self._kubeconfigs[path] = kwargs
        return path

    def _token_entries(self):
        return [{"token": self.token, "user": "admin", "role": "admin"},
                {"token": self.readonly_token, "user": "viewer", "role": "readonly"},
                {"token": self.multus_token, "user": "system:serviceaccount:kube-system:multus", "role": "multus"},
                *self.extra_tokens]

    def _write_server_tokens(self):
        lines = [f"{e['token']} {e['user']} {e['role']}\n" for e in self._token_entries()]
        tmp = self.tokens_path.with_name("tokens.tmp")
        tmp.write_text("".join(lines))
        os.replace(tmp, self.tokens_path)

    def add_token(self, user, role, token=None):
        """Make one more token valid (user name, role: a builtin one, a define_roles() one, or "rbac" to be
        authorized by the RBAC objects stored in the server). Returns the token."""
        token = token or secrets.token_hex(16)
        self.extra_tokens = [e for e in self.extra_tokens if e["user"] != user]
        self.extra_tokens.append({"token": token, "user": user, "role": role})
        if self.running():
            self.control("PUT", "/_test/tokens", {"tokens": self._token_entries()})
        else:
            self._write_server_tokens()
        return token

    def define_roles(self, roles):
        """Define roles from Kubernetes PolicyRules: {name: [{"apiGroups":..,"resources":..,"verbs":..}, ...]}."""
        return self.control("PUT", "/_test/roles", {"roles": roles})["roles"]

    def _read_server_tokens(self):
        by_role = {}
        for line in self.tokens_path.read_text().splitlines():
            p = line.split()
            if len(p) >= 3:
                by_role.setdefault(p[2], p[0])
        self.token = by_role.get("admin") or secrets.token_hex(16)
        self.readonly_token = by_role.get("readonly") or secrets.token_hex(16)
        self.multus_token = by_role.get("multus") or secrets.token_hex(16)

    def rotate_token(self, new=None, *, update_clients=True):
        """Replace the admin token on the server (old one -> 401 from the next request). With update_clients,
        also rewrite self.token_file and the kubeconfigs written by write_kubeconfig(). Returns the new token."""
        self.token = new or secrets.token_hex(16)
        if self.running():
            self.control("PUT", "/_test/tokens", {"tokens": self._token_entries()})
        else:
            self._write_server_tokens()
        if update_clients:
            self.token_file.write_text(self.token + "\n")
            for path, kw in list(self._kubeconfigs.items()):
                self.write_kubeconfig(path, **kw)
        return self.token

    # ------------------------------------------------------------------ HTTP
    def ssl_context(self):
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        return ctx

    def request(self, method, path, body=None, *, headers=None, auth=True, token=None, ctx=None, timeout=15,
                user_agent=HELPER_UA):
        """One request on a fresh TLS connection: (status, response headers, parsed body). Dict/list bodies are
        JSON-encoded. With user_agent=None the request carries no User-Agent and shows up in requests()."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx or self.ssl_context(), timeout=timeout)
        try:
            hs = {"Accept": "application/json"}
            if user_agent:
                hs["User-Agent"] = user_agent
            if auth:
                hs["Authorization"] = f"Bearer {token or self.token}"
            if body is not None and not isinstance(body, (bytes, str)):
                body = json.dumps(body)
                hs["Content-Type"] = "application/json"
            hs.update(headers or {})
            conn.request(method, path, body=body, headers=hs)
            r = conn.getresponse()
            data = r.read()
            try:
                parsed = json.loads(data) if data else None
            except ValueError:
                parsed = data
            return r.status, dict(r.getheaders()), parsed
        finally:
            conn.close()

    def _raw(self, method, path, body=None, *, headers=None, auth=True, token=None, timeout=15):
        status, _, parsed = self.request(method, path, body, headers=headers, auth=auth, token=token, timeout=timeout)
        if isinstance(parsed, bytes):
            parsed = parsed.decode(errors="replace")
        return status, parsed

    def api(self, method, path, body=None, *, content_type=None, token=None, ok=(200, 201), headers=None):
        """Authenticated API call; returns the decoded JSON body and raises KubeAPIError when the status is not
        in ok (ok=None returns (status, body) instead). Dict/list bodies are JSON-encoded."""
        hs = dict(headers or {})
        if body is not None:
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            hs.setdefault("Content-Type", content_type or "application/json")
        status, data = self._raw(method, path, body, headers=hs, token=token)
        if ok is None:
            return status, data
        if status not in ok:
            raise KubeAPIError(status, data, method, path)
        return data

    def control(self, method, path, body=None):
        status, data = self._raw(method, path, body, auth=False)
        if status >= 300:
            raise KubeAPIError(status, data, method, path)
        return data

    # ------------------------------------------------------------------ objects
    def create_namespace(self, name, exist_ok=True):
        st, data = self.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                             "metadata": {"name": name}}, ok=None)
        if st == 201 or (st == 409 and exist_ok):
            return data
        raise KubeAPIError(st, data, "POST", "/api/v1/namespaces")

    def create_pod(self, ns, name, annotations=None, uid=None, *, labels=None, node_name=None, spec=None,
                   status=None, create_namespace=True):
        """Create a pod (namespace created if needed). uid sets metadata.uid (test-server extension), so it can
        match K8S_POD_UID. Returns the stored pod."""
        if create_namespace:
            self.create_namespace(ns)
        md = {"name": name, "namespace": ns}
        if annotations:
            md["annotations"] = dict(annotations)
        if labels:
            md["labels"] = dict(labels)
        if uid:
            md["uid"] = uid
        sp = spec or {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]}
        if node_name:
            sp = dict(sp, nodeName=node_name)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": sp}
        if status:
            pod["status"] = status
        return self.api("POST", f"/api/v1/namespaces/{ns}/pods", pod)

    def get_pod(self, ns, name):
        """The pod as a dict, or None when it does not exist."""
        st, data = self.api("GET", f"/api/v1/namespaces/{ns}/pods/{quote(name)}", ok=None)
        if st == 404:
            return None
        if st != 200:
            raise KubeAPIError(st, data, "GET", name)
        return data

    def pod_annotations(self, ns, name):
        pod = self.get_pod(ns, name)
        return None if pod is None else (pod["metadata"].get("annotations") or {})

    def delete_pod(self, ns, name):
        return self.api("DELETE", f"/api/v1/namespaces/{ns}/pods/{quote(name)}", ok=(200, 404))

    def install_nad_crd(self):
        """Install the NAD CRD through the API (no kubectl), unless it is already there."""
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        st, _ = self.api("GET", f"{path}/{NAD_PLURAL}.{NAD_GROUP}", ok=None)
        if st == 404:
            self.api("POST", path, _server_module().NAD_CRD)

    def apply_nad(self, ns, name, config=None, annotations=None, *, create_namespace=True):
        """Create or replace a NetworkAttachmentDefinition. config: CNI JSON string (dict is serialised),
        None = no spec.config. Installs the CRD and the namespace if needed. Returns the stored object."""
        self.install_nad_crd()
        if create_namespace:
            self.create_namespace(ns)
        if isinstance(config, (dict, list)):
            config = json.dumps(config)
        obj = {"apiVersion": f"{NAD_GROUP}/{NAD_VERSION}", "kind": "NetworkAttachmentDefinition",
               "metadata": {"name": name, "namespace": ns}, "spec": {}}
        if annotations:
            obj["metadata"]["annotations"] = dict(annotations)
        if config is not None:
            obj["spec"]["config"] = config
        base = f"/apis/{NAD_GROUP}/{NAD_VERSION}/namespaces/{ns}/{NAD_PLURAL}"
        st, data = self.api("POST", base, obj, ok=None)
        if st == 409:
            return self.api("PUT", f"{base}/{quote(name)}", obj)
        if st != 201:
            raise KubeAPIError(st, data, "POST", base)
        return data

    def get_nad(self, ns, name):
        st, data = self.api("GET", f"/apis/{NAD_GROUP}/{NAD_VERSION}/namespaces/{ns}/{NAD_PLURAL}/{quote(name)}",
                            ok=None)
        return None if st == 404 else data

    def delete_nad(self, ns, name):
        return self.api("DELETE", f"/apis/{NAD_GROUP}/{NAD_VERSION}/namespaces/{ns}/{NAD_PLURAL}/{quote(name)}",
                        ok=(200, 404))

    def events(self, ns=None):
        path = f"/api/v1/namespaces/{ns}/events" if ns else "/api/v1/events"
        return self.api("GET", path)["items"]

    # ------------------------------------------------------------------ DRA (resource.k8s.io/v1)
    @staticmethod
    def device_attributes(attrs):
        """{name: value} -> ResourceSlice device attributes: str -> {"string"}, bool -> {"bool"}, int -> {"int"};
        a dict is taken as it is (e.g. {"version": "1.2.3"})."""
        out = {}
        for k, v in (attrs or {}).items():
            if isinstance(v, dict):
                out[k] = dict(v)
            elif isinstance(v, bool):
                out[k] = {"bool": v}
            elif isinstance(v, int):
                out[k] = {"int": v}
            else:
                out[k] = {"string": str(v)}
        return out

    def server_side_apply(self, path, obj, field_manager, *, force=False, ok=(200, 201)):
        """PATCH application/apply-patch+yaml (the body is JSON) with ?fieldManager= (and force=true). Returns the
        object, or (status, body) with ok=None."""
        query = f"?fieldManager={quote(field_manager)}" + ("&force=true" if force else "")
        return self.api("PATCH", path + query, obj, content_type="application/apply-patch+yaml", ok=ok)

    def apply_resource_slice(self, node, driver, pool, devices, *, name=None, generation=1, slice_count=1,
                             field_manager="plexus-testenv", labels=None):
        """Server-side apply a ResourceSlice for `node` (None: allNodes) as a DRA driver publishes it. devices: list
        of (name, {attribute: value}) (see device_attributes()) or Device dicts. Returns the stored slice."""
        name = name or re.sub(r"[^a-z0-9.-]+", "-", f"{node or 'all'}-{driver}-{pool}".lower()).strip("-.")
        devs = [d if isinstance(d, dict) else {"name": d[0], **({"attributes": self.device_attributes(d[1])}
                                                                if len(d) > 1 and d[1] else {})} for d in devices]
        spec = {"driver": driver, "pool": {"name": pool, "generation": generation, "resourceSliceCount": slice_count}}
        if node:
            spec["nodeName"] = node
        else:
            spec["allNodes"] = True
        spec["devices"] = devs
        obj = {"apiVersion": f"{DRA_GROUP}/{DRA_VERSION}", "kind": "ResourceSlice", "metadata": {"name": name},
               "spec": spec}
        if labels:
            obj["metadata"]["labels"] = dict(labels)
        return self.server_side_apply(f"{DRA_API}/resourceslices/{quote(name)}", obj, field_manager, force=True)

    def resource_slices(self, node=None, driver=None):
        """ResourceSlices, filtered with the spec.nodeName / spec.driver field selectors."""
        sel = ",".join(f"{k}={v}" for k, v in (("spec.nodeName", node), ("spec.driver", driver)) if v is not None)
        return self.api("GET", f"{DRA_API}/resourceslices" + (f"?fieldSelector={quote(sel)}" if sel else ""))["items"]

    def create_device_class(self, name, selectors=(), *, exist_ok=True):
        """A DeviceClass; selectors: CEL expressions (e.g. 'device.driver == "net.example.com"')."""
        obj = {"apiVersion": f"{DRA_GROUP}/{DRA_VERSION}", "kind": "DeviceClass", "metadata": {"name": name},
               "spec": {"selectors": [{"cel": {"expression": e}} for e in selectors]} if selectors else {}}
        st, data = self.api("POST", f"{DRA_API}/deviceclasses", obj, ok=None)
        if st == 201 or (st == 409 and exist_ok):
            return data
        raise KubeAPIError(st, data, "POST", f"{DRA_API}/deviceclasses")

    def create_resource_claim(self, ns, name, requests, *, create_namespace=True, labels=None):
        """A ResourceClaim. requests: list of DeviceRequest dicts or (request name, device class name[, count])
        tuples. Returns the stored claim (with the server's defaults)."""
        if create_namespace:
            self.create_namespace(ns)
        reqs = []
        for r in requests:
            if isinstance(r, dict):
                reqs.append(r)
            else:
                exactly = {"deviceClassName": r[1]}
                if len(r) > 2:
                    exactly["count"] = r[2]
                reqs.append({"name": r[0], "exactly": exactly})
        obj = {"apiVersion": f"{DRA_GROUP}/{DRA_VERSION}", "kind": "ResourceClaim",
               "metadata": {"name": name, "namespace": ns}, "spec": {"devices": {"requests": reqs}}}
        if labels:
            obj["metadata"]["labels"] = dict(labels)
        return self.api("POST", f"{DRA_API}/namespaces/{ns}/resourceclaims", obj)

    def resource_claim(self, ns, name):
        """The ResourceClaim as a dict, or None when it does not exist."""
        st, data = self.api("GET", f"{DRA_API}/namespaces/{ns}/resourceclaims/{quote(name)}", ok=None)
        if st == 404:
            return None
        if st != 200:
            raise KubeAPIError(st, data, "GET", name)
        return data

    def allocate_claim(self, ns, name, results, *, node=None, reserved_for=None, field_manager="kube-scheduler"):
        """Write status.allocation through /status as the DRA scheduler does (GET, then PUT; retried on 409).
        results: DeviceRequestAllocationResult dicts or (request, driver, pool, device) tuples; node: adds the
        allocation's nodeSelector for that node; reserved_for: [(pod name, pod uid)]. Returns the claim."""
        res = [r if isinstance(r, dict) else {"request": r[0], "driver": r[1], "pool": r[2], "device": r[3]}
               for r in results]
        allocation = {"devices": {"results": res}}
        if node:
            allocation["nodeSelector"] = {"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [node]}]}]}
        path = f"{DRA_API}/namespaces/{ns}/resourceclaims/{quote(name)}/status?fieldManager={quote(field_manager)}"
        for _ in range(10):
            claim = self.resource_claim(ns, name)
            if claim is None:
                raise KubeAPIError(404, {"message": f"resourceclaim {ns}/{name} not found"}, "GET", name)
            claim.setdefault("status", {})["allocation"] = allocation
            if reserved_for:
                claim["status"]["reservedFor"] = [{"resource": "pods", "name": p, "uid": u} for p, u in reserved_for]
            st, data = self.api("PUT", path, claim, ok=None)
            if st != 409:
                if st != 200:
                    raise KubeAPIError(st, data, "PUT", path)
                return data
        raise KubeAPIError(409, data, "PUT", path)

    def apply_claim_device_status(self, ns, name, devices, field_manager, *, force=False, ok=(200,)):
        """Server-side apply status.devices (AllocatedDeviceStatus dicts) on /status as `field_manager`, like a
        DRA driver or Plexus. Returns the claim, or (status, body) with ok=None."""
        obj = {"apiVersion": f"{DRA_GROUP}/{DRA_VERSION}", "kind": "ResourceClaim",
               "metadata": {"name": name, "namespace": ns}, "status": {"devices": list(devices)}}
        return self.server_side_apply(f"{DRA_API}/namespaces/{ns}/resourceclaims/{quote(name)}/status", obj,
                                      field_manager, force=force, ok=ok)

    def set_pod_claim_statuses(self, ns, pod, claims):
        """Set the pod's status.resourceClaimStatuses (as the resourceclaim controller does): claims is a list of
        (pod claim name, ResourceClaim name or None). Returns the pod."""
        statuses = []
        for pod_claim, claim in claims:
            entry = {"name": pod_claim}
            if claim is not None:
                entry["resourceClaimName"] = claim
            statuses.append(entry)
        return self.api("PATCH", f"/api/v1/namespaces/{ns}/pods/{quote(pod)}/status",
                        {"status": {"resourceClaimStatuses": statuses}}, content_type="application/merge-patch+json")

    # ------------------------------------------------------------------ kubectl
    def kubectl(self, *args, input=None, check=True, timeout=60, kubeconfig=None, request_timeout="20s"):
        """Run kubectl with a private HOME and this server's kubeconfig. Returns CompletedProcess (text);
        raises RuntimeError with stderr when check and the exit code is non-zero."""
        if KUBECTL is None:
            raise RuntimeError("kubectl not found")
        env = dict(os.environ, HOME=str(self.home), KUBECONFIG=str(kubeconfig or self.kubeconfig_path))
        env.pop("KUBERNETES_SERVICE_HOST", None)
        cmd = [KUBECTL, *map(str, args)]
        if request_timeout and not any(str(a).startswith("--request-timeout") for a in args):
            cmd.append(f"--request-timeout={request_timeout}")
        r = subprocess.run(cmd, input=input, capture_output=True, text=True, env=env, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}{r.stdout}")
        return r

    # ------------------------------------------------------------------ request log / faults
    def requests(self, method=None, path=None, *, user_agent=None, since=0, include_helper=False):
        """Logged API requests, oldest first (dicts: seq, ts, time, method, path, query, status, user_agent, user,
        accept, content_type, conn, duration_ms; fault/faults when a fault rule fired; status 0 = no response).
        Filters: method (exact), path and user_agent (regex, re.search), since (seq). Requests made by this
        helper itself (User-Agent plexus-testenv/kubeapi) are left out unless include_helper=True."""
        items = []
        try:
            with open(self.requests_path) as f:
                for line in f:
                    if line.strip():
                        try:
                            items.append(json.loads(line))
                        except ValueError:
                            pass
        except OSError:
            return []
        return [e for e in items if e["seq"] > since and (method is None or e["method"] == method.upper())
                and (include_helper or e.get("user_agent") != HELPER_UA)
                and (path is None or re.search(path, e["path"]))
                and (user_agent is None or re.search(user_agent, e.get("user_agent", "")))]

    def clear_requests(self):
        if self.running():
            self.control("DELETE", "/_test/requests")
        else:
            self.requests_path.write_text("")

    def inject(self, method=None, path=None, action="status", code=None, count=1, retry_after=None, delay_ms=None,
               **extra):
        """Add a fault rule; returns its id. method: "GET", "GET,PUT" or None (any); path: regex searched in
        the URL path (or path_prefix=...). action: status|reset|close|truncate|delay. count: times it fires
        (None = unlimited). extra: skip, query, user_agent, reason, message, body, headers, content_type."""
        rule = {"action": action, "count": count}
        if method:
            rule["method"] = method
        if path:
            rule["path"] = path
        if code is not None:
            rule["code"] = code
        if retry_after is not None:
            rule["retry_after"] = retry_after
        if delay_ms is not None:
            rule["delay_ms"] = delay_ms
        rule.update(extra)
        return self.control("POST", "/_test/faults", rule)["ids"][0]

    def faults(self):
        return self.control("GET", "/_test/faults")["items"]

    # ------------------------------------------------------------------ watch history / bulk load / watch cuts
    def compact(self):
        """POST /_test/compact: compact the watch history at the current RV. Every open watch gets a 410 ERROR
        event and ends; watches and continue tokens from an older RV get 410. Returns the new floor (an RV
        string; lists and new watches from "" continue from it)."""
        return self.control("POST", "/_test/compact")["floor"]

    def bulk_create(self, objects, *, create_namespaces=True, check=True, timeout=120):
        """POST /_test/bulk: create many objects (full JSON with apiVersion and kind) as POSTs would, quickly.
        Missing namespaces are created (unless create_namespaces=False). Returns {"created", "namespacesCreated",
        "byResource", "errors", "resourceVersion", "floor", "seconds"}; with check, raises KubeAPIError when an
        object failed."""
        body = {"objects": list(objects)}
        if not create_namespaces:
            body["createNamespaces"] = False
        status, data = self._raw("POST", "/_test/bulk", json.dumps(body, separators=(",", ":")),
                                 headers={"Content-Type": "application/json"}, auth=False, timeout=timeout)
        if status >= 300 or (check and data.get("errors")):
            raise KubeAPIError(status if status >= 300 else 422,
                               data if status >= 300 else {"message": json.dumps(data["errors"][:5])},
                               "POST", "/_test/bulk")
        return data

    def drop_watches(self):
        """POST /_test/drop-watches: cut every open watch connection (TCP close without the terminating chunk).
        Returns how many were cut."""
        return self.control("POST", "/_test/drop-watches")["dropped"]

    def open_watches(self):
        """GET /_test/watches: the open watches ({"path", "query", "conn"} dicts)."""
        return self.control("GET", "/_test/watches")["items"]

    def clear_faults(self):
        self.control("DELETE", "/_test/faults")

    def issue_client_cert(self, name, cn, org):
        """Issue pki/<name>.{crt,key} signed by the test CA; org picks the role (system:masters|readonly|multus)."""
        r = subprocess.run([sys.executable, str(SERVER), "--state-dir", str(self.state_dir),
                            "--issue-client-cert", name, cn, org], capture_output=True, text=True, check=True)
        d = json.loads(r.stdout)
        return Path(d["cert"]), Path(d["key"])
