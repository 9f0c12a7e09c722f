"""A real single-node Slurm cluster for the tests, started once per session (testing/slurm.py is the recipe,
shared with the benchmarks; docs/slurm-test-cluster.md says what it does and what tests can rely on).

Fixtures:

- ``slurm_cluster`` (session): the running cluster, slurmrestd included (``.rest_url``, ``.token()``);
  ``.env()`` (the environment with ``SLURM_CONF`` that every client command needs), ``.run("sbatch", ...)``
  (a client command with that environment, text output), ``.node``, ``.cpus``, ``.memory_mb``,
  ``.partitions`` (``debug``, the default, and ``gpu``), ``.conf``.
- ``slurm`` (function): the same cluster, with every job cancelled after the test, so that each test starts
  with an empty queue.

Needs root and the Debian packages ``slurm-wlm``, ``munge``, ``slurmrestd`` and ``slurm-wlm-jwt-plugin``
(scripts/ensure-system.sh --postgres). If they are missing, or the cluster does not come up, the tests that
need it FAIL; they never skip. Each pytest-xdist
worker starts its own cluster (own name, ports, munged and directories); they share the machine's CPUs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testing.slurm import SlurmCluster, SlurmUnavailable, start, stop

__all__ = ["SlurmCluster", "slurm", "slurm_cluster"]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    try:
        cluster = start(tmp_path_factory.mktemp("slurm"), rest=True)  # slurmrestd too
    except SlurmUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cluster
    finally:
        stop(cluster)


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session's cluster, empty: every job still queued or running is cancelled before the test (one
    left by a module that used the cluster without this fixture held a CPU a test's job needed) and after."""
    slurm_cluster.cancel_all()
    yield slurm_cluster
    slurm_cluster.cancel_all()
