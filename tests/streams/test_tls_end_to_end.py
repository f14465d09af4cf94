"""The whole system over TLS: topics, item publishing, worker, dead-letter re-drive, indexer and client.

The embedded broker speaks plaintext, so Debian's stunnel4 terminates TLS in
front of it (client certificates verified) and the broker advertises the
proxy's port: every client must connect through TLS or not at all. A
client built without the security settings fails against the proxy, which
this test checks too, so it cannot pass by accident over plaintext.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dreamstream import codec
from dreamstream.bench import harness as h
from dreamstream.broker import EmbeddedBroker, free_port, wait_for_port
from dreamstream.bundle import load_bundle
from dreamstream.topics import WATCH_EVENTS, create_topics

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("stunnel4") is None and shutil.which("stunnel") is None,
                                 reason="needs stunnel (Debian: apt-get install stunnel4) to put TLS in front of tansu")]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA."""
    folder.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=dreamstream test CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, extra in (("server", ["-extfile", "san.cnf"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=folder)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-out", f"{name}.pem", *extra, cwd=folder)
    return {name: folder / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


@pytest.fixture
def tls_broker(tmp_path: Path):
    """(broker URL through TLS, certificate paths): tansu on a private port, stunnel in front of it."""
    certs = make_certificates(tmp_path / "certs")
    plain, tls = free_port(), free_port()
    conf = tmp_path / "stunnel.conf"
    conf.write_text(f"foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{tls}\nconnect = 127.0.0.1:{plain}\n"
                    f"cert = {certs['server.pem']}\nkey = {certs['server.key']}\nCAfile = {certs['ca.pem']}\n"
                    f"verify = 2\n")
    broker = EmbeddedBroker(port=plain, advertised_port=tls).start()
    proxy = subprocess.Popen([shutil.which("stunnel4") or shutil.which("stunnel"), str(conf)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(tls, 20, proxy, what="stunnel")
        yield f"kafka://127.0.0.1:{tls}", certs
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(10)
        broker.stop()


def test_worker_indexer_replay_and_client_run_over_tls(tls_broker, tmp_path, bundle_dir, make_settings) -> None:
    from dreamstream.client import Retriever, latest_user_record
    from dreamstream.replay import redrive_dead_letters
    from e2e_support import assert_exact, install, read_dead_letters, wait_until

    url, certs = tls_broker
    s = make_settings(broker=url, kafka_security_protocol="SSL", kafka_ssl_cafile=certs["ca.pem"],
                      kafka_ssl_certfile=certs["client.pem"], kafka_ssl_keyfile=certs["client.key"],
                      partitions=2, cold_min_positive=0, batch_size=256, batch_timeout_s=0.05, web_port=0,
                      index_shards=2, index_interval_s=0.3)
    from dreamstream.topics import admin_client

    with pytest.raises(Exception):  # the same broker without the TLS settings: refused, so nothing below is plaintext
        admin_client(s.model_copy(update={"kafka_security_protocol": "PLAINTEXT"}), timeout_s=3).close()
    install(bundle_dir, s.model_dir)
    create_topics(s)
    bundle = load_bundle(bundle_dir)
    items = dict(zip(bundle.item_ids, bundle.items))
    held_back = bundle.item_ids[-1]  # its vector is published only after its event was dead-lettered
    h.publish_items(s, bundle.item_ids[:-1], bundle.items[:-1], model=bundle.version)

    worker = h.WorkerProcess(s, tmp_path / "worker.log").start()
    indexer_env = h.settings_env(s)
    indexer = subprocess.Popen([str(Path(sys.executable).parent / "dreamstream"), "indexer"], env=indexer_env,
                               stdout=open(tmp_path / "indexer.log", "w"), stderr=subprocess.STDOUT)
    try:
        events = h.synthetic_events(300, 20, bundle.item_ids[:-1], seed=3)
        h.produce_sync(s, s.topic(WATCH_EVENTS), h.event_messages(events))
        late = {"user": "late-user", "video": held_back, "ts": events[-1]["ts"] + 1, "watch_ms": 9000.0,
                "duration_ms": 10000.0}
        h.produce_sync(s, s.topic(WATCH_EVENTS), h.event_messages([late]))
        col = h.read_records(s, {u: n for u, n in _counts(events).items()}, timeout_s=90)
        assert_exact(col, events, items, model=bundle.version)

        letters = read_dead_letters(s, 1, timeout_s=60)
        assert len(letters) == 1 and "not in the item table" in letters[0]["reason"]
        h.publish_items(s, [held_back], bundle.items[-1:], model=bundle.version)
        wait_until(lambda: redrive_dead_letters(s, progress=False).sent >= 1, 60, "the letter re-driven over TLS")
        late_rec = h.read_records(s, {"late-user": 1}, timeout_s=60).latest["late-user"]
        np.testing.assert_allclose(codec.bin_to_vec(late_rec["vector"]), items[held_back], atol=1e-5)

        from dreamstream.index.publish import read_current

        wait_until(lambda: read_current(s.index_dir) is not None, 90, "an index version built from item-vectors over TLS")
        user = events[0]["user"]
        record = latest_user_record(s, user, timeout_s=30)
        assert record is not None and record["seq"] == _counts(events)[user]
        with Retriever(s.index_dir) as retriever:
            wait_until(lambda: retriever.refresh() or sum(map(len, retriever.version.ids)) >= len(items) - 1, 60,
                       "the index holds the published items")
            assert len(retriever.search(record, 10)) == 10
    finally:
        worker.stop()
        indexer.send_signal(signal.SIGTERM)
        try:
            indexer.wait(15)
        except subprocess.TimeoutExpired:
            indexer.kill()


def _counts(events: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in events:
        out[e["user"]] = out.get(e["user"], 0) + 1
    return out
