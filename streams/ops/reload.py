"""The bundle the worker serves, and the watcher that switches to a newer one between batches.

Why a holder: agents read ``holder.bundle`` once at the start of a batch and
use that object to the end of it, so a switch can only land between two
batches - no event is applied half with one model and half with another,
none is lost or doubled. Loading (checksums, ONNX sessions) runs in a
thread so the event loop keeps consuming; a bundle that fails verification
is refused with a log line and the old one keeps serving.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


class BundleHolder:
    """The current bundle plus the versions already refused (not retried until their files change)."""

    def __init__(self, model_dir: Path, on_switch: Callable[[Any], None] | None = None, namespace: str = "") -> None:
        self.model_dir = Path(model_dir)
        self.namespace = namespace  # a rollout's namespace starts with the bundle of that name, not the newest
        self.bundle: Any = None
        self.refused: dict[str, tuple] = {}  # version -> its folder's fingerprint when refused (checksums.folder_fingerprint)
        self.on_switch = on_switch

    def load_latest(self) -> Any:
        """Blocking: load the newest valid version (used at start-up, before any event)."""
        from dreamstream import bundle as bundles
        from dreamstream.bundle import BundleError

        pinned = self.model_dir / self.namespace if self.namespace else None
        if pinned is not None and pinned.is_dir():
            self.bundle = bundles.load_bundle(pinned)
            log.info("serving model bundle version=%s (namespace %s)", self.bundle.version, self.namespace)
        self._maybe_switch()
        if self.bundle is None:
            raise BundleError(
                f"no valid model bundle in {self.model_dir}; run `dreamstream export` (or point "
                "--model-dir / DREAMSTREAM_MODEL_DIR at a folder of bundles)"
            )
        return self.bundle

    async def poll(self) -> None:
        """Check for a newer version without blocking the loop."""
        await asyncio.get_running_loop().run_in_executor(None, self._maybe_switch)

    def _maybe_switch(self) -> None:
        from dreamstream import bundle as bundles
        from dreamstream.checksums import folder_fingerprint

        path = bundles.latest_version(self.model_dir)
        current = getattr(self.bundle, "version", None)
        serving = self.bundle.root.name if self.bundle is not None else None
        if path is None or path.name == serving:
            return
        version = path.name
        seen = folder_fingerprint(path)  # taken before loading: a copy finishing while we load is seen next time
        if self.refused.get(version) == seen:
            return  # refused, and not one file changed since: loading it again would fail again
        try:
            new = bundles.load_bundle(path)  # checksums and ONNX signatures verified
            if self.bundle is not None:
                _same_shapes(self.bundle, new)
                _same_item_space(self.bundle, new)
        except Exception as err:  # a bad bundle must never stop the worker
            self.refused[version] = seen
            log.error("refusing model bundle version=%s path=%s reason=%r; still serving version=%s",
                      version, path, str(err), current)
            return
        self.bundle = new  # a single reference swap: agents see it at their next batch
        log.info("serving model bundle version=%s previous=%s", version, current)
        if self.on_switch:
            self.on_switch(new)


def _same_shapes(old: Any, new: Any) -> None:
    """User states carry the old bundle's D, K, H: a new bundle must keep them."""
    for name in ("dim", "interests", "hidden"):
        if getattr(old.manifest, name) != getattr(new.manifest, name):
            raise ValueError(f"{name} changed from {getattr(old.manifest, name)} to {getattr(new.manifest, name)}; "
                             "user states cannot be carried over - start a fresh worker group for it")


def _same_item_space(old: Any, new: Any) -> None:
    """User states are sums of the old bundle's item vectors: only a bundle with the same item vectors may follow."""
    if old.manifest.item_space != new.manifest.item_space:
        raise ValueError(f"bundle {new.version} has a new item space (its item vectors differ from {old.version}'s); "
                         f"a live worker cannot carry user states into it. Roll it out instead: "
                         f"`dreamstream rollout start {new.version}` (docs/production.md)")
