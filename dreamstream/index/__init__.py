"""The index sidecar: sharded Faiss index versions of the item vectors.

One mechanism per module: :mod:`sharding` (item -> shard), :mod:`store`
(latest vector per item), :mod:`recall` (measured recall@k), :mod:`builder`
(one shard, one version), :mod:`manifest` (the version's description and its
checksums), :mod:`publish` (atomic CURRENT swap and pruning), :mod:`follower`
(consumes ``item-vectors``), :mod:`service` (the indexer loop). Readers use
:mod:`dreamstream.client`.
"""
