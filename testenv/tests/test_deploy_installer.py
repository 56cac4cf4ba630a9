"""plexus-install in a sandboxed node (temp dirs for /etc/cni/net.d, /opt/cni/bin and the service account dir):
primary detection as runtimes do it, regeneration on change, token mirroring, SIGTERM removing exactly what was
installed (the whole tree compared with hashes), a surge handover between two installers, and clear failures that
write nothing."""

import json
import os
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from testenv.lib.deploy import CONFIG_NAME, deploy_bins, node, replace_file, sha256_of, wait_for  # noqa: E402,F401


def bridge_list(name, version="1.0.0", caps=None):
    portmap = {"type": "portmap", "capabilities": caps or {"portMappings": True}}
    return {"cniVersion": version, "name": name,
            "plugins": [{"type": "bridge", "bridge": "pxtdep0", "ipam": {"type": "host-local",
                                                                        "subnet": "10.231.150.0/24"}}, portmap]}


def plugin_of(node):
    return node.config()["plugins"][0]


def test_primary_detection_skips_broken_own_and_meta_files(node):
    node.write_conf("00-multus.conf", {"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus"})
    node.write_conf("01-broken.conflist", "{ not json")
    node.write_conf("02-noplugins.conflist", {"cniVersion": "1.0.0", "name": "x", "plugins": []})
    node.write_conf("10-primary.conf", {"cniVersion": "0.4.0", "name": "pxprimary", "type": "bridge",
                                        "capabilities": {"portMappings": True}})
    node.write_conf("20-later.conflist", bridge_list("pxlater"))
    node.write_conf("05-ignored.conf.bak", bridge_list("pxbak"))
    r = node.run("render", *node.args())
    assert r.returncode == 0, r.stderr
    conf = json.loads(r.stdout)
    assert conf["cniVersion"] == "0.4.0" and conf["name"] == "plexus-cni-network"
    assert conf["plugins"][0]["clusterNetwork"] == os.path.join(node.conf_dir, "10-primary.conf")
    assert conf["plugins"][0]["capabilities"] == {"portMappings": True}

    r = node.run("install", "--once", *node.args())
    assert r.returncode == 0, r.stderr
    for fragment in ("file=00-multus.conf reason=\"a multus meta plugin", "file=01-broken.conflist",
                     "file=02-noplugins.conflist", "sort before Plexus'", "files=00-multus.conf"):
        assert fragment in r.stderr, (fragment, r.stderr)
    # Plexus' own file is never its own primary: a second pass keeps 10-primary.conf.
    r = node.run("install", "--once", *node.args())
    assert r.returncode == 0, r.stderr
    assert plugin_of(node)["clusterNetwork"].endswith("/10-primary.conf")
    assert "configuration written" not in r.stderr      # nothing changed, nothing rewritten
    assert node.run("uninstall", *node.args()).returncode == 0


def test_watch_regenerates_mirrors_the_token_and_sigterm_restores_the_tree(node):
    node.write_conf("10-pxnet.conflist", bridge_list("pxnet", "0.4.0"))
    os.makedirs(node.bin_dir)
    with open(os.path.join(node.bin_dir, "bridge"), "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(os.path.join(node.bin_dir, "bridge"), 0o755)
    before = node.tree()

    p = node.start(*node.args(api_server="https://127.0.0.1:1"))
    node.wait_installed(p, *node.args())
    assert node.config()["cniVersion"] == "0.4.0"
    assert sha256_of(os.path.join(node.bin_dir, "plexus")) == sha256_of(os.path.join(node.bins, "plexus"))
    kc = json.load(open(os.path.join(node.state_dir, "plexus.kubeconfig")))
    assert kc["users"][0]["user"] == {"tokenFile": os.path.join(node.state_dir, "token")}
    assert kc["clusters"][0]["cluster"] == {"server": "https://127.0.0.1:1",
                                            "certificate-authority": os.path.join(node.state_dir, "ca.crt")}

    # the primary changes: regenerated within a few watch intervals
    node.write_conf("10-pxnet.conflist", bridge_list("pxnet", "1.0.0", {"portMappings": True, "bandwidth": True}))
    wait_for(lambda: node.config()["cniVersion"] == "1.0.0", what="regeneration after the primary changed")
    assert plugin_of(node)["capabilities"] == {"portMappings": True, "bandwidth": True}
    # a file sorting before it becomes the primary
    node.write_conf("05-first.conf", {"cniVersion": "0.3.1", "name": "pxfirst", "type": "bridge"})
    wait_for(lambda: plugin_of(node)["clusterNetwork"].endswith("/05-first.conf"), what="the new primary")
    assert node.config()["cniVersion"] == "0.3.1" and "capabilities" not in plugin_of(node)
    # our file removed by someone: rewritten
    os.unlink(node.config_path)
    wait_for(lambda: os.path.exists(node.config_path), what="the configuration to be rewritten")

    # token rotation: the kubelet replaces the projected file; the installer mirrors it, never logs it
    node.write_token("pxt-token-rotated")
    mirrored = os.path.join(node.state_dir, "token")
    wait_for(lambda: open(mirrored).read() == "pxt-token-rotated\n", what="the rotated token to be mirrored")
    assert oct(os.stat(mirrored).st_mode & 0o777) == "0o600"

    assert node.stop(p) == 0, node.log(p)
    log = node.log(p)
    assert "pxt-token" not in log, "a token reached the log"
    assert "stopping: removing what was installed" in log
    os.unlink(os.path.join(node.conf_dir, "05-first.conf"))
    node.write_conf("10-pxnet.conflist", bridge_list("pxnet", "0.4.0"))
    assert node.tree() == before


def test_waits_for_a_primary_then_sigint_cleans_up(node):
    before = node.tree()
    settings = os.path.join(node.tmp, "settings.json")
    replace_file(settings, '{"logLevel": "info"}')
    p = node.start(*node.args(extra=["--settings-file", settings]))
    wait_for(lambda: os.path.exists(os.path.join(node.bin_dir, "plexus")), what="the binary copy")
    r = node.status(*node.args())
    assert r.returncode == 1 and "no configuration written yet" in r.stderr, r
    assert not os.path.exists(node.config_path)
    node.write_conf("10-pxnet.conflist", bridge_list("pxnet"))
    node.wait_installed(p, *node.args())
    assert plugin_of(node)["logLevel"] == "debug"     # the --log-level flag overrides the settings file
    # a bad ConfigMap edit: logged once, the last good configuration stays; a good one is applied
    replace_file(settings, '{"logLevel": "info", "namespaceIsolaton": true}')
    wait_for(lambda: "watch pass failed" in node.log(p), what="the bad settings to be reported")
    time.sleep(0.5)
    assert node.log(p).count("watch pass failed") == 1, node.log(p)
    assert "namespaceIsolation" not in plugin_of(node) and node.status(*node.args()).returncode == 0
    replace_file(settings, '{"logLevel": "info", "namespaceIsolation": true}')
    wait_for(lambda: plugin_of(node).get("namespaceIsolation") is True, what="the fixed settings to be applied")
    assert "watch pass succeeded again" in node.log(p)
    assert node.stop(p, signal.SIGINT) == 0, node.log(p)
    os.unlink(os.path.join(node.conf_dir, "10-pxnet.conflist"))
    assert node.tree() == before


def test_surge_rollout_hands_the_node_over(node):
    """A new pod (installer B) starts before the old one (A) stops: B takes over, A's SIGTERM removes nothing."""
    node.write_conf("10-pxnet.conflist", bridge_list("pxnet"))
    before = node.tree()
    a = node.start(*node.args())
    node.wait_installed(a, *node.args())
    owner_a = node.manifest()["owner"]
    b = node.start(*node.args())
    wait_for(lambda: node.manifest()["owner"] != owner_a, what="installer B to take over")
    wait_for(lambda: "stops writing" in node.log(a), what="installer A to stand down")
    assert node.stop(a) == 0, node.log(a)
    assert node.status(*node.args()).returncode == 0, "A's exit removed B's installation"
    assert os.path.exists(node.config_path) and os.path.exists(os.path.join(node.bin_dir, "plexus"))
    assert node.stop(b) == 0, node.log(b)
    assert node.tree() == before


def test_uninstall_leaves_a_file_somebody_else_replaced(node):
    node.write_conf("10-pxnet.conflist", bridge_list("pxnet"))
    assert node.run("install", "--once", *node.args()).returncode == 0
    replace_file(os.path.join(node.bin_dir, "plexus"), "#!/bin/sh\n# someone else's plexus\n", 0o755)
    r = node.run("uninstall", *node.args())
    assert r.returncode == 0, r.stderr
    assert "leaving a file somebody else changed or replaced" in r.stderr and "/opt/cni/bin/plexus" in r.stderr
    assert open(os.path.join(node.bin_dir, "plexus")).read() == "#!/bin/sh\n# someone else's plexus\n"
    assert not os.path.exists(node.config_path) and not os.path.exists(node.state_dir)
    assert os.path.exists(os.path.join(node.conf_dir, "10-pxnet.conflist"))


def test_failures_are_clear_messages_and_write_nothing(node):
    node.write_conf("10-pxnet.conflist", bridge_list("pxnet"))
    before = node.tree()
    settings = os.path.join(node.tmp, "settings.json")
    with open(settings, "w") as f:
        f.write('{"namespaceIsolaton": true}')
    cases = [
        (["install", *node.args(extra=["--settings-file", settings])], 1, 'unknown setting "namespaceIsolaton"'),
        (["install", *node.args(extra=["--binaries", "pxnothere"])], 1, "pxnothere does not exist"),
        (["install", *node.args(api_server="https://127.0.0.1:1"), "--token-file", node.tmp + "/nope"], 1,
         "cannot read the service account token"),
        (["install", "--cni-conf-dir", node.conf_dir, "--source-bin-dir", node.bins], 1, "API server's address"),
        (["install", "--frobnicate"], 2, "unknown option --frobnicate"),
        (["install", "--log-level", "loud"], 2, "must be one of panic"),
    ]
    for args, code, fragment in cases:
        r = node.run(*args)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert r.stderr.startswith("plexus-install: error: ") and fragment in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1, r.stderr       # one clear line
    assert node.tree() == before
