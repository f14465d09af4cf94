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

from dreamstream.index.manifest import IndexCorruptError
from dreamstream.index.publish import replace_atomically

SERVING = "SERVING"


@dataclass(frozen=True)
class Serving:
    namespace: str = ""
    previous: str | None = None
    since: float = 0.0

    def spaces(self) -> list[str]:
        """The namespaces a reader keeps loaded: the serving one, then the previous one."""
        return [self.namespace] + ([self.previous] if self.previous is not None and self.previous != self.namespace else [])


def namespace_dir(index_dir: Path, namespace: str) -> Path:
    """A namespace's index folder (the index dir itself for the default namespace)."""
    if namespace and (namespace != Path(namespace).name or namespace in (".", "..")):
        raise IndexCorruptError(f"namespace {namespace!r:.80} is not a folder name")
    return Path(index_dir) / namespace if namespace else Path(index_dir)


def read_serving(index_dir: Path) -> Serving:
    """The pointer (the default namespace when there is none); ``IndexCorruptError`` when it is unreadable."""
    path = Path(index_dir) / SERVING
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return Serving()
    except ValueError as err:
        raise IndexCorruptError(f"{path} is not valid JSON ({err}); rewrite it with `dreamstream rollout switch`") from None
    serving = Serving(str(data.get("namespace", "")), data.get("previous"), float(data.get("since", 0.0)))
    for namespace in serving.spaces():
        namespace_dir(index_dir, namespace)  # a hostile name never leaves the index dir
    return serving


def switch_serving(index_dir: Path, namespace: str) -> Serving:
    """Point readers at ``namespace``; the one serving now becomes ``previous`` (for rollback). Atomic."""
    old = read_serving(index_dir)
    namespace_dir(index_dir, namespace)
    new = Serving(namespace, old.namespace if old.namespace != namespace else old.previous, time.time())
    Path(index_dir).mkdir(parents=True, exist_ok=True)
    replace_atomically(Path(index_dir) / SERVING, json.dumps(new.__dict__).encode("utf-8"))
    return new
