"""What the Slurm and Celery tests share: the apps they run, and waiting on a job's history."""

from __future__ import annotations

from pathlib import Path

from jobs_helpers import write_app

SH = "sh"
SMALL = {"cpus": 1, "memory_mb": 64, "timeout_s": 120}


def engine_apps(apps_dir: Path) -> None:
    write_app(
        apps_dir,
        "e-echo",
        [
            SH,
            "-c",
            'echo "hello from $LABCLOUD_JOB_ID"; sha256sum < "$LABCLOUD_INPUT_DATA" | cut -d" " -f1 '
            '> "$LABCLOUD_OUTPUT/data.sha256"; echo "::progress 1"',
        ],
        inputs={"data": {"type": "file"}},
        resources=SMALL,
    )
    write_app(
        apps_dir,
        "e-sleep",
        [
            SH,
            "-c",
            'echo "started $LABCLOUD_JOB_ID"; sleep "$LABCLOUD_PARAM_SECONDS"; '
            'echo done > "$LABCLOUD_OUTPUT/done.txt"; echo finished',
        ],
        parameters={"type": "object", "properties": {"seconds": {"type": "number", "default": 1}}},
        resources=SMALL,
    )
    write_app(apps_dir, "e-fail", [SH, "-c", "echo failing; exit 3"], resources=SMALL)
    write_app(
        apps_dir,
        "e-big",
        [SH, "-c", "echo big"],
        resources={"cpus": 4, "memory_mb": 64, "timeout_s": 120},
    )
    write_app(
        apps_dir,
        "e-gpu",
        [SH, "-c", "echo on the gpu partition"],
        resources={"cpus": 1, "memory_mb": 64, "gpus": 0, "timeout_s": 120},
        queue="gpu",
    )
