"""Real container engines for the tests, started once per session (testing/engines.py is the recipe).

Fixtures:

- ``docker_cli`` (session): a private ``dockerd`` (its own data root, exec root, containerd and socket in a
  folder under ``/tmp``), stopped with everything it ran at the end of the session.
- ``podman_cli`` (session): Podman on a storage of its own in a folder under ``/tmp``, removed at the end.

Each is an :class:`EngineCLI`: ``kind`` (``"docker"`` or ``"podman"``), ``argv`` (the CLI with its global
options), ``env`` (variables to add to the environment), ``run_args`` (options every ``run``/``create`` needs
on this machine), ``command(*args)`` and ``run(*args)`` (the CLI with its output captured as text). The image
``labcloud/busybox:1`` (``IMAGE``) is already there: run it with ``--pull=never``; there is no registry.

Needs root and the Debian packages ``docker.io``, ``podman``, ``runc`` and ``busybox-static``
(scripts/ensure-system.sh --postgres). If they are missing, the daemon does not come up or the image cannot be
imported, the tests that need them FAIL; they never skip. Each pytest-xdist worker has its own daemon and
storage; the root file system's tar is built once (scripts/build-image.sh caches it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from testing.engines import IMAGE, DockerDaemon, EngineCLI, EngineUnavailable, import_image, private_podman

__all__ = ["IMAGE", "EngineCLI", "docker_cli", "podman_cli"]


@pytest.fixture(scope="session")
def docker_cli() -> Iterator[EngineCLI]:
    with contextlib.ExitStack() as stack:
        yield _with_image("Docker", lambda: stack.enter_context(DockerDaemon()).cli)


@pytest.fixture(scope="session")
def podman_cli() -> Iterator[EngineCLI]:
    with contextlib.ExitStack() as stack:
        yield _with_image("Podman", lambda: stack.enter_context(private_podman()))


def _with_image(name: str, start: Callable[[], EngineCLI]) -> EngineCLI:
    """``start()`` the engine and import the image; the test fails (never skips) if either fails."""
    try:
        cli = start()
        import_image(cli)
        return cli
    except EngineUnavailable as exc:
        problem = str(exc)
    pytest.fail(f"{name}: {problem}", pytrace=False)  # out of the except: the message alone, no traceback
