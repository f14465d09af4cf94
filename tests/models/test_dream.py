"""DREAM, its graphs and its item tower: each loss does its job on small data, trained through the served readout."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.dream import Dream, DreamConfig, ItemTower, cosine_matrix, distil_item_tower, info_nce, \
    load_item_tower, save_item_tower
from models.graphs import knn_adjacency, knn_neighbours, normalized_adjacency, user_mean_matrix
from dreamstream.evaluation.events import EventLog
from models.lightgcn import LightGCN, LightGCNConfig
from models.readout_trainer import NextItemExamples
from models.trainer import BprSampler


def _dream(small, **overrides) -> Dream:
    torch.manual_seed(0)
    return Dream(small.ds.n_users, small.ds.n_items, small.adjacency, small.features, DreamConfig(dim=32, **overrides))


def _examples(small) -> NextItemExamples:
    return NextItemExamples(EventLog.from_dataset(small.ds, rows=small.split.train_rows))


def _steps(model, small, steps: int, lr: float = 0.01, batch: int = 256, loss=None) -> None:
    """``steps`` optimiser steps of ``loss(batch)`` (default: the model's own) over next-item examples."""
    examples = _examples(small)
    rng = np.random.default_rng(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    done = 0
    while done < steps:
        for b in examples.batches(batch, rng):
            value = (loss or (lambda b: model.loss(b)[0]))(b)
            opt.zero_grad()
            value.backward()
            opt.step()
            done += 1
            if done == steps:
                return


def _bpr_steps(model, small, steps: int, lr: float = 0.01, batch: int = 256) -> None:
    sampler = BprSampler(*small.split.train_positive_pairs(), n_items=small.ds.n_items, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    done = 0
    while done < steps:
        for users, pos, neg in sampler.batches(batch):
            loss, _ = model.loss(users, pos, neg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                return




def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


# --- graphs -----------------------------------------------------------------

def test_knn_graph_has_k_neighbours_and_excludes_self():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(57, 8)).astype(np.float32)
    nb = knn_neighbours(feats, k=5, chunk=16)  # several chunks, so the diagonal offset is exercised
    assert nb.shape == (57, 5)
    assert not (nb == torch.arange(57)[:, None]).any()
    assert all(len(set(row.tolist())) == 5 for row in nb)
    x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    expect = np.argsort(-sim, axis=1)[:, :5]
    assert all(set(a) == set(b) for a, b in zip(nb.numpy(), expect))
    adj = knn_adjacency(nb, 57)
    assert adj._nnz() == 57 * 5 and torch.all(adj.coalesce().values() > 0)


def test_knn_with_fewer_items_than_k():
    assert knn_neighbours(np.eye(3, dtype=np.float32), k=10).shape == (3, 2)


def test_normalized_adjacency_is_symmetric_with_degree_weights():
    users, items = np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 2])  # a duplicate edge (1, 1)
    adj = normalized_adjacency(users, items, 2, 3).to_dense()
    assert torch.allclose(adj, adj.T)
    # user 0 has degree 2, item 1 has degree 2 -> 1/sqrt(2*2)
    assert adj[0, 2 + 1].item() == pytest.approx(0.5)
    mean = user_mean_matrix(users, items, 2, 3).to_dense()
    assert torch.allclose(mean.sum(dim=1), torch.ones(2))


# --- losses -------------------------------------------------------------------

def test_s3_keeps_learned_modal_similarities_close_to_raw(small):
    """With S3 the learned modal item similarities track the raw ones clearly better than without."""
    def correlation(use_s3: bool) -> float:
        model = _dream(small, use_s3=use_s3, w_s3=1.0, use_intra=False, use_inter=False)
        _steps(model, small, steps=40)
        with torch.no_grad():
            learned = model().per_modality["text"]
        return _pearson(cosine_matrix(learned), cosine_matrix(model.raw_text))

    with_s3, without = correlation(True), correlation(False)
    assert with_s3 > without + 0.15, (with_s3, without)
    assert with_s3 > 0.4


def test_inter_alignment_pulls_behaviour_and_modal_views_together(small):
    """Items: the behaviour ID embedding starts random, the modal vector comes from the features alone."""
    model = _dream(small, w_inter=1.0, use_s3=False, use_intra=False)

    def agreement() -> float:
        with torch.no_grad():
            out = model()
            return float(torch.nn.functional.cosine_similarity(out.behaviour_items, out.modal_items).mean())

    before = agreement()
    _steps(model, small, steps=30, loss=lambda b: model.loss(b)[1]["inter"])
    assert agreement() > before + 0.2


def test_the_served_readout_ranks_held_out_next_items_above_chance(small):
    """Trained through the readout, the user vector (normalised sum of watched items) finds their next items."""
    from dreamstream.evaluation.baselines import Popularity
    from dreamstream.evaluation.prequential import evaluate_queries
    from dreamstream.evaluation.protocols import leave_last_out
    from dreamstream.evaluation.scorers import DreamUMMScorer

    model = _dream(small, use_s3=False, use_intra=False, use_inter=False)
    protocol = leave_last_out(small.ds, np.ones(small.ds.n_interactions, np.float32))

    def hitrate() -> float:
        with torch.no_grad():
            items = model.items().numpy()
        return evaluate_queries(protocol.valid, DreamUMMScorer(items, Popularity.fit(protocol.fit_log))).metrics()["hitrate@50"]

    before = hitrate()
    _steps(model, small, steps=60)
    assert hitrate() > before + 0.05


def test_info_nce_masks_repeated_nodes():
    v = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    twice = torch.cat([v[:2], v[:2]])  # rows 0/2 and 1/3 are the same node
    ids = torch.tensor([7, 8, 7, 8])
    assert info_nce(twice, twice, 0.2, ids=ids) < info_nce(twice, twice, 0.2)


def test_bpr_ranks_a_trained_positive_above_negatives(small):
    torch.manual_seed(0)
    model = LightGCN(small.ds.n_users, small.ds.n_items, small.adjacency, LightGCNConfig(dim=32))
    _bpr_steps(model, small, steps=60)
    users, pos = small.split.train_positive_pairs()
    with torch.no_grad():
        u, i = model.embeddings()
    scores = u[torch.from_numpy(users)] @ i.T  # [P, I]
    pos_score = scores[torch.arange(len(pos)), torch.from_numpy(pos)]
    auc = (scores < pos_score[:, None]).float().mean()
    assert auc > 0.85


def test_ablation_switches_remove_loss_parts(small):
    batch = next(_examples(small).batches(8, np.random.default_rng(0)))
    _, parts = _dream(small).loss(batch)
    assert set(parts) == {"readout", "s3", "intra", "inter"}
    _, parts = _dream(small, use_s3=False, use_inter=False).loss(batch)
    assert set(parts) == {"readout", "intra"}
    _, parts = _dream(small, use_modal=False, use_intra=False).loss(batch)
    assert set(parts) == {"readout"}
    assert _dream(small, use_modal=False).modalities == []


def test_the_modal_line_does_not_read_the_behaviour_line(small):
    """The modal line has its own representation: changing the ID embeddings leaves it untouched."""
    model = _dream(small)
    with torch.no_grad():
        before = model().modal_items.clone()
        model.behaviour.item_emb.weight.add_(1.0)
        assert torch.equal(model().modal_items, before)


def test_missing_modality_is_absent(small):
    model = Dream(small.ds.n_users, small.ds.n_items, small.adjacency,
                  {"text": small.ds.text_feat, "visual": None}, DreamConfig(dim=16))
    assert model.modalities == ["text"]
    assert set(model().per_modality) == {"text"}


def test_batch_of_one_and_pure_forward(small):
    model = _dream(small)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = next(_examples(small).batches(1, np.random.default_rng(0)))
    total, parts = model.loss(batch)
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in parts.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        a, b = model(), model()
    assert torch.equal(a.items, b.items)
    assert torch.allclose(a.items.norm(dim=1), torch.ones(small.ds.n_items))


# --- item tower -------------------------------------------------------------

def test_item_tower_distils_onto_catalogue_and_round_trips(small, tmp_path):
    """Targets that are a (nonlinear) function of the features: the tower must learn to hit them."""
    model = _dream(small)
    gen = torch.Generator().manual_seed(0)
    text = torch.from_numpy(small.ds.text_feat)
    items = torch.nn.functional.normalize(torch.tanh((text - text.mean(0)) @ torch.randn(24, 32, generator=gen)), dim=1)
    tower, metrics = distil_item_tower(small.features, items, 32, dream=model, steps=150, progress=False)
    assert metrics["cosine_to_catalogue"] > 0.85
    assert -1 <= metrics["cosine_holdout"] <= 1
    save_item_tower(tower, tmp_path / "item_tower.pt")
    loaded = load_item_tower(tmp_path)
    text = torch.from_numpy(small.ds.text_feat[:1])
    visual = torch.from_numpy(small.ds.image_feat[:1])
    out = loaded(text, visual)  # batch of one
    assert out.shape == (1, 32)
    assert torch.allclose(out, tower(text, visual)) and out.norm().item() == pytest.approx(1.0, abs=1e-5)


def test_item_tower_without_visual_has_a_one_column_input(small):
    items = torch.nn.functional.normalize(torch.randn(small.ds.n_items, 16), dim=1)
    tower, _ = distil_item_tower({"text": small.ds.text_feat, "visual": None}, items, 16, steps=5, progress=False)
    assert isinstance(tower, ItemTower)
    assert tower.config.visual_dim == 1 and not tower.config.visual and tower.config.text
    out = tower(torch.from_numpy(small.ds.text_feat[:3]), torch.zeros(3, 1))
    assert out.shape == (3, 16)


def test_load_item_tower_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="dreamstream train"):
        load_item_tower(tmp_path)


def test_item_tower_with_served_users_learns_only_from_the_given_items(small):
    """The cold-item protocol's tower: items outside ``learn`` (new videos) never shape it, however wrong their vectors."""
    from dreamstream.evaluation.events import EventLog
    from models.readout_trainer import served_examples

    ds = small.ds
    log = EventLog.from_dataset(ds, np.ones(ds.n_interactions, np.float32))
    new = np.arange(0, ds.n_items, 10)
    warm = np.setdiff1d(np.arange(ds.n_items), new)
    keep = ~np.isin(log.item, new)
    log = EventLog(log.user[keep], log.item[keep], log.weight[keep], log.ts[keep], log.n_users, log.n_items)
    gen = torch.Generator().manual_seed(0)
    items = torch.nn.functional.normalize(torch.randn(ds.n_items, 16, generator=gen), dim=1)
    towers = []
    for garbage in (0.0, 5.0):
        targets = items.clone()
        targets[new] += garbage * torch.randn(len(new), 16, generator=gen)
        served = served_examples(log, targets.numpy(), 3600.0)
        tower, metrics = distil_item_tower(small.features, targets, 16, steps=30, seed=1, progress=False,
                                           served=served, learn=warm, holdout=0.0)
        towers.append(tower)
    text, visual = torch.from_numpy(ds.text_feat), torch.from_numpy(ds.image_feat)
    with torch.no_grad():
        torch.testing.assert_close(towers[0](text, visual), towers[1](text, visual))
    assert metrics["cosine_to_catalogue"] > 0.0
