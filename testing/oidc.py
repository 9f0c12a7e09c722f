"""A real, certified OpenID Provider for the single sign-on tests: the npm package ``oidc-provider``
(pinned in testing/oidc/package.json, installed by ``npm ci`` in scripts/test.sh) run by Node with
testing/oidc/provider.mjs and a configuration file the test writes.

``with oidc_provider(folder, port, clients, accounts) as issuer: ...``. A missing ``node`` or package is an
error that says how to install them, never a skip.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent / "oidc"
START_DEADLINE_S = 30.0


def node() -> str:
    found = shutil.which("node")
    assert found, (
        "node is missing: Node.js 20 or later runs the tests' OpenID provider (apt-get install nodejs npm)"
    )
    assert (HERE / "node_modules" / "oidc-provider" / "package.json").exists(), (
        "the oidc-provider package is missing: run scripts/ensure-system.sh --postgres (scripts/test.sh "
        "does), which runs npm ci in testing/oidc"
    )
    return found


@contextlib.contextmanager
def oidc_provider(
    folder: Path,
    port: int,
    clients: list[dict[str, Any]],
    accounts: dict[str, dict[str, Any]],
    device_flow: bool = True,
) -> Iterator[str]:
    """The provider on 127.0.0.1:``port`` for the ``with``; its issuer URL. Its development login form takes
    any password; the login typed names one of ``accounts`` (login → claims)."""
    issuer = f"http://127.0.0.1:{port}"
    config = folder / f"oidc-provider-{port}.json"
    settings = {
        "port": port,
        "issuer": issuer,
        "clients": clients,
        "accounts": accounts,
        "deviceFlow": device_flow,
    }
    config.write_text(json.dumps(settings))
    log_path = folder / f"oidc-provider-{port}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [node(), str(HERE / "provider.mjs"), str(config)],
            cwd=HERE,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            assert proc.poll() is None, "oidc-provider exited:\n" + log_path.read_text(errors="replace")
            try:
                if httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "oidc-provider did not start:\n" + log_path.read_text()
            time.sleep(0.1)
        yield issuer
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
