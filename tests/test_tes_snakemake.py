"""A real Snakemake workflow through labcloud's GA4GH TES (``snakemake --executor tes``): its jobs run as
tasks in labcloud/snakemake (testing/snakemake.py), their files in the test's SeaweedFS through Snakemake's
S3 storage plugin, which the tasks reach on the host's network (``tes_network = "host"``)."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import httpx
import pytest

from labcloud.settings import Settings
from live_server import Server, login_headers
from test_containers import use_engine
from testing.daemons import clean_env
from testing.engines import EngineCLI
from testing.seaweed import SeaweedFS
from testing.snakemake import import_snakemake_image, snakemake_venv

pytestmark = [pytest.mark.containers, pytest.mark.db_agnostic]

SNAKEFILE = """
rule all:
    input: "counts/total.txt"

rule words:
    output: "words/{sample}.txt"
    shell: "echo {wildcards.sample} alpha beta > {output}"

rule count:
    input: expand("words/{sample}.txt", sample=["a", "b"])
    output: "counts/total.txt"
    shell: "cat {input} | wc -w > {output}"
"""

# `snakemake ARGS...`, except that the TES plugin asks about its tasks from the start: it waits 40 s before
# its first status check ("until the TES backend has job info available"), while labcloud knows a task as soon
# as it answers the submission; the wait was most of the test's time. Then every
# --seconds-between-status-checks (1 s here instead of 10).
SNAKEMAKE_MAIN = """
import sys
import snakemake_executor_plugin_tes
from snakemake.cli import main

snakemake_executor_plugin_tes.common_settings.init_seconds_before_status_checks = 0
sys.argv[0] = "snakemake"
sys.exit(main())
"""


def test_snakemake_runs_a_workflow_through_tes(
    settings: Settings,
    docker_cli: EngineCLI,
    seaweedfs: SeaweedFS,
    s3_bucket: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    venv = snakemake_venv()
    image = import_snakemake_image(docker_cli)
    use_engine(settings, docker_cli)
    settings.tes_network = "host"  # the tasks reach SeaweedFS on 127.0.0.1
    server: Server = request.getfixturevalue("server")
    token = login_headers(server.url)["Authorization"].removeprefix("Bearer ")
    workflow = tmp_path / "workflow"
    workflow.mkdir()
    (workflow / "Snakefile").write_text(textwrap.dedent(SNAKEFILE))
    (tmp_path / "funnel.log").write_text("")  # the TES plugin prints it when a task fails
    argv = [
        str(venv / "bin" / "python"),
        "-c",
        SNAKEMAKE_MAIN,
        "--executor",
        "tes",
        "--tes-url",
        f"{server.url}/ga4gh/tes",  # its py-tes adds /v1/tasks
        "--tes-token",
        token,
        "--default-storage-provider",
        "s3",
        "--default-storage-prefix",
        f"s3://{s3_bucket}/wf",
        "--storage-s3-endpoint-url",
        seaweedfs.endpoint_url,
        "--storage-s3-access-key",
        seaweedfs.access_key,
        f"--storage-s3-secret-key={seaweedfs.secret_key}",  # (one form for a key that starts with "-")
        "--container-image",
        image,
        "--jobs",
        "2",
        "--seconds-between-status-checks",
        "1",
        "--latency-wait",
        "10",
    ]
    env = clean_env() | {"GITHUB_WORKSPACE": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run(
        argv, cwd=workflow, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    tasks = httpx.get(
        f"{server.url}/ga4gh/tes/v1/tasks",
        params={"view": "FULL"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()["tasks"]
    assert done.returncode == 0, (done.stderr[-5000:], tasks)
    assert len(tasks) == 3 and {t["state"] for t in tasks} == {"COMPLETE"}, tasks
    body = seaweedfs.client().get_object(Bucket=s3_bucket, Key="wf/counts/total.txt")["Body"].read()
    assert body.strip() == b"6"
    log_text = str(tasks)
    assert seaweedfs.secret_key not in log_text  # the job script's content (with the keys) is never shown
