"""Shared fixtures: synthetic IDX files, the real MNIST folder, and one small trained run."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# `make test` runs the suite on every core (pytest-xdist): each worker, and each run it starts, then
# keeps to one thread instead of all of them competing for every core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


LONG_FIRST = ("test_train.py", "test_ensemble.py", "test_evaluation.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules of long end-to-end tests first, so that the workers of `-n` finish together."""
    items.sort(key=lambda item: item.path.name not in LONG_FIRST)


def write_idx(path: Path, tensor: torch.Tensor, gz: bool = True) -> Path:
    """Write a uint8 tensor as an IDX file (magic 0x0801 / 0x0803 for 1-D / 3-D)."""
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(int(d).to_bytes(4, "big") for d in tensor.shape)
    payload = header + tensor.to(torch.uint8).contiguous().numpy().tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def make_fake_mnist(folder: Path, n_train: int = 200, n_test: int = 50, gz: bool = True, seed: int = 0) -> Path:
    """A tiny MNIST-shaped data set in `folder/MNIST/raw`; labels are learnable (a bright square per class)."""
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=g)
        images = torch.randint(0, 40, (n, 28, 28), generator=g)
        for i, label in enumerate(labels.tolist()):
            r, c = 2 + 2 * (label // 5) * 5, 2 + (label % 5) * 5
            images[i, r : r + 8, c : c + 4] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return folder


@pytest.fixture
def fake_mnist(tmp_path: Path) -> Path:
    """A data_dir holding a tiny synthetic MNIST (gzipped)."""
    return make_fake_mnist(tmp_path / "data")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST data_dir: $DIGITREC_DATA_DIR when set, else the copy the repository ships."""
    from digitrec.data.mnist import FILES, default_data_dir, raw_dir

    folder = default_data_dir()
    missing = [s for s in FILES if not any((raw_dir(folder) / (s + e)).is_file() for e in ("", ".gz"))]
    if missing:
        pytest.fail(
            f"Real MNIST not found in {raw_dir(folder)} (missing {missing}): restore the repository's "
            "data/MNIST/raw (git checkout -- data) or point DIGITREC_DATA_DIR at a copy."
        )
    return folder


def run_train(*overrides: str, cwd: Path = REPO, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real `train.py` entry point in a subprocess with Hydra overrides."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    flags = [o for o in overrides if o.startswith("-")]  # e.g. -m: argparse wants flags first
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        *flags,
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        *(o for o in overrides if not o.startswith("-")),
    ]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_trains(*runs: tuple[str, ...]) -> None:
    """Several `run_train` runs at once, each in its own process."""
    with ThreadPoolExecutor(len(runs)) as pool:
        list(pool.map(lambda overrides: run_train(*overrides), runs))


def once_per_session(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """`build(folder)` once per test session, also under pytest-xdist: the first worker to ask builds
    the folder all workers share, the others wait for it. Returns the folder."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, mnist_dir: Path) -> Path:
    """One real run: the MLP, 2 epochs on real MNIST (about 20 s), trained once per session.

    Returns a run directory of this worker's own, to write beside.
    """

    def train(folder: Path) -> None:
        run_train("model=mlp", "trainer.max_epochs=2", f"data.data_dir={mnist_dir}", f"hydra.run.dir={folder}")

    source = once_per_session(tmp_path_factory, "trained-run", train)
    summary = json.loads((source / "summary.json").read_text())
    assert summary["test_acc"] > 0.95, summary
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    shutil.copytree(source, run_dir)
    return run_dir


def _postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (on PATH, or Debian's newest /usr/lib/postgresql/*/bin)."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port, for the session: its URL.

    The server refuses to run as root, so as root it runs as the `postgres` user. Without PostgreSQL
    (or psycopg) the tests that need it fail under CI and are skipped elsewhere.
    """
    import importlib.util
    import pwd
    import socket
    import tempfile

    bin_dir = _postgres_bin()
    as_root = os.geteuid() == 0
    missing = (
        "PostgreSQL's initdb (Debian: apt-get install postgresql)"
        if bin_dir is None
        else "the psycopg driver (pip install 'digitrec[serve]')"
        if importlib.util.find_spec("psycopg") is None
        else "a 'postgres' user to run the server as (it refuses root)"
        if as_root and "postgres" not in {u.pw_name for u in pwd.getpwall()}
        else None
    )
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"PostgreSQL tests need {missing}.")
    folder = Path(tempfile.mkdtemp(prefix="digitrec-postgres-"))  # not under pytest's root-only folders
    user: dict = {}
    if as_root:
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
        user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"

    def run(*args: str) -> None:
        proc = subprocess.run(
            [str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, timeout=120, check=False, **user
        )
        if proc.returncode != 0:
            log = folder / "server.log"
            raise RuntimeError(
                f"{args[0]} failed:\n{proc.stdout}{proc.stderr}{log.read_text() if log.is_file() else ''}"
            )

    try:
        run("initdb", "-D", str(data), "-U", "digitrec", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        run(
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(folder / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder} -c fsync=off",
            "start",
        )
        yield f"postgresql+psycopg://digitrec@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").is_file():
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


CHROMIUM = os.environ.get("DIGITREC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing(reason: str) -> None:
    """Skip for a tool missing on a user's machine; in CI (`CI` set) fail, since .ci/run installs it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run this test (.ci/run installs what it needs).")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright (Playwright cannot download a browser of its own here)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("Playwright for Python is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
