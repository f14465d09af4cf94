"""The index sidecar: sharded Faiss index versions of the item vectors.

One mechanism per module: :mod:`sharding` (item -> shard), :mod:`store`
(latest vector per item), :mod:`recall` (measured recall@k), :mod:`builder`
(one shard, one version), :mod:`manifest` (the version's description and its
checksums), :mod:`publish` (atomic CURRENT swap and pruning), :mod:`follower`
(consumes ``item-vectors``), :mod:`service` (the indexer loop). The index
dir's rules, shared with every reader: :mod:`layout` (its names and the
namespace check), :mod:`shared_file` (reading a shared file: any failure is
``IndexCorruptError``), :mod:`atomic_file` (whole-file writes and locks),
:mod:`refusals` (a refused version is retried when it changes on disk).
Readers use :mod:`dreamstream.client`.
"""
