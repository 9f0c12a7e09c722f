"""Files: upload and download throughput against a plain copy on the same disk, server memory while a big
file streams in, a folder streamed as a zip, and presigned S3 transfers against plain boto3.

Targets (issue, 2-core machine): PUT and GET of 1 GiB and 5 GiB at >= 0.7x the speed of copying the same
bytes on the same disk (with fsync); the server's RSS grows <= 100 MB while a 5 GiB upload streams in.
The zip and S3 rows have no target of their own; they say how far each is from its natural floor.

Every measurement runs against a real ``labcloud serve`` (see harness.py) on SQLite (on the first backend
asked for when SQLite is not among them: the database does not carry the bytes) with the local store, and
for S3 with a real SeaweedFS (bench/seaweed.py) as the store. Source files are random bytes (numpy's
generator, 16 MiB blocks, nothing repeats), written once per size to a scratch folder on the same file
system as the server's LABCLOUD_HOME; every file written in a timed step is fsynced inside the timing:

- copy: ``shutil.copyfile`` (``sendfile`` in the kernel on Linux) of the source to a new file + fsync;
- upload: ``PUT /api/v1/files/{path}`` with httpx streaming the source in 1 MiB reads (Content-Length
  set), until the 201 answer: the server has hashed, fsynced and published the file by then;
- download: ``GET`` streamed by httpx to a new file + fsync.

Copies, uploads and downloads alternate within each round, so that a noisy neighbour hits all of them;
the rows give medians. The page cache holds the source and the stored file (the machine has the RAM), so
reads hit memory on both sides of each ratio and the disk sees only the writes. MB is 10^6 bytes.

Each row also says how trustworthy the machine was (as bench_jobs does): ``other_cpu_pct``, CPU used by
processes other than the benchmark's own (this client, the server, SeaweedFS) while the row was measured,
in % of one core, and ``cpu_calib_ms``, a fixed Python loop timed just before.

Full run (~10-15 min, ~16 GB of scratch disk at the peak): 1 GiB x 3 rounds, 5 GiB x 1 (skipped, with a
row saying so, under 25 GB free), a zip of 16 x 64 MiB x 3, S3 1 GiB x 3. ``--quick``: 64 MiB files,
16 x 4 MiB, one round each. Scratch files are removed as each step ends.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from boto3.s3.transfer import TransferConfig

from bench.harness import Result, Server, running_server
from bench.harness import with_machine as harness_with_machine
from testing.seaweed import SeaweedFS, seaweedfs

MiB = 1 << 20
GiB = 1 << 30
MB = 1e6
READ_CHUNK = 1 * MiB
GEN_BLOCK = 16 * MiB
BIG = 5 * GiB
BIG_NEEDS_FREE = 25e9  # source + stored copy + one copy or download of a 5 GiB file, and some room
RSS_INTERVAL_S = 0.05
HTTP_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
S3_BUCKET = "labcloud-bench"
S3_PART_THREADS = 4

TARGETS = {
    "upload": "upload/copy >= 0.7",
    "upload-big": "upload/copy >= 0.7; server RSS growth <= 100 MB",
    "download": "download/copy >= 0.7",
    "zip": "none (copy of the same bytes is the floor)",
    "s3": "none (plain boto3 to the same store is the floor)",
}


@dataclass(frozen=True)
class Plan:
    files: tuple[tuple[int, int], ...]  # (size, rounds)
    zip_members: int
    zip_member_size: int
    zip_rounds: int
    s3_size: int
    s3_part_size: int
    s3_rounds: int


FULL = Plan(
    files=((1 * GiB, 3), (BIG, 1)),
    zip_members=16,
    zip_member_size=64 * MiB,
    zip_rounds=3,
    s3_size=1 * GiB,
    s3_part_size=64 * MiB,
    s3_rounds=3,
)
QUICK = Plan(
    files=((64 * MiB, 1),),
    zip_members=16,
    zip_member_size=4 * MiB,
    zip_rounds=1,
    s3_size=64 * MiB,
    s3_part_size=16 * MiB,
    s3_rounds=1,
)


# ------------------------------------------------------------------------------------------- helpers


def human(size: int) -> str:
    if size % GiB == 0:
        return f"{size // GiB} GiB"
    return f"{size // MiB} MiB"


def mbps(size: int, seconds: float) -> float:
    return round(size / MB / seconds, 1)


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_random(path: Path, size: int, seed: int) -> str:
    """``size`` random bytes (no block repeats) to ``path``, fsynced; their SHA-256."""
    rng = np.random.default_rng(seed)
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            block = rng.bytes(min(GEN_BLOCK, left))
            digest.update(block)
            fh.write(block)
            left -= len(block)
        fh.flush()
        os.fsync(fh.fileno())
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def file_chunks(path: Path, start: int = 0, length: int | None = None) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(start)
        left = os.fstat(fh.fileno()).st_size - start if length is None else length
        while left > 0:
            chunk = fh.read(min(READ_CHUNK, left))
            if not chunk:
                raise RuntimeError(f"{path} ended {left} bytes early")
            left -= len(chunk)
            yield chunk


@dataclass
class Copy:
    seconds: float
    fsync_s: float  # of which the final fsync


def timed_copy(src: Path, dst: Path) -> Copy:
    """Copy ``src`` to a new ``dst`` and fsync it; ``dst`` is removed afterwards."""
    dst.unlink(missing_ok=True)
    t0 = time.perf_counter()
    shutil.copyfile(src, dst)
    t1 = time.perf_counter()
    fsync_path(dst)
    t2 = time.perf_counter()
    dst.unlink()
    return Copy(t2 - t0, t2 - t1)


def copy_metrics(size: int, copies: list[Copy]) -> dict[str, float]:
    return {
        "copy_MBps": mbps(size, median([c.seconds for c in copies])),
        "copy_fsync_pct": float(round(median([c.fsync_s / c.seconds * 100 for c in copies]))),
    }


def stream_to_nothing(client: httpx.Client, url: str) -> int:
    got = 0
    with client.stream("GET", url) as r:
        if r.status_code != 200:
            raise RuntimeError(f"GET {url}: {r.status_code}")
        for chunk in r.iter_raw():
            got += len(chunk)
    return got


def stream_to_file(client: httpx.Client, url: str, dst: Path, **kwargs: Any) -> tuple[httpx.Response, int]:
    """GET ``url`` into ``dst`` (fsynced); the response (body consumed) and the number of bytes."""
    got = 0
    with client.stream("GET", url, **kwargs) as r, open(dst, "wb") as fh:
        if r.status_code != 200:
            r.read()
            raise RuntimeError(f"GET {url}: {r.status_code} {r.text[:300]}")
        for chunk in r.iter_raw():
            fh.write(chunk)
            got += len(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    return r, got


class Body:
    """A request body streamed from a file that notes when httpx has sent its last byte."""

    def __init__(self, src: Path, start: int, length: int) -> None:
        self.src, self.start, self.length = src, start, length
        self.sent_at = 0.0

    def __iter__(self) -> Iterator[bytes]:
        yield from file_chunks(self.src, self.start, self.length)
        self.sent_at = time.perf_counter()  # httpx asks for more once the last chunk is on the socket


@dataclass
class Upload:
    seconds: float  # until the answer
    tail_s: float  # from the last byte sent to the answer: the server's fsync, publish, index
    body: dict[str, Any]


def curl_to_file(fs: FilesServer, work: Path, remote: str, dst: Path) -> float:
    """Seconds for curl to GET ``remote`` into ``dst``, fsync included (a client that is not Python)."""
    header = work / "curl-headers"
    header.write_text("".join(f"{k}: {v}\n" for k, v in fs.headers.items()))
    header.chmod(0o600)
    t0 = time.perf_counter()
    subprocess.run(
        ["curl", "-sSf", "-o", str(dst), "-H", f"@{header}", f"{fs.server.url}/api/v1/files/{remote}"],
        check=True,
    )
    fsync_path(dst)
    return time.perf_counter() - t0


def upload(client: httpx.Client, remote: str, src: Path, size: int, start: int = 0) -> Upload:
    content = Body(src, start, size)
    t0 = time.perf_counter()
    r = client.put(
        f"/api/v1/files/{remote}",
        content=iter(content),
        headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
    )
    t1 = time.perf_counter()
    if r.status_code != 201:
        raise RuntimeError(f"PUT {remote}: {r.status_code} {r.text[:300]}")
    return Upload(t1 - t0, t1 - content.sent_at, r.json())


def delete_remote(client: httpx.Client, remote: str) -> None:
    r = client.delete(f"/api/v1/files/{remote}")
    if r.status_code not in (204, 404):
        raise RuntimeError(f"DELETE {remote}: {r.status_code} {r.text[:300]}")


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        with suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_info().rss
    return total


def tree_cpu(pid: int) -> float:
    total = 0.0
    for p in _tree(pid):
        with suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            c = p.cpu_times()
            total += c.user + c.system
    return total


class RssSampler:
    """Peak RSS of a process and its children, sampled every 50 ms in a thread while the block runs, and
    the CPU time they spent meanwhile."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu_s = 0.0
        self._cpu0 = tree_cpu(pid)
        self.baseline = tree_rss(pid)
        self.peak = self.baseline
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(RSS_INTERVAL_S):
            self.peak = max(self.peak, tree_rss(self.pid))
            self.samples += 1

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.pid))
        self.cpu_s = tree_cpu(self.pid) - self._cpu0

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def with_machine(pids: Callable[[], list[int]], measure: Callable[[], list[Result]]) -> list[Result]:
    """``measure()``'s rows with the machine's noise while it ran; the live trees ``pids`` count as ours."""
    return harness_with_machine(measure, lambda: sum(tree_cpu(pid) for pid in pids()))


@dataclass
class FilesServer:
    server: Server
    headers: dict[str, str]

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers=self.headers, timeout=HTTP_TIMEOUT)


@contextmanager
def files_server(backend: str, extra_env: dict[str, str] | None = None) -> Iterator[FilesServer]:
    env = {"LABCLOUD_MAX_UPLOAD_BYTES": str(64 * GiB), **(extra_env or {})}
    with running_server(backend, env) as server:
        fs = FilesServer(server, {"Authorization": f"Bearer {server.admin_token()}"})
        yield fs


def same_disk(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def warm_up(fs: FilesServer, work: Path) -> None:
    """First requests pay for imports and the first connection: one small upload and download."""
    src = work / "warm.bin"
    write_random(src, 4 * MiB, seed=0)
    with fs.client() as c:
        for _ in range(2):
            upload(c, "bench/warm.bin", src, 4 * MiB)
            stream_to_file(c, "/api/v1/files/bench/warm.bin", work / "warm.out")
        delete_remote(c, "bench/warm.bin")
    src.unlink()
    (work / "warm.out").unlink()


# ------------------------------------------------------------------------------- upload and download


def measure_file(fs: FilesServer, work: Path, backend: str, size: int, rounds: int) -> list[Result]:
    label = human(size)
    src = work / f"source-{size}.bin"
    remote = f"bench/file-{size}.bin"
    sha = write_random(src, size, seed=size)
    copies: list[Copy] = []
    ups: list[Upload] = []
    downs: list[float] = []
    nodisk: list[float] = []
    curls: list[float] = []
    has_curl = shutil.which("curl") is not None
    up_rss: list[RssSampler] = []
    down_rss: list[RssSampler] = []
    try:
        with fs.client() as c:
            for _ in range(rounds):
                copies.append(timed_copy(src, work / "copy.bin"))
                with RssSampler(fs.pid) as rss:
                    up = upload(c, remote, src, size)
                ups.append(up)
                up_rss.append(rss)
                if up.body["size"] != size or up.body["sha256"] != sha:
                    raise RuntimeError(f"PUT stored {up.body['size']} bytes, sha256 {up.body['sha256']}")
                dst = work / "download.bin"
                with RssSampler(fs.pid) as rss:
                    t0 = time.perf_counter()
                    _, got = stream_to_file(c, f"/api/v1/files/{remote}", dst)
                    downs.append(time.perf_counter() - t0)
                down_rss.append(rss)
                if got != size or sha256_of(dst) != sha:
                    raise RuntimeError(f"GET returned {got} bytes, or not the bytes uploaded")
                dst.unlink()
                t0 = time.perf_counter()
                if stream_to_nothing(c, f"/api/v1/files/{remote}") != size:
                    raise RuntimeError("GET returned the wrong number of bytes")
                nodisk.append(time.perf_counter() - t0)
                if has_curl:
                    curls.append(curl_to_file(fs, work, remote, dst))
                    if dst.stat().st_size != size:
                        raise RuntimeError("curl's GET returned the wrong number of bytes")
                    dst.unlink()
            delete_remote(c, remote)
    finally:
        src.unlink(missing_ok=True)
        for name in ("copy.bin", "download.bin"):
            (work / name).unlink(missing_ok=True)
    copy_s, down_s = median([c.seconds for c in copies]), median(downs)
    up_s = median([u.seconds for u in ups])
    common = {"n": float(rounds), **copy_metrics(size, copies)}
    up_metrics = {
        "upload_MBps": mbps(size, up_s),
        **common,
        "ratio": round(copy_s / up_s, 2),
        "send_MBps": mbps(size, median([u.seconds - u.tail_s for u in ups])),
        "tail_s": round(median([u.tail_s for u in ups]), 2),
        "server_cpu_s_per_GiB": round(median([r.cpu_s for r in up_rss]) * GiB / size, 2),
        "rss_base_MB": round(up_rss[0].baseline / MB, 1),
        "rss_peak_MB": round(max(r.peak for r in up_rss) / MB, 1),
        "rss_growth_MB": round(max(r.growth for r in up_rss) / MB, 1),
    }
    down_metrics = {
        "download_MBps": mbps(size, down_s),
        **common,
        "ratio": round(copy_s / down_s, 2),
        "nodisk_MBps": mbps(size, median(nodisk)),
        **(
            {"curl_MBps": mbps(size, median(curls)), "curl_ratio": round(copy_s / median(curls), 2)}
            if curls
            else {}
        ),
        "server_cpu_s_per_GiB": round(median([r.cpu_s for r in down_rss]) * GiB / size, 2),
        "rss_growth_MB": round(max(r.growth for r in down_rss) / MB, 1),
    }
    how = (
        f"random bytes; {rounds} round(s) of copy, PUT, GET, medians; ratio = copy time / transfer time; "
        "every written file fsynced inside the timing; source and stored file in the page cache"
    )
    rss_note = (
        "server_cpu_s_per_GiB = CPU time (user + system) of the server's processes during the request, "
        "per GiB (steadier than MB/s on a shared machine); rss_* = server process tree, sampled every "
        f"{RSS_INTERVAL_S * 1000:.0f} ms "
        f"({up_rss[0].samples} samples in the first upload); growth = peak - before the request"
    )
    return [
        Result(
            f"files: PUT {label} (local store)",
            backend,
            up_metrics,
            target=TARGETS["upload-big" if size >= BIG else "upload"],
            notes=f"httpx streams the file in 1 MiB reads with Content-Length, timed until the 201; "
            f"{how}; copy_fsync_pct = share of the copy's time in its final fsync; send_MBps = until httpx "
            "sent the last byte, tail_s = from then to the 201 (the server's last MBs, fsync, publish, "
            f"index); {rss_note}",
        ),
        Result(
            f"files: GET {label} (local store)",
            backend,
            down_metrics,
            target=TARGETS["download"],
            notes=f"httpx streams the body (iter_raw) into a new file; content checked by SHA-256 "
            f"outside the timing; nodisk_MBps = one more GET per round, the client dropping the bytes "
            f"(what the server sends when the client's disk is out of the way); curl_* = curl -o into a new "
            f"file + fsync (a faster client: httpx streams top out near 300 MB/s on this machine); "
            f"server_cpu_s_per_GiB as in the PUT row, for the httpx GET; {how}",
        ),
    ]


# ----------------------------------------------------------------------------------------------- zip


def measure_zip(fs: FilesServer, work: Path, backend: str, plan: Plan) -> list[Result]:
    count, member = plan.zip_members, plan.zip_member_size
    total = count * member
    src = work / "zip-source.bin"
    write_random(src, total, seed=4242)
    folder = "bench-zip"
    copies: list[Copy] = []
    zips: list[float] = []
    sizes: list[int] = []
    rss_growth: list[int] = []
    checked = ""
    dst = work / "folder.zip"
    try:
        with fs.client() as c:
            for i in range(count):  # untimed: the folder's files come from slices of the source
                upload(c, f"{folder}/part-{i:02d}.bin", src, member, start=i * member)
            for n in range(plan.zip_rounds):
                copies.append(timed_copy(src, work / "copy.bin"))
                with RssSampler(fs.pid) as rss:
                    t0 = time.perf_counter()
                    r, got = stream_to_file(c, f"/api/v1/files/{folder}", dst)
                    zips.append(time.perf_counter() - t0)
                rss_growth.append(rss.growth)
                sizes.append(got)
                if r.headers.get("content-type") != "application/zip":
                    raise RuntimeError(f"folder GET answered {r.headers.get('content-type')}")
                if n == 0:
                    checked = check_zip(dst, folder, count, member)
                dst.unlink()
            delete_remote(c, folder)
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
        (work / "copy.bin").unlink(missing_ok=True)
    copy_s, zip_s = median([c.seconds for c in copies]), median(zips)
    metrics = {
        "zip_MBps": mbps(total, zip_s),
        **copy_metrics(total, copies),
        "ratio": round(copy_s / zip_s, 2),
        "n": float(plan.zip_rounds),
        "zip_overhead_bytes": float(median([float(s) for s in sizes]) - total),
        "rss_growth_MB": round(max(rss_growth) / MB, 1),
    }
    return [
        Result(
            f"files: GET folder as zip ({count} x {human(member)})",
            backend,
            metrics,
            target=TARGETS["zip"],
            notes=f"zip_MBps counts the members' bytes; streamed by httpx into a file, fsynced; copy = "
            f"copyfile + fsync of one {human(total)} file with the same bytes; {checked}",
        )
    ]


def check_zip(path: Path, folder: str, count: int, member: int) -> str:
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        names = sorted(i.filename for i in infos)
        wanted = sorted(f"{folder}/part-{i:02d}.bin" for i in range(count))
        if names != wanted:
            raise RuntimeError(f"the zip lists {names[:5]}..., not {wanted[:5]}...")
        wrong = [i.filename for i in infos if i.file_size != member]
        if wrong:
            raise RuntimeError(f"zip members with the wrong size: {wrong}")
        bad = zf.testzip()
        if bad is not None:
            raise RuntimeError(f"zip member {bad} fails its CRC")
    return f"zip checked (first round): {count} members, sizes right, testzip() clean"


# ------------------------------------------------------------------------------------------------ S3


def presigned_upload(
    fs: FilesServer, http: httpx.Client, remote: str, src: Path, size: int, sha: str, part_size: int
) -> tuple[float, float, float]:
    """(seconds in all, seconds sending the parts, seconds in complete) of a direct upload."""
    with fs.client() as c:
        t0 = time.perf_counter()
        r = c.post(
            "/api/v1/direct-uploads",
            json={"path": remote, "size": size, "sha256": sha, "part_size": part_size},
        )
        if r.status_code != 201:
            raise RuntimeError(f"POST /direct-uploads: {r.status_code} {r.text[:300]}")
        started = r.json()
        t_parts = time.perf_counter()

        def put_part(part: dict[str, Any]) -> dict[str, Any]:
            n = part["part_number"]
            offset = (n - 1) * started["part_size"]
            length = min(started["part_size"], size - offset)
            pr = http.put(
                part["url"], content=file_chunks(src, offset, length), headers={"Content-Length": str(length)}
            )
            if pr.status_code != 200:
                raise RuntimeError(f"PUT part {n}: {pr.status_code} {pr.text[:300]}")
            return {"part_number": n, "etag": pr.headers["etag"]}

        with ThreadPoolExecutor(S3_PART_THREADS) as pool:
            parts = list(pool.map(put_part, started["parts"]))
        t_complete = time.perf_counter()
        r = c.post(f"/api/v1/direct-uploads/{started['id']}/complete", json={"parts": parts})
        t1 = time.perf_counter()
        if r.status_code != 200 or r.json()["sha256"] != sha:
            raise RuntimeError(f"complete: {r.status_code} {r.text[:300]}")
    return t1 - t0, t_complete - t_parts, t1 - t_complete


def presigned_download(fs: FilesServer, http: httpx.Client, remote: str, dst: Path) -> tuple[float, int]:
    with fs.client() as c:
        t0 = time.perf_counter()
        r = c.get(f"/api/v1/files/{remote}")
        if r.status_code != 307:
            raise RuntimeError(f"GET {remote} on S3 answered {r.status_code}, not a 307 redirect")
        _, got = stream_to_file(http, r.headers["location"], dst)
        return time.perf_counter() - t0, got


def measure_s3(work: Path, backend: str, plan: Plan) -> list[Result]:
    size = plan.s3_size
    with seaweedfs(work / "seaweedfs") as s3:
        s3.client().create_bucket(Bucket=S3_BUCKET)
        env = {
            "LABCLOUD_STORAGE_URL": f"s3://{S3_BUCKET}/labcloud",
            "LABCLOUD_S3_ENDPOINT_URL": s3.endpoint_url,
            "LABCLOUD_S3_ACCESS_KEY_ID": s3.access_key,
            "LABCLOUD_S3_SECRET_ACCESS_KEY": s3.secret_key,
            "LABCLOUD_S3_REGION": s3.region,
        }
        with files_server(backend, env) as fs:
            pids = [fs.pid, *([s3.process.pid] if s3.process else [])]
            return with_machine(lambda: pids, lambda: _s3_rounds(fs, s3, work, backend, plan, size))


def _s3_rounds(
    fs: FilesServer, s3: SeaweedFS, work: Path, backend: str, plan: Plan, size: int
) -> list[Result]:
    boto = s3.client()
    plain = TransferConfig()  # boto3's defaults: 8 MiB parts and ranges, 10 threads
    src = work / "s3-source.bin"
    sha = write_random(src, size, seed=7)
    dst = work / "s3-download.bin"
    ups: list[float] = []
    parts_s: list[float] = []
    complete_s: list[float] = []
    downs: list[float] = []
    boto_ups: list[float] = []
    boto_downs: list[float] = []
    try:
        with httpx.Client(timeout=HTTP_TIMEOUT) as http:
            # warm-up: first connections, first volumes of the bucket
            warm = work / "s3-warm.bin"
            warm_sha = write_random(warm, 8 * MiB, seed=8)
            presigned_upload(fs, http, "bench/warm.bin", warm, 8 * MiB, warm_sha, 5 * MiB)
            presigned_download(fs, http, "bench/warm.bin", work / "s3-warm.out")
            boto.upload_file(str(warm), S3_BUCKET, "plain/warm.bin", Config=plain)
            boto.download_file(S3_BUCKET, "plain/warm.bin", str(work / "s3-warm.out"), Config=plain)
            warm.unlink()
            (work / "s3-warm.out").unlink()

            def ours_up(n: int) -> None:
                total, parts, complete = presigned_upload(
                    fs, http, f"bench/s3-{n}.bin", src, size, sha, plan.s3_part_size
                )
                ups.append(total)
                parts_s.append(parts)
                complete_s.append(complete)

            def boto_up(n: int) -> None:
                t0 = time.perf_counter()
                boto.upload_file(str(src), S3_BUCKET, f"plain/s3-{n}.bin", Config=plain)
                boto_ups.append(time.perf_counter() - t0)

            def ours_down(n: int) -> None:
                seconds, got = presigned_download(fs, http, f"bench/s3-{n}.bin", dst)
                if got != size or sha256_of(dst) != sha:
                    raise RuntimeError("the presigned download did not return the bytes uploaded")
                downs.append(seconds)
                dst.unlink()

            def boto_down(n: int) -> None:
                t0 = time.perf_counter()
                boto.download_file(S3_BUCKET, f"plain/s3-{n}.bin", str(dst), Config=plain)
                fsync_path(dst)
                boto_downs.append(time.perf_counter() - t0)
                dst.unlink()

            for n in range(plan.s3_rounds):
                # alternate who goes first, so that neither always meets a freshly grown volume
                first, second = (ours_up, boto_up) if n % 2 == 0 else (boto_up, ours_up)
                first(n)
                second(n)
                first, second = (ours_down, boto_down) if n % 2 == 0 else (boto_down, ours_down)
                first(n)
                second(n)
                with fs.client() as c:
                    delete_remote(c, f"bench/s3-{n}.bin")
                boto.delete_object(Bucket=S3_BUCKET, Key=f"plain/s3-{n}.bin")
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
    label = human(size)
    up_s, boto_up_s = median(ups), median(boto_ups)
    down_s, boto_down_s = median(downs), median(boto_downs)
    where = (
        f"SeaweedFS (weed server -s3, one process, volumes <= 1 GiB) on the same disk; {plan.s3_rounds} "
        "round(s), medians, ours and boto3 alternating who goes first; ratio = boto3 time / ours"
    )
    return [
        Result(
            f"files: S3 presigned upload {label}",
            backend,
            {
                "upload_MBps": mbps(size, up_s),
                "parts_MBps": mbps(size, median(parts_s)),
                "complete_s": round(median(complete_s), 2),
                "boto3_MBps": mbps(size, boto_up_s),
                "ratio": round(boto_up_s / up_s, 2),
                "n": float(plan.s3_rounds),
            },
            target=TARGETS["s3"],
            notes=f"POST /direct-uploads ({human(plan.s3_part_size)} parts), parts PUT by httpx from "
            f"{S3_PART_THREADS} threads, then complete (the server reads the object back for its "
            f"SHA-256: complete_s); upload_MBps counts all three; boto3 upload_file with default "
            f"TransferConfig (8 MiB parts, 10 threads); {where}",
        ),
        Result(
            f"files: S3 presigned download {label}",
            backend,
            {
                "download_MBps": mbps(size, down_s),
                "boto3_MBps": mbps(size, boto_down_s),
                "ratio": round(boto_down_s / down_s, 2),
                "n": float(plan.s3_rounds),
            },
            target=TARGETS["s3"],
            notes="GET /api/v1/files -> 307, then one httpx stream of the presigned URL into a file + "
            "fsync; boto3 download_file with default TransferConfig (8 MiB ranges, 10 threads) + fsync; "
            f"{where}",
        ),
    ]


# ------------------------------------------------------------------------------------------------ run


def run(backends: list[str], quick: bool = False) -> list[Result]:
    """Every measurement once, on SQLite if asked for (else the first backend): a failing one becomes a
    row saying why, the rest still run."""
    backend = "sqlite" if "sqlite" in backends else backends[0]
    plan = QUICK if quick else FULL
    results: list[Result] = []

    def failed(name: str, target: str, exc: Exception) -> list[Result]:
        note = f"FAILED: {exc.__class__.__name__}: {exc}"[:600]
        return [Result(f"files: {name}", backend, {}, target=target, notes=note)]

    with tempfile.TemporaryDirectory(prefix="labcloud-bench-files-") as tmp:
        work = Path(tmp)
        with files_server(backend) as fs:
            if not same_disk(work, fs.server.home):
                raise RuntimeError(f"{work} and {fs.server.home} are on different file systems")
            warm_up(fs, work)
            for size, rounds in plan.files:
                free = shutil.disk_usage(work).free
                if size >= BIG and free < BIG_NEEDS_FREE:
                    note = (
                        f"SKIPPED: {free / 1e9:.1f} GB free under {work}, the {human(size)} cases need "
                        f"{BIG_NEEDS_FREE / 1e9:.0f} GB"
                    )
                    results.append(
                        Result(f"files: PUT/GET {human(size)}", backend, {}, TARGETS["upload-big"], note)
                    )
                    continue
                try:
                    results += with_machine(
                        lambda: [fs.pid], partial(measure_file, fs, work, backend, size, rounds)
                    )
                except Exception as exc:
                    results += failed(f"PUT/GET {human(size)}", TARGETS["upload"], exc)
            try:
                results += with_machine(lambda: [fs.pid], lambda: measure_zip(fs, work, backend, plan))
            except Exception as exc:
                results += failed("GET folder as zip", TARGETS["zip"], exc)
        try:
            results += measure_s3(work, backend, plan)
        except Exception as exc:
            results += failed("S3 presigned transfers", TARGETS["s3"], exc)
    return results
