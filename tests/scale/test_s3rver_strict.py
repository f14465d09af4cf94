"""The durable broker's S3 server refuses the conditional writes S3 refuses (tansu's offsets depend on it)."""
from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from dreamstream.broker import S3_BUCKET, STRICT_LAUNCHER, free_port, s3rver_package, wait_for_port

pytestmark = pytest.mark.skipif(not shutil.which("node"), reason="needs Node.js (the durable broker's s3rver)")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    port = free_port()
    data = tmp_path_factory.mktemp("s3")
    proc = subprocess.Popen(["node", str(STRICT_LAUNCHER), str(s3rver_package()), str(data), "127.0.0.1", str(port), S3_BUCKET],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 30, proc, what="s3rver")
        yield f"http://127.0.0.1:{port}/{S3_BUCKET}"
    finally:
        proc.terminate()
        proc.wait(10)


def put(url: str, body: bytes, **headers: str) -> tuple[int, str]:
    """(status, etag) of a PUT with these headers."""
    request = urllib.request.Request(url, data=body, method="PUT", headers={k.replace("_", "-"): v for k, v in headers.items()})
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, answer.headers.get("ETag", "")
    except urllib.error.HTTPError as err:
        return err.code, ""


def get(url: str) -> bytes:
    with urllib.request.urlopen(url) as answer:
        return answer.read()


def test_if_none_match_star_creates_once(s3: str):
    url = f"{s3}/records/00000000000000000000.batch"
    assert put(url, b"first", If_None_Match="*")[0] == 200
    assert put(url, b"second", If_None_Match="*")[0] == 412
    assert get(url) == b"first"


def test_if_match_is_a_compare_and_swap(s3: str):
    url = f"{s3}/watermark.json"
    status, etag = put(url, b'{"high": 1}', If_None_Match="*")
    assert status == 200 and etag
    assert put(url, b'{"high": 0}', If_Match='"stale"')[0] == 412
    status, newer = put(url, b'{"high": 2}', If_Match=etag)
    assert status == 200 and newer != etag
    assert put(url, b'{"high": 3}', If_Match=etag)[0] == 412  # the etag it was based on is gone
    assert get(url) == b'{"high": 2}'


def test_if_match_on_a_missing_object_fails_and_plain_puts_still_work(s3: str):
    assert put(f"{s3}/missing", b"x", If_Match="*")[0] == 412
    assert put(f"{s3}/plain", b"one")[0] == 200
    assert put(f"{s3}/plain", b"two")[0] == 200
    assert get(f"{s3}/plain") == b"two"


def test_the_launcher_ships_with_the_package():
    assert STRICT_LAUNCHER.exists() and Path(STRICT_LAUNCHER).suffix == ".js"
