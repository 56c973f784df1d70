"""Load on `digitrec-serve`: `python -m digitrec.bench.load [--checkpoint CKPT] [--requests 2000] [--startup RUNS]`.

Starts the server as users run it (its own process, on a free port of 127.0.0.1), then sends
`POST /predict` with one 300×300 PNG of a handwritten-style digit from 1, 4 and 16 concurrent
clients (keep-alive connections, one thread each) and prints, per level, requests per second, p50
and p99 latency and the number of errors, beside the in-process `DigitPredictor.predict` on the
same bytes; then the server's resident memory after 100 requests and after the whole run.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from digitrec.bench.latency import untrained_checkpoint, user_like_digit
from digitrec.bench.machine import cpu_model
from digitrec.bench.measure import median_time
from digitrec.errors import ConfigError, exit_on_user_error
from digitrec.inference.predictor import DigitPredictor
from digitrec.validation import check_range

LEVELS = (1, 4, 16)


def multipart(data: bytes, filename: str = "digit.png", **fields: str) -> tuple[bytes, str]:
    """A multipart/form-data body holding text `fields` and one file field `file`, and its content type."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
    parts.append(f"{head}Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    checkpoint: Path | None,
    threads: int,
    feedback_db: Path | str | None = None,
    cwd: Path | None = None,
    options: Sequence[str] = (),
) -> tuple[subprocess.Popen, int]:
    """`digitrec-serve` on a free port, returned once `/health` answers; it stores feedback only into
    `feedback_db` (a SQLite file or a URL; none: nothing is written). No checkpoint: what the server
    chooses from `cwd`. `options`: more of its command line."""
    port = _free_port()
    feedback = ["--feedback-db", str(feedback_db)] if feedback_db is not None else ["--no-feedback"]
    model = ["--checkpoint", str(checkpoint)] if checkpoint is not None else []
    command = [sys.executable, "-m", "digitrec.serve", *model, "--port", str(port), "--threads", str(threads)]
    proc = subprocess.Popen(
        [*command, *feedback, *options], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"digitrec-serve did not start: {proc.stderr.read().strip()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise ConfigError("digitrec-serve did not answer within 60 s.")


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(port: int, body: bytes, content_type: str, clients: int, requests: int) -> dict[str, float]:
    """`requests` POST /predict shared by `clients` threads; latency percentiles in ms."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    shares = [requests // clients + (i < requests % clients) for i in range(clients)]

    def client(count: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine, failed = [], 0
        for _ in range(count):
            start = time.perf_counter()
            try:
                connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                failed += response.status != 200
            except (OSError, http.client.HTTPException):
                failed += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - start)
        connection.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client, args=(n,)) for n in shares]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = 1000 * np.asarray(latencies)
    return {
        "requests": requests,
        "rps": requests / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": errors[0],
    }


def in_process_p50_ms(checkpoint: Path, data: bytes, threads: int, repeats: int = 300) -> float:
    torch.set_num_threads(threads)
    predictor = DigitPredictor(checkpoint, device="cpu")
    return 1000 * median_time(lambda: predictor.predict(data), warmup=20, repeats=repeats)


def first_answer_seconds(data: bytes, cwd: Path) -> float:
    """Wall time from starting the server as `make serve` does (no checkpoint: the bundled model, from a
    folder without outputs/) to its first answered digit."""
    body, content_type = multipart(data)
    start = time.perf_counter()
    proc, port = start_server(None, threads=1, cwd=cwd)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise ConfigError(f"the server answered {response.status} to its first digit.")
        return time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _print_startup(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = user_like_digit(Path(tmp) / "digit.png").read_bytes()
        seconds = [first_answer_seconds(data, Path(tmp)) for _ in range(runs)]
    print(f"CPU: {cpu_model()}, torch {torch.__version__}; the bundled model; {runs} starts\n")
    print("| from | to | median (s) | range (s) |\n|---|---|---:|---:|")
    print(
        f"| `python -m digitrec.serve` started | first digit answered | {statistics.median(seconds):.2f} | "
        f"{min(seconds):.2f}–{max(seconds):.2f} |"
    )


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m digitrec.bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: an untrained cnn (same speed)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level (default 2000)")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads (default 1, as served)")
    startup = "time RUNS starts of the server (bundled model) to its first answer instead"
    parser.add_argument("--startup", type=int, metavar="RUNS", help=startup)
    args = parser.parse_args(argv)
    if args.startup is not None:
        _print_startup(check_range("--startup", args.startup, 1, integer=True))
        return 0
    if args.requests < 100 or args.threads < 1:
        raise ConfigError("--requests must be at least 100 and --threads positive.")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or untrained_checkpoint("cnn", Path(tmp) / "cnn.ckpt")
        data = user_like_digit(Path(tmp) / "digit.png").read_bytes()
        body, content_type = multipart(data)
        baseline = in_process_p50_ms(checkpoint, data, args.threads)
        proc, port = start_server(checkpoint, args.threads)
        try:
            load(port, body, content_type, 1, 100)  # warm-up
            memory_before = resident_mb(proc.pid)
            rows = []
            for clients in LEVELS:
                rows.append((clients, load(port, body, content_type, clients, args.requests)))
                rows[-1][1]["memory_mb"] = resident_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(
        f"CPU: {cpu_model()}, torch {torch.__version__}; {checkpoint.name}; server torch threads {args.threads}; "
        f"{len(data):,}-byte PNG\n"
    )
    print(
        "| clients | requests | requests/s | p50 (ms) | p99 (ms) | errors | p50 vs in-process | server memory |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for clients, r in rows:
        print(
            f"| {clients} | {r['requests']:,} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['errors']} | {r['p50_ms'] / baseline:.2f}× | {r['memory_mb'] - memory_before:+.0f} MB |"
        )
    print(f"\nIn-process DigitPredictor.predict on the same bytes: p50 {baseline:.2f} ms.")
    print(
        f"Server resident memory: {memory_before:.0f} MB after 100 requests; 'server memory' is the change "
        "from there after each level (levels run in turn)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
