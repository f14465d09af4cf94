"""The width of a namespace's index: from its bundle (or ``DREAMSTREAM_INDEX_DIM``), never from a record.

Why not from the data: ``item-vectors`` is written by anyone who can
produce to it and is compacted, so one stray 2-d record read first would
fix a 1-item, 2-d index that every 64-d search fails against, again after
every restart. The bundle is what the worker embeds users with, so its
``dim`` is the one width a query can have.
"""
from __future__ import annotations

from pathlib import Path

from dreamstream.errors import UserError
from dreamstream.settings import Settings


def bundle_folder(settings: Settings) -> Path | None:
    """The bundle a namespace serves: ``<model dir>/<namespace>`` for a rollout's namespace, else the newest."""
    from dreamstream.bundle import latest_version

    if settings.namespace:
        pinned = Path(settings.model_dir) / settings.namespace
        return pinned if pinned.is_dir() else None
    return latest_version(settings.model_dir)


def index_width(settings: Settings) -> int:
    """``index_dim`` when set, else the ``dim`` of :func:`bundle_folder`'s manifest; UserError when neither exists."""
    from dreamstream.bundle import BundleError, read_manifest

    if settings.index_dim:
        return settings.index_dim
    folder = bundle_folder(settings)
    if folder is None:
        where = Path(settings.model_dir) / settings.namespace if settings.namespace else settings.model_dir
        raise UserError(f"no model bundle at {where} to take the index width from: point --model-dir / "
                        "DREAMSTREAM_MODEL_DIR at the bundles the workers serve, or set --index-dim / DREAMSTREAM_INDEX_DIM")
    try:
        return read_manifest(folder).dim
    except BundleError as err:
        raise UserError(f"cannot take the index width from the bundle: {err}") from None
