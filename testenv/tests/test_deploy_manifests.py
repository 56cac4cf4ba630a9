"""deploy/ and the Dockerfile: `kubectl apply --dry-run=server` and a real apply against the test API server, every
object validated against the Kubernetes OpenAPI schema (kubernetes-validate, bundled schemas, offline), least
privilege of the ClusterRole, the DaemonSet's shape, its command and environment matching the installer's options,
and the Dockerfile building and copying what the DaemonSet runs."""

import json
import os
import re
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from testenv.lib.deploy import (DEPLOY_DIR, deploy_bins, deploy_docs, deploy_files, deploy_object,  # noqa: E402,F401
                                node)
from testenv.lib.kubeapi import KUBECTL, NAD_CRD_DIR, KubeAPI  # noqa: E402

yaml = pytest.importorskip("yaml")
EXPECTED = [("00-network-attachment-definition-crd.yaml", "CustomResourceDefinition"),
            ("10-rbac.yaml", "ServiceAccount"), ("10-rbac.yaml", "ClusterRole"),
            ("10-rbac.yaml", "ClusterRoleBinding"), ("10-rbac.yaml", "ClusterRole"),
            ("10-rbac.yaml", "ClusterRoleBinding"), ("20-configmap.yaml", "ConfigMap"),
            ("30-daemonset.yaml", "DaemonSet")]
DOCKERFILE = os.path.join(REPO, "Dockerfile")


def test_deploy_holds_exactly_the_expected_objects():
    assert [(f, d["kind"]) for f, d in deploy_docs()] == EXPECTED
    for _, d in deploy_docs():
        kind, md = d["kind"], d["metadata"]
        if kind in ("ServiceAccount", "ConfigMap", "DaemonSet"):
            assert md["namespace"] == "kube-system", d
        else:
            assert "namespace" not in md, d


def test_crd_is_the_one_in_crds():
    with open(os.path.join(NAD_CRD_DIR, "network-attachment-definition.yaml")) as f:
        assert deploy_object("CustomResourceDefinition") == yaml.safe_load(f)


def test_every_object_passes_the_kubernetes_openapi_schema():
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is not installed (run testenv/install.sh)")
    versions = ["1.27", "1.32", kubernetes_validate.latest_version()]
    for f, doc in deploy_docs():
        for v in versions:
            # strict: unknown fields (a typo such as `resoures`) are errors, as with kubectl's strict validation
            kubernetes_validate.validate(doc, v, strict=True)
    bad = json.loads(json.dumps(deploy_object("DaemonSet")))
    bad["spec"]["template"]["spec"]["containers"][0]["resoures"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, versions[1], strict=True)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
def test_kubectl_apply_dry_run_then_for_real(tmp_path):
    with KubeAPI(tmp_path / "kube") as kube:
        names = ["customresourcedefinition.apiextensions.k8s.io/network-attachment-definitions.k8s.cni.cncf.io",
                 "serviceaccount/plexus", "clusterrole.rbac.authorization.k8s.io/plexus",
                 "clusterrolebinding.rbac.authorization.k8s.io/plexus", "clusterrole.rbac.authorization.k8s.io/plexus-dra",
                 "clusterrolebinding.rbac.authorization.k8s.io/plexus-dra", "configmap/plexus-config",
                 "daemonset.apps/plexus"]
        out = kube.kubectl("apply", "--dry-run=server", "-f", DEPLOY_DIR).stdout.splitlines()
        assert out == ["%s created (server dry run)" % n for n in names], out
        assert kube.kubectl("get", "ds", "-n", "kube-system", "-o", "name").stdout.strip() == ""
        out = kube.kubectl("apply", "-f", DEPLOY_DIR).stdout.splitlines()
        assert out == ["%s created" % n for n in names], out
        out = kube.kubectl("apply", "-f", DEPLOY_DIR).stdout.splitlines()
        assert out == ["%s unchanged" % n for n in names], out
        ds = json.loads(kube.kubectl("get", "ds", "plexus", "-n", "kube-system", "-o", "json").stdout)
        assert ds["spec"]["template"]["spec"]["serviceAccountName"] == "plexus"
        # uninstall is `kubectl delete -f deploy/`
        kube.kubectl("delete", "-f", DEPLOY_DIR, "--wait=false")
        assert kube.kubectl("get", "clusterrole", "plexus", check=False).returncode != 0


def test_clusterrole_is_least_privilege():
    role = deploy_object("ClusterRole", "plexus")
    grants = sorted((g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
                    for v in rule["verbs"])
    # exactly what Plexus does on an ADD (CONVENTIONS.md): no wildcard, no events (Plexus emits none), no list/watch
    assert grants == [("", "pods", "get"), ("", "pods/status", "patch"),
                      ("k8s.cni.cncf.io", "network-attachment-definitions", "get")]
    # DRA (pods with ResourceClaims and a NAD with a resourceName): read the claims and the node's slices.
    dra = deploy_object("ClusterRole", "plexus-dra")
    assert sorted((g, r, v) for rule in dra["rules"] for g in rule["apiGroups"] for r in rule["resources"]
                  for v in rule["verbs"]) == [("resource.k8s.io", "resourceclaims", "get"),
                                              ("resource.k8s.io", "resourceslices", "list")]
    # Publishing networkData is opt-in, and so is its permission (not applied by `kubectl apply -f deploy/`).
    with open(os.path.join(DEPLOY_DIR, "optional", "dra-publish-rbac.yaml")) as f:
        publish = [d for d in yaml.safe_load_all(f) if d]
    assert [d["kind"] for d in publish] == ["ClusterRole", "ClusterRoleBinding"]
    assert publish[0]["rules"] == [{"apiGroups": ["resource.k8s.io"], "resources": ["resourceclaims/status"], "verbs": ["patch"]}]
    sa = deploy_object("ServiceAccount", "plexus")
    for role, binding in (("plexus", deploy_object("ClusterRoleBinding", "plexus")),
                          ("plexus-dra", deploy_object("ClusterRoleBinding", "plexus-dra")), ("plexus-dra-publish", publish[1])):
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                        "namespace": sa["metadata"]["namespace"]}]


def test_daemonset_shape():
    ds = deploy_object("DaemonSet", "plexus")
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["tolerations"] == [{"operator": "Exists"}], "must tolerate every taint"
    assert spec["serviceAccountName"] == deploy_object("ServiceAccount")["metadata"]["name"]
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    (c,) = spec["containers"]
    assert set(c["resources"]) == {"requests", "limits"}
    for k in ("requests", "limits"):
        assert set(c["resources"][k]) == {"cpu", "memory"}, c["resources"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    root = env["PLEXUS_HOST_ROOT"]
    for name, host in (("cni-conf", env["PLEXUS_CNI_CONF_DIR"]), ("cni-bin", env["PLEXUS_CNI_BIN_DIR"])):
        assert vols[name]["hostPath"]["path"] == host and mounts[name] == root + host, (name, vols[name])
    assert host == "/opt/cni/bin"
    cm = deploy_object("ConfigMap")
    assert vols["settings"]["configMap"]["name"] == cm["metadata"]["name"]
    settings_arg = [a for a in c["args"] if a.startswith("--settings-file=")]
    assert settings_arg == ["--settings-file=%s/settings.json" % mounts["settings"]]
    assert set(cm["data"]) == {"settings.json"}
    assert c["readinessProbe"]["exec"]["command"] == [c["command"][0], "status"]


def installer_options(bins):
    """{flag: takes_value} and the environment names, from `plexus-install --help`."""
    import subprocess
    out = subprocess.run([os.path.join(bins, "plexus-install"), "--help"], stdout=subprocess.PIPE, text=True,
                         check=True).stdout
    flags, envs = {}, set()
    for m in re.finditer(r"^  (--[a-z-]+)( [A-Z,.]+)?  \[(PLEXUS_[A-Z_]+)\]$", out, re.M):
        flags[m.group(1)] = m.group(2) is not None
        envs.add(m.group(3))
    commands = set(re.findall(r"^  (install|uninstall|status|render) ", out, re.M))
    return flags, envs, commands


def test_daemonset_command_matches_the_installer_and_renders(node, deploy_bins):
    flags, envs, commands = installer_options(deploy_bins)
    assert "--cni-conf-dir" in flags and "PLEXUS_HOST_ROOT" in envs and commands == {"install", "uninstall",
                                                                                       "status", "render"}
    ds = deploy_object("DaemonSet", "plexus")
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    args = c["args"]
    assert args[0] in commands
    for a in args[1:]:
        assert a.startswith("--") and "=" in a, a
        flag = a.split("=", 1)[0]
        assert flag in flags, "%s is not an installer option" % flag
    for e in c["env"]:
        if e["name"].startswith("PLEXUS_"):
            assert e["name"] in envs, "%s is not an installer variable" % e["name"]
    assert {e["name"] for e in c["env"]} >= {"POD_NAME", "POD_NAMESPACE"}
    assert c["readinessProbe"]["exec"]["command"][1] in commands

    # The DaemonSet's exact command line, pointed at a sandboxed host root, with the ConfigMap's settings.
    env_root = node.tmp + "/host"
    os.makedirs(env_root + "/etc/cni/net.d")
    with open(env_root + "/etc/cni/net.d/10-pxnet.conflist", "w") as f:
        json.dump({"cniVersion": "0.4.0", "name": "pxnet", "plugins": [{"type": "bridge"}]}, f)
    cm = deploy_object("ConfigMap")
    settings = node.tmp + "/settings.json"
    with open(settings, "w") as f:
        f.write(cm["data"]["settings.json"])
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    env.update(PLEXUS_HOST_ROOT=env_root, PATH="/usr/bin:/bin", KUBERNETES_SERVICE_HOST="10.96.0.1",
               KUBERNETES_SERVICE_PORT="443", PLEXUS_TOKEN_FILE=node.token_path, PLEXUS_CA_FILE=node.ca_path)
    argv = [os.path.join(deploy_bins, "plexus-install"), "render"] + [
        a if not a.startswith("--settings-file=") else "--settings-file=" + settings for a in args[1:]
        if not a.startswith("--source-bin-dir=")]
    import subprocess
    r = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    conf = json.loads(r.stdout)
    plugin = conf["plugins"][0]
    assert plugin["clusterNetwork"] == "/etc/cni/net.d/10-pxnet.conflist"      # a node path, not /host/...
    assert plugin["kubeconfig"] == "/etc/cni/net.d/plexus.d/plexus.kubeconfig"
    assert plugin["binDir"] == "/opt/cni/bin"
    for k, v in json.loads(cm["data"]["settings.json"]).items():
        assert plugin[k] == v, k


def dockerfile_stages():
    with open(DOCKERFILE) as f:
        text = f.read()
    # join continuation lines, drop comments
    lines = [l for l in re.sub(r"\\\n", " ", text).splitlines() if l.strip() and not l.lstrip().startswith("#")]
    args = dict(re.match(r"ARG (\w+)=(\S+)", l).groups() for l in lines if re.match(r"ARG \w+=", l))
    stages, cur = [], None
    for l in lines:
        m = re.match(r"FROM (\S+)(?: AS (\S+))?", l, re.I)
        if m:
            image = re.sub(r"\$\{(\w+)\}", lambda x: args[x.group(1)], m.group(1))
            cur = {"image": image, "name": m.group(2), "lines": []}
            stages.append(cur)
        elif cur is not None:
            cur["lines"].append(l)
    return stages


SHIPPED = ("plexus", "plexus-install", "plexus-admin", "plexus-kubeconfig", "plexus-passthru", "plexus-policy-route",
           "plexus-daemon")


def test_dockerfile_builds_and_ships_what_the_daemonset_runs():
    stages = dockerfile_stages()
    assert len(stages) == 2, "multi-stage: a Swift builder and a small runtime image"
    build, runtime = stages
    assert re.match(r"swift:6\.\d+", build["image"]), build["image"]
    assert not runtime["image"].startswith("swift"), runtime["image"]
    run = " ".join(l for l in build["lines"] if l.startswith("RUN "))
    for product in SHIPPED:
        assert re.search(r"swift build -c release --static-swift-stdlib --product %s(\s|$)" % product, run), product
    assert "libcurl4-openssl-dev" in run and "libmnl-dev" in run        # headers of the C shims
    # every source the build stage copies exists; `COPY . .` needs the manifest and the sources
    for l in build["lines"]:
        m = re.match(r"COPY (?!--from)(\S+) (\S+)$", l)
        if m:
            assert os.path.exists(os.path.join(REPO, m.group(1))), l
    for needed in ("Package.swift", "Sources/plexus/main.swift", "Sources/plexus-install/main.swift"):
        assert os.path.exists(os.path.join(REPO, needed)), needed
    with open(os.path.join(REPO, ".dockerignore")) as f:
        ignored = f.read().split()
    assert ".build" in ignored and ".build-*" in ignored

    copies = {}
    for l in runtime["lines"]:
        m = re.match(r"COPY --from=(\S+) (\S+) (\S+)$", l)
        if m:
            assert m.group(1) == build["name"], l
            copies[os.path.basename(m.group(2))] = m.group(3)
        m = re.match(r"COPY (?!--from)(\S+) (\S+)$", l)
        if m:
            assert os.path.exists(os.path.join(REPO, m.group(1))), l
    assert set(copies) == set(SHIPPED)

    (c,) = deploy_object("DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert c["command"] == [copies["plexus-install"]]
    source = [a.split("=", 1)[1] for a in c["args"] if a.startswith("--source-bin-dir=")]
    binaries = [a.split("=", 1)[1] for a in c["args"] if a.startswith("--binaries=")]
    # Everything but the installer goes to the node: the plugin, `plexus inspect|validate`, the YAML converter, the
    # auxiliary chain's passthru and the policy-routing finalizer.
    assert source == [os.path.dirname(copies["plexus"])], source
    assert binaries == ["plexus,plexus-admin,plexus-kubeconfig,plexus-passthru,plexus-policy-route"], binaries
    assert all(os.path.dirname(copies[b]) == source[0] for b in binaries[0].split(","))
    # The node daemon runs from the image (deploy/optional/daemon.yaml), it is not copied to the node.
    (d,) = [o for o in daemon_manifest() if o["kind"] == "DaemonSet"][0]["spec"]["template"]["spec"]["containers"]
    assert d["command"] == [copies["plexus-daemon"]] and "plexus-daemon" not in binaries[0].split(",")
    entry = [l for l in runtime["lines"] if l.startswith("ENTRYPOINT")]
    assert entry and json.loads(entry[0].split(None, 1)[1]) == [copies["plexus-install"]]


def test_deploy_files_are_plain_manifests():
    """kubectl apply -f deploy/ reads every .yaml/.yml/.json file: each must be a manifest (no stray configs)."""
    names = sorted(os.listdir(DEPLOY_DIR))
    assert [n for n in names if n.endswith((".yaml", ".yml", ".json"))] == [os.path.basename(f) for f in deploy_files()]
    # optional/ holds opt-in manifests; `kubectl apply -f deploy/` does not recurse into it.
    assert all(n.endswith(".yaml") for n in names if n != "optional"), names
    assert all(n.endswith(".yaml") for n in os.listdir(os.path.join(DEPLOY_DIR, "optional")))


def daemon_manifest():
    with open(os.path.join(DEPLOY_DIR, "optional", "daemon.yaml")) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def test_daemon_manifest_shape_and_rbac():
    objs = daemon_manifest()
    assert [o["kind"] for o in objs] == ["ClusterRole", "ClusterRoleBinding", "DaemonSet"]
    role, binding, ds = objs
    # only what the watch caches add to the plugin's role: list + watch of pods and NADs
    assert sorted((g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
                  for v in rule["verbs"]) == [("", "pods", "list"), ("", "pods", "watch"),
                                              ("k8s.cni.cncf.io", "network-attachment-definitions", "list"),
                                              ("k8s.cni.cncf.io", "network-attachment-definitions", "watch")]
    sa = deploy_object("ServiceAccount", "plexus")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "plexus", "namespace": sa["metadata"]["namespace"]}]
    spec = ds["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "plexus" and spec["hostNetwork"] is True
    (c,) = spec["containers"]
    args = dict(a[2:].split("=", 1) for a in c["args"])
    host, port = args["metrics-address"].rsplit(":", 1)
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        g = c[probe]["httpGet"]
        assert (g["host"], str(g["port"]), g["path"]) == (host, port, path), c[probe]
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in c["env"]
    # the socket's directory is on the host, where the plugin (run by the runtime) connects
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    sock_dir = os.path.dirname(args["socket"])
    owner = max((p for p in mounts if sock_dir == p or sock_dir.startswith(p + "/")), key=len)
    assert vols[mounts[owner]]["hostPath"]["path"] == owner
    # the grace period covers the drain
    assert spec["terminationGracePeriodSeconds"] > float(args["drain-seconds"])


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
def test_daemon_manifest_applies(tmp_path):
    with KubeAPI(tmp_path / "kube") as kube:
        kube.kubectl("apply", "-f", DEPLOY_DIR)
        out = kube.kubectl("apply", "-f", os.path.join(DEPLOY_DIR, "optional", "daemon.yaml")).stdout.splitlines()
        assert out == ["clusterrole.rbac.authorization.k8s.io/plexus-daemon created",
                       "clusterrolebinding.rbac.authorization.k8s.io/plexus-daemon created",
                       "daemonset.apps/plexus-daemon created"], out
