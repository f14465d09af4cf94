"""The SERVING pointer: which model namespace readers use, switched atomically by ``dreamstream rollout``.

One small JSON file at the root of the index dir, beside the default
namespace's ``CURRENT``: ``{"namespace": ..., "previous": ..., "since": ...}``.
The client (:class:`dreamstream.client.Retriever`) and ranking services
follow it the way they follow ``CURRENT``: user embeddings
(``user-embeddings.<namespace>``), item vectors and the index all switch
together, because all three are named by the namespace. ``previous`` stays
loaded so records read just before a switch are still searched in their own
space, and is where ``rollback`` returns. No file: the default namespace
(``""``), the layout of a deployment that never rolled out.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from dreamstream.index.atomic_file import locked, replace_atomically
from dreamstream.index.layout import SERVING, InvalidNamespace, check_namespace
from dreamstream.index.shared_file import IndexCorruptError, field_of, read_json, want

FIX = "rewrite it with `dreamstream rollout switch`"


@dataclass(frozen=True)
class Serving:
    namespace: str = ""
    previous: str | None = None
    since: float = 0.0

    def spaces(self) -> list[str]:
        """The namespaces a reader keeps loaded: the serving one, then the previous one."""
        return [self.namespace] + ([self.previous] if self.previous is not None and self.previous != self.namespace else [])


def namespace_dir(index_dir: Path, namespace: str) -> Path:
    """A namespace's index folder (the index dir itself for the default namespace); refuses names that are not namespaces."""
    check_namespace(namespace)
    return Path(index_dir) / namespace if namespace else Path(index_dir)


def parse_serving(data: object, where: str) -> Serving:
    """The pointer from ``SERVING``'s JSON value; :class:`IndexCorruptError` for any other shape or a name no namespace has."""
    want(data, dict, where)
    namespace = field_of(data, "namespace", str, where, "")
    previous = field_of(data, "previous", (str, type(None)), where, None)
    since = float(field_of(data, "since", (int, float), where, 0.0))
    for name in (namespace, previous):
        try:
            if name is not None:
                check_namespace(name)
        except InvalidNamespace as err:
            raise IndexCorruptError(f"{where}: {err}") from None
    return Serving(namespace, previous, since)


def read_serving(index_dir: Path) -> Serving:
    """The pointer (the default namespace when there is none); ``IndexCorruptError`` when it is unreadable."""
    path = Path(index_dir) / SERVING
    try:
        data = read_json(path)
        return Serving() if data is None else parse_serving(data, str(path))
    except IndexCorruptError as err:
        raise IndexCorruptError(f"{err}; {FIX}") from None


def switch_serving(index_dir: Path, namespace: str) -> Serving:
    """Point readers at ``namespace``; the one serving now becomes ``previous`` (for rollback). Atomic.

    The read of the old pointer and the write of the new one hold the
    pointer's lock, so two concurrent switches never lose one (the second
    sees the first as its ``previous``). An unreadable pointer is replaced:
    the switch is how an operator repairs it (its ``previous`` is then lost).
    """
    namespace_dir(index_dir, namespace)
    Path(index_dir).mkdir(parents=True, exist_ok=True)
    path = Path(index_dir) / SERVING
    with locked(path):
        try:
            old = read_serving(index_dir)
        except IndexCorruptError:
            old = Serving()
        new = Serving(namespace, old.namespace if old.namespace != namespace else old.previous, time.time())
        replace_atomically(path, json.dumps(new.__dict__).encode("utf-8"))
    return new
