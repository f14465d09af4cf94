"""Milvus Lite as a local server process: the Milvus of the tests and of ``bench-index --backend milvus``.

Milvus Lite (``pip install milvus-lite``) speaks the Milvus gRPC protocol from
one process over a data folder. Started as its own process on a port (not
the in-process ``*.db`` URI pymilvus also offers) it is shared by several
processes exactly like a cluster's proxy: the indexer writes, readers search,
and its resident memory is what a single query node would hold.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MilvusLiteServer:
    """``python -m milvus_lite server`` on a free local port over ``data_dir``; ``uri`` once started."""

    def __init__(self, data_dir: Path, log_path: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.log_path = log_path or self.data_dir.with_suffix(".log")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> "MilvusLiteServer":
        """Start it and wait until it answers a request (a listening socket alone is not ready)."""
        from pymilvus import MilvusClient

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir),
                                          "--host", "127.0.0.1", "--port", str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Milvus Lite exited with {self.proc.returncode}; see {self.log_path}")
            try:
                MilvusClient(uri=self.uri, timeout=2).list_collections()
                return self
            except Exception:  # not listening yet
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Milvus Lite did not answer on {self.uri} within {timeout_s:.0f} s; see {self.log_path}")

    def rss_bytes(self) -> int:
        """Resident bytes of the server process (what one query node holds)."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # its clean shutdown: drain requests, close the data folder
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> "MilvusLiteServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
