"""Publishing a namespace's items through either index backend, for the tests of tests/index."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dreamstream.index.builder import BuildParams, build_version
from dreamstream.index.manifest import Manifest
from dreamstream.index.publish import install
from dreamstream.index.store import ItemStore


class SpacePublisher:
    """Publish a namespace's items as a new current version through one backend, and read versions back."""

    def __init__(self, kind: str, index_dir: Path, milvus_uri: str | None = None, names=None) -> None:
        self.kind, self.index_dir, self.names = kind, index_dir, names
        self.client = None
        if kind == "milvus":
            from dreamstream.index.milvus_connection import connect

            self.client = connect(milvus_uri)

    def backend(self):
        from dreamstream.index.backend import FaissBackend
        from dreamstream.index.milvus_version import MilvusBackend

        return FaissBackend(self.index_dir) if self.kind == "faiss" else MilvusBackend(self.client, self.names)

    def publish(self, namespace: str, ids: list[str], vectors: np.ndarray, params: BuildParams | None = None,
                space: str | None = None) -> Manifest:
        """``space``: the namespace written into the manifest (another one to test refusal)."""
        store = ItemStore(shards=2)
        store.put_many(ids, vectors)
        params, space = params or BuildParams(), namespace if space is None else space
        if self.kind == "faiss":
            folder = self.index_dir / namespace if namespace else self.index_dir
            built = build_version(store, folder, params, space=space)
            install(built, folder)
            return built.manifest
        from dreamstream.index.milvus_publish import build_collection, publish_collection

        built = build_collection(self.client, self.names, store, params, space)
        if space != namespace:  # a mislabelled version: the alias of `namespace` pointed at a collection of `space`
            from dreamstream.index.milvus_connection import MANIFEST_PROPERTY
            from dreamstream.index.milvus_publish import current_collection

            self.client.alter_collection_properties(built.collection, properties={
                MANIFEST_PROPERTY: json.dumps(built.manifest.to_json())})
            alias = self.names.alias(namespace)
            (self.client.alter_alias if current_collection(self.client, alias) else self.client.create_alias)(built.collection, alias)
            return built.manifest
        published, reason = publish_collection(self.client, self.names, built, params.recall_floor)
        assert published, reason
        return built.manifest
