"""Snakemake for the TES tests: Snakemake with its TES executor and S3 storage plugins in a venv of its own
(its TES plugin needs py-tes 0.4, the test extras have py-tes 1.1), and the image its tasks run in,
``labcloud/snakemake:<version>`` (scripts/build-snakemake-image.sh builds its root file system once).

Both are kept in ``${XDG_CACHE_HOME:-~/.cache}/labcloud/``; the first time, they are made from PyPI and
Debian's packages (a few minutes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from testing.engines import EngineCLI

SNAKEMAKE = "9.27.1"
TES_PLUGIN = "0.1.3"
S3_PLUGIN = "0.3.6"
IMAGE = f"labcloud/snakemake:{SNAKEMAKE}"
BUILD = Path(__file__).resolve().parents[1] / "scripts" / "build-snakemake-image.sh"
IMAGE_PATH = "/opt/snakemake/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labcloud"


def snakemake_venv() -> Path:
    """The venv's folder (``bin/snakemake`` in it), made once (a file ``ready`` says it is whole)."""
    venv = _cache() / f"snakemake-{SNAKEMAKE}-tes-{TES_PLUGIN}-s3-{S3_PLUGIN}"
    if (venv / "ready").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)  # a venv names its own folder inside: it is made where it stays
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    packages = [
        f"snakemake=={SNAKEMAKE}",
        f"snakemake-executor-plugin-tes=={TES_PLUGIN}",
        f"snakemake-storage-plugin-s3=={S3_PLUGIN}",
    ]
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *packages], check=True, timeout=900
    )
    (venv / "ready").write_text("")
    return venv


def import_snakemake_image(cli: EngineCLI) -> str:
    """Build (once) and import the image into the engine; its tag."""
    done = subprocess.run(
        ["bash", str(BUILD), SNAKEMAKE, S3_PLUGIN], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the Snakemake image could not be built:\n{done.stderr[-3000:]}")
    tar = done.stdout.strip().splitlines()[-1]
    cli.run("import", "--change", f"ENV PATH={IMAGE_PATH}", tar, IMAGE, timeout=600)
    return IMAGE
