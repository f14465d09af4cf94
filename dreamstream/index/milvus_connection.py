"""Reaching Milvus, and the names of a namespace's alias and version collections in it.

One alias per model namespace is that namespace's ``CURRENT``; each index
version is its own collection, ``<alias>_<version>``. Milvus names allow
only ``[A-Za-z0-9_]`` (a letter or ``_`` first), while topic prefixes and
namespaces (bundle versions) may hold dots and dashes: the alias is a
readable slug of both plus a short hash of the exact pair, so two different
pairs never share an alias and one namespace's collections are exactly the
names that start with its alias and ``_v``.
"""
from __future__ import annotations

import calendar
import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamstream.errors import UserError

VERSION_RE = re.compile(r"^v\d{8}T\d{6}\d{6}Z$")  # v20261207T122801123456Z: UTC to the microsecond, sortable
MANIFEST_PROPERTY = "dreamstream.manifest"  # the version's Manifest (JSON), set once the version is complete
PUBLISHED_PROPERTY = "dreamstream.published_at"  # when the alias moved to it (epoch seconds)


class MilvusUnavailable(UserError, RuntimeError):
    """No Milvus at the configured URI, or pymilvus is not installed: the message says which and what to do."""


@dataclass(frozen=True)
class MilvusNames:
    """The alias and version collections of one deployment (its topic prefix) in one Milvus."""

    topic_prefix: str = ""

    def alias(self, namespace: str) -> str:
        key = f"{self.topic_prefix}\n{namespace}"
        slug = re.sub(r"[^A-Za-z0-9]", "_", f"{self.topic_prefix}{namespace}")[:48]
        return f"ds_{slug}_{hashlib.sha1(key.encode('utf-8')).hexdigest()[:10]}"

    def collection(self, namespace: str, version: str) -> str:
        if not VERSION_RE.match(version):
            raise ValueError(f"{version!r} is not a Milvus index version name")
        return f"{self.alias(namespace)}_{version}"

    def version_of(self, namespace: str, collection: str) -> str | None:
        """The version a collection holds when it is one of ``namespace``'s (else None: not ours)."""
        head = self.alias(namespace) + "_"
        rest = collection[len(head):] if collection.startswith(head) else ""
        return rest if VERSION_RE.match(rest) else None


def new_version_name(taken: set[str]) -> str:
    """A sortable, unique version name (UTC time to the microsecond) not in ``taken``."""
    while True:
        now = time.time()
        name = time.strftime("v%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now % 1 * 1e6):06d}Z"
        if name not in taken:
            return name
        time.sleep(1e-3)


def version_time(version: str) -> float:
    """The creation time a version name encodes (epoch seconds)."""
    return calendar.timegm(time.strptime(version[1:16], "%Y%m%dT%H%M%S")) + int(version[16:22]) / 1e6


def connect(uri: str, token_file: Path | None = None, timeout_s: float = 30.0) -> Any:
    """A ``pymilvus.MilvusClient`` for ``uri``, with the credentials in ``token_file`` (user:password or an API key)."""
    if not uri:
        raise MilvusUnavailable("--index-backend milvus needs --milvus-uri (DREAMSTREAM_MILVUS_URI), e.g. http://milvus:19530")
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise MilvusUnavailable("the Milvus backend needs pymilvus: pip install 'dreamstream[milvus]'") from None
    token = ""
    if token_file is not None:
        try:
            token = Path(token_file).read_text("utf-8").strip()
        except OSError as err:
            raise MilvusUnavailable(f"cannot read the Milvus credentials file {token_file}: {err.strerror}") from None
    try:
        return MilvusClient(uri=uri, token=token, timeout=timeout_s)
    except Exception as err:  # pymilvus raises MilvusException or grpc errors; both mean "not reachable as configured"
        raise MilvusUnavailable(f"cannot reach Milvus at {uri} ({getattr(err, 'message', err)}); is it running, and is "
                                "--milvus-uri (DREAMSTREAM_MILVUS_URI) right?") from None


def connect_settings(settings: Any) -> Any:
    """:func:`connect` with the URI and credentials file the settings name."""
    return connect(settings.milvus_uri, settings.milvus_token_file)
