"""Shared fixtures for the Plexus integration tests (testenv/tests/test_core_*.py, test_lifecycle_*.py).

Fixtures are opt-in (nothing here is autouse), so other suites under testenv/ are unaffected:

* ``px_session``: registers this run, sweeps leftovers of crashed earlier runs of this suite, and at the end
  removes every ``pxt<tag>*`` netns/link this run created.
* ``px_bin_dir``: a session temp dir holding copies of ``plexus`` and ``plexus-test-delegate``.
* ``pxenv``: per test: temp dirs (cniDir, confDir, host-local dataDir, recordDir, stateDir), a netns/link
  tracker with a finalizer, 10.231.x.0/24 subnets (x in 20..99), and clean-host assertions.
"""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from testenv.lib import netns as nl  # noqa: E402
from testenv.lib import plexus as px  # noqa: E402

WORK_DIR = os.path.join(REPO, "testenv", ".work")


def _root_or_skip():
    if os.geteuid() != 0:
        pytest.skip("needs root (creates network namespaces and links)")


@pytest.fixture(scope="session")
def px_session():
    _root_or_skip()
    nl.sweep_stale_runs()
    nl.register_run()
    yield nl.NAME_PREFIX
    leftovers = nl.sweep_prefix(nl.NAME_PREFIX)
    nl.unregister_run()
    if leftovers:
        sys.stderr.write("\npxt session sweep removed: %s\n" % ", ".join(leftovers))


@pytest.fixture(scope="session")
def px_bin_dir(tmp_path_factory):
    return px.install_binaries(str(tmp_path_factory.mktemp("pxbin")))


@pytest.fixture
def pxenv(px_session, px_bin_dir, tmp_path, request):
    env = px.Env(tmp_path, px_bin_dir)

    def fin():
        env.kill_leftovers()
        errors = env.net.cleanup()
        if errors:
            sys.stderr.write("pxenv cleanup errors: %s\n" % errors)

    request.addfinalizer(fin)
    return env


@pytest.fixture
def pod_factory(pxenv):
    def make(name="pxpod"):
        return px.Pod(pxenv, name)
    return make
