"""Watch and list behaviour of the Plexus test API server (testenv/apiserver/server.py) that a long-running
client (a reflector: list, then watch from the list's resourceVersion) depends on: periodic BOOKMARK events
(allowWatchBookmarks, --bookmark-interval), compaction (POST /_test/compact: 410 ERROR events, 410 for old RVs and
continue tokens), list pagination (limit / continue / remainingItemCount), bulk loading (POST /_test/bulk) and cut
watch connections (POST /_test/drop-watches). Raw chunked watches are read with a small parser so that the
terminating chunk (a clean end) can be told from a cut connection."""

import json
import shutil
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

REPO = str(Path(__file__).resolve().parents[2])
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from testenv.lib.kubeapi import KubeAPI  # noqa: E402

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")

NAD_API = "/apis/k8s.cni.cncf.io/v1"
NAD_PLURAL = "network-attachment-definitions"


@pytest.fixture
def kube(tmp_path):
    k = KubeAPI(tmp_path / "kube", bookmark_interval=0.3, preinstall_nad_crd=True)
    try:
        yield k
    finally:
        k.close()


class RawWatch:
    """A watch on its own TLS connection, with the chunked encoding parsed here: next() returns one event, or None
    once the stream ended; `ended` is then "terminated" (the final 0-length chunk came) or "eof" (the connection
    was closed without it)."""

    def __init__(self, kube, path, timeout=10):
        self.sock = kube.ssl_context().wrap_socket(socket.create_connection(("127.0.0.1", kube.port), timeout=timeout),
                                                   server_hostname="127.0.0.1")
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{kube.port}\r\n"
                           f"Authorization: Bearer {kube.token}\r\nAccept: application/json\r\n"
                           "User-Agent: watch-test/1\r\n\r\n").encode())
        self.buf, self.lines, self.pending, self.ended, self.error = bytearray(), bytearray(), [], None, None
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        assert self.headers.get("transfer-encoding") == "chunked", self.headers

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no watch data in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no watch data in time")
        except (ssl.SSLError, OSError) as e:
            self.error, data = e, b""
        if not data:
            raise EOFError
        self.buf += data

    def _chunk(self):
        """One complete chunk's data from the buffer (b"" for the final chunk), or None when incomplete."""
        i = self.buf.find(b"\r\n")
        if i < 0:
            return None
        size = int(bytes(self.buf[:i]).split(b";")[0], 16)
        if size == 0:
            return b""
        if len(self.buf) < i + 2 + size + 2:
            return None
        data = bytes(self.buf[i + 2:i + 2 + size])
        del self.buf[:i + 2 + size + 2]
        return data

    def next(self, timeout=5.0):
        if self.pending:
            return self.pending.pop(0)
        if self.ended:
            return None
        deadline = time.monotonic() + timeout
        try:
            while not self.pending:
                data = self._chunk()
                if data is None:
                    self._fill(deadline)
                    continue
                if data == b"":
                    self.ended = "terminated"
                    return None
                self.lines += data
                while b"\n" in self.lines:
                    line, _, rest = bytes(self.lines).partition(b"\n")
                    self.lines = bytearray(rest)
                    if line.strip():
                        self.pending.append(json.loads(line))
        except EOFError:
            self.ended = "eof"
            return None
        return self.pending.pop(0)

    def collect(self, seconds):
        """Events until the stream ends or `seconds` passed."""
        out, deadline = [], time.monotonic() + seconds
        while True:
            try:
                ev = self.next(max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                return out
            if ev is None:
                return out
            out.append(ev)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def watch_path(base, rv=None, **params):
    q = {"watch": "1", **({"resourceVersion": rv} if rv is not None else {}), **params}
    return base + "?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in q.items())


def wait_for_watches(kube, n, timeout=5):
    """Until n watches are open (n=0: until none is)."""
    deadline = time.monotonic() + timeout
    while (len(kube.open_watches()) < n) if n else kube.open_watches():
        assert time.monotonic() < deadline, kube.open_watches()
        time.sleep(0.02)


def pod(ns, name, node=None, labels=None):
    md = {"name": name, "namespace": ns}
    if labels:
        md["labels"] = labels
    spec = {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}


def nad(ns, name):
    return {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"config": json.dumps({"cniVersion": "1.0.0", "name": name, "type": "macvlan"})}}


def rv_of(ev):
    return int(ev["object"]["metadata"]["resourceVersion"])


# ------------------------------------------------------------------------------------------ bookmarks


def test_periodic_bookmarks_on_an_idle_watch(kube):
    kube.create_namespace("idle")
    lst = kube.api("GET", "/api/v1/namespaces/idle/pods")
    rv0 = int(lst["metadata"]["resourceVersion"])
    w = RawWatch(kube, watch_path("/api/v1/namespaces/idle/pods", rv0, allowWatchBookmarks="true", timeoutSeconds=2))
    plain = RawWatch(kube, watch_path(f"{NAD_API}/namespaces/idle/{NAD_PLURAL}", rv0, timeoutSeconds=2))
    try:
        evs = w.collect(1.0)
        assert [e["type"] for e in evs] == ["BOOKMARK"] * len(evs) and len(evs) >= 2, evs
        assert evs[0] == {"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {
            "resourceVersion": str(rv0), "creationTimestamp": None}, "spec": {"containers": None}, "status": {}}}
        # changes to other resources: the bookmark carries the global RV (the watch has passed it)
        other = kube.api("POST", "/api/v1/namespaces/idle/configmaps", {"metadata": {"name": "cm"}})
        crv = int(other["metadata"]["resourceVersion"])
        evs += w.collect(5)
        assert w.ended == "terminated"          # timeoutSeconds=2: a clean end with the final chunk
        rvs = [rv_of(e) for e in evs]
        assert all(e["type"] == "BOOKMARK" for e in evs) and len(evs) >= 4, evs
        assert rvs == sorted(rvs) and rvs[-1] == crv, rvs
        # no allowWatchBookmarks, no bookmarks
        assert plain.collect(5) == [] and plain.ended == "terminated"
    finally:
        w.close()
        plain.close()


def test_bookmark_rvs_are_monotone_and_not_behind_events(kube):
    kube.create_namespace("ns1")
    rv0 = kube.api("GET", "/api/v1/namespaces/ns1/pods")["metadata"]["resourceVersion"]
    w = RawWatch(kube, watch_path("/api/v1/namespaces/ns1/pods", rv0, allowWatchBookmarks="1", timeoutSeconds=3,
                                  labelSelector="app=web"))
    nw = RawWatch(kube, watch_path(f"{NAD_API}/{NAD_PLURAL}", rv0, allowWatchBookmarks="true", timeoutSeconds=3))

    def writer():
        for i in range(25):
            kube.create_pod("ns1", f"p{i}", labels={"app": "web" if i % 2 else "db"}, create_namespace=False)
            if i % 5 == 0:
                kube.apply_nad("ns1", f"n{i}", {"cniVersion": "1.0.0", "type": "bridge"}, create_namespace=False)
            time.sleep(0.06)
    t = threading.Thread(target=writer)
    t.start()
    try:
        evs, nevs = w.collect(6), nw.collect(6)
    finally:
        t.join()
        w.close()
        nw.close()
    for stream, kind, n_added in ((evs, "Pod", 12), (nevs, "NetworkAttachmentDefinition", 5)):
        types = [e["type"] for e in stream]
        assert types.count("ADDED") == n_added and types.count("BOOKMARK") >= 5, types
        rvs = [rv_of(e) for e in stream]
        assert rvs == sorted(rvs), rvs                 # never an RV lower than one already sent
        added = [rv_of(e) for e in stream if e["type"] == "ADDED"]
        assert len(set(added)) == len(added)
        assert all(e["object"]["kind"] == kind for e in stream if e["type"] == "BOOKMARK")
    assert all(e["object"]["metadata"]["labels"]["app"] == "web" for e in evs if e["type"] == "ADDED")
    # the last bookmark has caught up with the global RV (filtered-out pods and the other resource included)
    final = int(kube.api("GET", "/api/v1/pods")["metadata"]["resourceVersion"])
    assert rv_of([e for e in evs if e["type"] == "BOOKMARK"][-1]) == final
    assert rv_of([e for e in nevs if e["type"] == "BOOKMARK"][-1]) == final


def test_bookmark_interval_default_and_disabled(tmp_path):
    for interval, seconds, expect in ((None, 2.5, (2, 3)), (0, 1.2, (0, 0))):
        with KubeAPI(tmp_path / f"kube{interval}", bookmark_interval=interval) as k:
            rv = k.api("GET", "/api/v1/pods")["metadata"]["resourceVersion"]
            w = RawWatch(k, watch_path("/api/v1/pods", rv, allowWatchBookmarks="true", timeoutSeconds=seconds))
            try:
                n = sum(1 for e in w.collect(5) if e["type"] == "BOOKMARK")
            finally:
                w.close()
            assert w.ended == "terminated" and expect[0] <= n <= expect[1], (interval, n)


def test_python_client_watch_bookmarks(kube):
    pytest.importorskip("kubernetes")
    from kubernetes import client, config, watch
    kube.create_namespace("ns1")
    api_client = config.new_client_from_config(config_file=str(kube.kubeconfig_path))
    core = client.CoreV1Api(api_client)
    rv = core.list_namespaced_pod("ns1").metadata.resource_version
    threading.Timer(0.5, kube.create_pod, ("ns1", "late")).start()
    w = watch.Watch()
    seen = []
    for ev in w.stream(core.list_namespaced_pod, "ns1", resource_version=rv, allow_watch_bookmarks=True,
                       timeout_seconds=2):
        seen.append((ev["type"], int(ev["raw_object"]["metadata"]["resourceVersion"])))
    types = [t for t, _ in seen]
    assert types.count("ADDED") == 1 and types.count("BOOKMARK") >= 4, seen
    assert [r for _, r in seen] == sorted(r for _, r in seen)
    assert int(w.resource_version) == seen[-1][1]     # the client takes the RV from the bookmarks
    # without allow_watch_bookmarks: none
    seen = [ev["type"] for ev in watch.Watch().stream(core.list_namespaced_pod, "ns1", resource_version=rv,
                                                      timeout_seconds=1)]
    assert seen == ["ADDED"]
    # custom objects (the NAD resource) too
    co = client.CustomObjectsApi(api_client)
    seen = [ev["type"] for ev in watch.Watch().stream(co.list_namespaced_custom_object, "k8s.cni.cncf.io", "v1",
                                                      "ns1", NAD_PLURAL, allow_watch_bookmarks=True,
                                                      resource_version=rv, timeout_seconds=1)]
    assert seen and set(seen) == {"BOOKMARK"}


# ------------------------------------------------------------------------------------------ compaction


def test_compaction_ends_open_watches_with_410(kube):
    kube.create_pod("ns1", "a")
    lst = kube.api("GET", "/api/v1/pods")
    old = lst["metadata"]["resourceVersion"]
    watches = [RawWatch(kube, watch_path("/api/v1/pods", old, allowWatchBookmarks="true")),
               RawWatch(kube, watch_path(f"{NAD_API}/{NAD_PLURAL}", old)),
               RawWatch(kube, watch_path("/api/v1/namespaces", "0"))]
    try:
        assert watches[2].collect(0.3)     # the initial ADDED events
        wait_for_watches(kube, 3)
        t0 = time.monotonic()
        floor = kube.compact()
        assert int(floor) > int(old)
        for w in watches:
            evs = [e for e in w.collect(5) if e["type"] != "BOOKMARK"]
            assert w.ended == "terminated", evs
            assert len(evs) == 1 and evs[0]["type"] == "ERROR", evs
            st = evs[0]["object"]
            assert (st["kind"], st["status"], st["code"], st["reason"]) == ("Status", "Failure", 410, "Expired")
            assert st["message"].startswith("too old resource version: ")
        assert time.monotonic() - t0 < 1.5
    finally:
        for w in watches:
            w.close()
    wait_for_watches(kube, 0)
    # a new watch from the old RV: 410 at once; from the new list's RV: works
    w = RawWatch(kube, watch_path("/api/v1/pods", old))
    try:
        evs = w.collect(2)
        assert [e["type"] for e in evs] == ["ERROR"] and evs[0]["object"]["code"] == 410 and w.ended == "terminated"
    finally:
        w.close()
    new_rv = kube.api("GET", "/api/v1/pods")["metadata"]["resourceVersion"]
    assert new_rv == floor
    w = RawWatch(kube, watch_path("/api/v1/pods", new_rv, timeoutSeconds=2))
    try:
        wait_for_watches(kube, 1)
        kube.create_pod("ns1", "b")
        ev = w.next()
        assert ev["type"] == "ADDED" and ev["object"]["metadata"]["name"] == "b"
    finally:
        w.close()


def test_compaction_python_client_and_continue_tokens(kube):
    pytest.importorskip("kubernetes")
    from kubernetes import client, config, watch
    for i in range(5):
        kube.create_pod("ns1", f"p{i}")
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kube.kubeconfig_path)))
    page = core.list_namespaced_pod("ns1", limit=2)
    old = page.metadata.resource_version
    token = page.metadata._continue
    assert token and page.metadata.remaining_item_count == 3
    kube.compact()
    with pytest.raises(client.exceptions.ApiException) as ei:
        list(watch.Watch().stream(core.list_namespaced_pod, "ns1", resource_version=old, timeout_seconds=2))
    assert ei.value.status == 410 and "Expired" in str(ei.value.reason)
    # the continue token of the list before the compaction: 410 Expired, with a token to go on at the latest RV
    st, body = kube.api("GET", f"/api/v1/namespaces/ns1/pods?limit=2&continue={token}", ok=None)
    assert st == 410 and body["reason"] == "Expired" and body["code"] == 410
    assert body["message"].startswith("The provided continue parameter is too old")
    inconsistent = body["metadata"]["continue"]
    kube.create_pod("ns1", "p9")
    rest = kube.api("GET", f"/api/v1/namespaces/ns1/pods?limit=10&continue={inconsistent}")
    assert [p["metadata"]["name"] for p in rest["items"]] == ["p2", "p3", "p4", "p9"]
    assert int(rest["metadata"]["resourceVersion"]) > int(old)


# ------------------------------------------------------------------------------------------ pagination


def paginate(kube, path, limit, extra=""):
    """All pages: [(list metadata, item names)]."""
    pages, token = [], None
    while True:
        sep = "&" if "?" in path else "?"
        q = f"{sep}limit={limit}{extra}" + (f"&continue={quote(token)}" if token else "")
        body = kube.api("GET", path + q)
        pages.append((body["metadata"], [f'{i["metadata"].get("namespace", "")}/{i["metadata"]["name"]}'
                                         for i in body["items"]]))
        token = body["metadata"].get("continue")
        if not token:
            return pages


def test_list_pagination(kube):
    objs = [pod(ns, f"p{i:02d}", labels={"odd": str(i % 2)}) for ns in ("a", "a-b", "b") for i in range(10)]
    kube.bulk_create(objs)
    total = len(objs)
    pages = paginate(kube, "/api/v1/pods", 7)
    names = [n for _, ns in pages for n in ns]
    assert len(pages) == 5 and [len(n) for _, n in pages] == [7, 7, 7, 7, 2]
    assert len(names) == total and len(set(names)) == total
    assert names == sorted(names)           # etcd key order ("<ns>/<name>" bytewise): "a-b/..." < "a/..."
    assert names[0] == "a-b/p00" and names[10] == "a/p00"
    seen = 0
    for md, ns in pages[:-1]:
        seen += len(ns)
        assert md["remainingItemCount"] == total - seen and md["continue"]
    assert "continue" not in pages[-1][0] and "remainingItemCount" not in pages[-1][0]
    assert len({md["resourceVersion"] for md, _ in pages}) == 1
    # exact fit: no continue token on the page that returns the last item
    exact = paginate(kube, "/api/v1/namespaces/b/pods", 5)
    assert [len(n) for _, n in exact] == [5, 5] and exact[0][0]["remainingItemCount"] == 5
    # a selector: no remainingItemCount (the real server cannot count), continue still works
    sel = paginate(kube, "/api/v1/pods", 4, "&labelSelector=odd%3D1")
    assert sum(len(n) for _, n in sel) == 15 and all("remainingItemCount" not in md for md, _ in sel)
    # consistent pages: writes after the first page are not seen, and the RV stays the first page's
    first = kube.api("GET", "/api/v1/namespaces/a/pods?limit=4")
    kube.create_pod("a", "p00a", create_namespace=False)
    kube.delete_pod("a", "p05")
    rest = kube.api("GET", f"/api/v1/namespaces/a/pods?limit=100&continue={quote(first['metadata']['continue'])}")
    assert [p["metadata"]["name"] for p in rest["items"]] == [f"p{i:02d}" for i in range(4, 10)]
    assert rest["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert int(kube.api("GET", "/api/v1/pods")["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    # resourceVersion=0 is served from the "watch cache", which ignores limit (as the real server does)
    rv0 = kube.api("GET", "/api/v1/pods?limit=3&resourceVersion=0")
    assert len(rv0["items"]) == total and "continue" not in rv0["metadata"]
    # the NAD resource paginates the same way
    kube.bulk_create([nad("a", f"n{i}") for i in range(9)])
    npages = paginate(kube, f"{NAD_API}/{NAD_PLURAL}", 4)
    assert [len(n) for _, n in npages] == [4, 4, 1] and npages[0][0]["remainingItemCount"] == 5


def test_list_pagination_errors(kube):
    for i in range(3):
        kube.create_pod("ns1", f"p{i}")
    token = kube.api("GET", "/api/v1/pods?limit=1")["metadata"]["continue"]
    for bad in ("not-base64!", "eyJ2IjoibWV0YS5rOHMuaW8vdjIiLCJydiI6MSwic3RhcnQiOiJ4In0",   # v: meta.k8s.io/v2
                "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MCwic3RhcnQiOiJ4In0",                 # rv: 0
                "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6NSwic3RhcnQiOiIuLi94In0"):            # start: ../x
        st, body = kube.api("GET", f"/api/v1/pods?limit=1&continue={bad}", ok=None)
        assert st == 400, (bad, body)
        assert body["kind"] == "Status" and body["reason"] == "BadRequest" and body["code"] == 400
        assert body["message"].startswith("invalid continue token: continue key is not valid"), body
    st, body = kube.api("GET", f"/api/v1/pods?limit=1&continue={token}&resourceVersion=5", ok=None)
    assert st == 400 and body["message"] == "specifying resource version is not allowed when using continue"
    st, body = kube.api("GET", f"/api/v1/pods?limit=1&continue={token}&resourceVersion=5&resourceVersionMatch=Exact",
                        ok=None)
    assert st == 422 and body["reason"] == "Invalid"
    assert kube.api("GET", f"/api/v1/pods?limit=5&continue={token}")["items"][0]["metadata"]["name"] == "p1"


@needs_kubectl
def test_kubectl_chunk_size(kube):
    kube.bulk_create([pod(f"ns{i % 3}", f"web-{i}") for i in range(23)])
    kube.clear_requests()
    out = kube.kubectl("get", "pods", "-A", "--chunk-size=7", "--no-headers").stdout.splitlines()
    assert sorted(line.split()[1] for line in out) == sorted(f"web-{i}" for i in range(23))
    lists = [r for r in kube.requests("GET", r"^/api/v1/pods$") if "watch" not in r["query"]]
    assert len(lists) == 4 and all("limit=7" in r["query"] for r in lists)
    assert ["continue=" in r["query"] for r in lists] == [False, True, True, True]
    out = kube.kubectl("get", "pods", "-n", "ns1", "--chunk-size=3", "-o", "name").stdout.split()
    assert sorted(out) == sorted(f"pod/web-{i}" for i in range(1, 23, 3))


# ------------------------------------------------------------------------------------------ bulk load


def test_bulk_create_10k_pods_and_1k_nads(kube):
    pods = [pod(f"ns{i % 50}", f"pod-{i:05d}", node=f"node{i % 4}") for i in range(10000)]
    nads = [nad(f"ns{i % 50}", f"net-{i:04d}") for i in range(1000)]
    rv_before = int(kube.api("GET", "/api/v1/pods")["metadata"]["resourceVersion"])
    pre = RawWatch(kube, watch_path("/api/v1/pods", rv_before))     # open across the bulk load
    pre_nads = RawWatch(kube, watch_path(f"{NAD_API}/{NAD_PLURAL}", rv_before))
    try:
        wait_for_watches(kube, 2)
        t0 = time.monotonic()
        r = kube.bulk_create(pods + nads)
        elapsed = time.monotonic() - t0
        print(f"\nbulk create of 10,000 pods + 1,000 NADs: {elapsed:.2f} s "
              f"(server {r['seconds']:.2f} s), namespaces created: {r['namespacesCreated']}")
        assert r["created"] == 11000 and r["errors"] == [] and r["namespacesCreated"] == 50
        assert r["byResource"] == {"pods": 10000, f"{NAD_PLURAL}.k8s.cni.cncf.io": 1000}
        assert elapsed < 10, elapsed
        assert int(r["resourceVersion"]) == rv_before + 11050
        # 11,050 events overflow the 1,000-event history: the watch opened before is too far behind
        evs = pre.collect(3)
        assert [e["type"] for e in evs][-1:] == ["ERROR"] and evs[-1]["object"]["code"] == 410
        # ... but the NADs came last: the history still has all 1,000 of their events, and a pod flood does not
        # expire a NAD watch (per-resource floors, like the real per-resource watch caches)
        assert {"pods", "namespaces"} <= set(r["watchFloors"]) and f"{NAD_PLURAL}.k8s.cni.cncf.io" not in r["watchFloors"]
        evs = [pre_nads.next(5) for _ in range(1000)]
        assert [e["type"] for e in evs] == ["ADDED"] * 1000
        assert [e["object"]["metadata"]["name"] for e in evs] == [f"net-{i:04d}" for i in range(1000)]
    finally:
        pre.close()
        pre_nads.close()
    lst = kube.api("GET", "/api/v1/pods")
    items = lst["items"]
    assert len(items) == 10000 and lst["metadata"]["resourceVersion"] == r["resourceVersion"]
    p = next(i for i in items if i["metadata"]["name"] == "pod-00007")
    assert p["metadata"]["uid"] and p["metadata"]["creationTimestamp"] and p["status"]["phase"] == "Pending"
    assert p["spec"]["nodeName"] == "node3" and p["spec"]["restartPolicy"] == "Always"
    assert len({i["metadata"]["resourceVersion"] for i in items}) == 10000
    assert len({i["metadata"]["uid"] for i in items}) == 10000
    assert len(kube.api("GET", f"{NAD_API}/{NAD_PLURAL}")["items"]) == 1000
    assert len(kube.api("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode1")["items"]) == 2500
    assert kube.get_nad("ns7", "net-0007")["spec"]["config"]
    # a watch from RV 0 replays them all (this node's pods, as the daemon watches them)
    for path, n in ((watch_path("/api/v1/pods", "0", timeoutSeconds=20), 10000),
                    (watch_path("/api/v1/pods", "0", fieldSelector="spec.nodeName=node2", timeoutSeconds=20), 2500),
                    (watch_path(f"{NAD_API}/{NAD_PLURAL}", "0", timeoutSeconds=20), 1000)):
        w = RawWatch(kube, path)
        try:
            t0 = time.monotonic()
            evs = [w.next(10) for _ in range(n)]
            assert {e["type"] for e in evs} == {"ADDED"} and len({e["object"]["metadata"]["uid"] for e in evs}) == n
            print(f"watch from RV 0 ({n} objects): {time.monotonic() - t0:.2f} s")
        finally:
            w.close()
    # errors are reported per object; the others are created
    r = kube.bulk_create([pod("ns1", "pod-00001"), {"apiVersion": "v9", "kind": "Nope", "metadata": {"name": "x"}},
                          pod("fresh", "ok")], check=False)
    assert r["created"] == 1 and r["namespacesCreated"] == 1
    assert [(e["index"], e["code"]) for e in r["errors"]] == [(0, 409), (1, 404)]
    r = kube.bulk_create([pod("missing", "x")], create_namespaces=False, check=False)
    assert r["created"] == 0 and r["errors"][0]["code"] == 404


# ------------------------------------------------------------------------------------------ cut connections


def test_drop_watches(kube):
    kube.create_pod("ns1", "a")
    rv = kube.api("GET", "/api/v1/pods")["metadata"]["resourceVersion"]
    w1 = RawWatch(kube, watch_path("/api/v1/pods", rv, allowWatchBookmarks="true"))
    w2 = RawWatch(kube, watch_path(f"{NAD_API}/{NAD_PLURAL}", "0"))
    outcome = {}
    thread = None
    try:
        from kubernetes import client, config, watch
    except ImportError:
        client = None
    if client is not None:
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(kube.kubeconfig_path)))

        def py_watch():
            try:
                # timeout_seconds: the client would otherwise re-watch after a clean end
                outcome["events"] = [ev["type"] for ev in watch.Watch().stream(core.list_namespaced_pod, "ns1",
                                                                               resource_version=rv,
                                                                               timeout_seconds=30)]
                outcome["end"] = "stream ended"
            except Exception as e:  # urllib3 ProtocolError / IncompleteRead
                outcome["end"] = f"raised {type(e).__name__}: {e}"
        thread = threading.Thread(target=py_watch, daemon=True)
        thread.start()
    try:
        wait_for_watches(kube, 3 if thread else 2)
        assert w1.collect(0.4)             # bookmarks flow
        t0 = time.monotonic()
        assert kube.drop_watches() == (3 if thread else 2)
        for w in (w1, w2):
            w.collect(3)
            assert w.ended == "eof", w.ended            # no terminating chunk
        assert time.monotonic() - t0 < 1.0
        if thread:
            thread.join(5)
            assert not thread.is_alive() and outcome.get("end"), outcome
            print(f"\nPython client after drop-watches: {outcome['end']}")
    finally:
        w1.close()
        w2.close()
    wait_for_watches(kube, 0)
    # the server is fine afterwards: a new watch works and ends cleanly
    w = RawWatch(kube, watch_path("/api/v1/pods", rv, timeoutSeconds=1))
    try:
        assert w.collect(3) == [] and w.ended == "terminated"
    finally:
        w.close()
