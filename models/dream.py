"""DREAM — the item model: dual behaviour / modal lines, S3, behaviour–modal alignment.

Paper: Zhang et al., "DREAM: A Dual Representation Learning Model for
Multimodal Recommendation" (arXiv 2404.11119). Reference code read for facts
(not copied): MMRec ``src/models/mgcn.py`` (filter gates, kNN item graphs,
InfoNCE), ``src/models/freedom.py`` (kNN graph normalisation),
``src/models/lightgcn.py``.

What is here, per the paper:

* **behaviour line** — LightGCN over the normalised user–item graph
  (:class:`models.lightgcn.BehaviourLine`);
* **modal line**, a representation of its own — one encoder per modality
  present in the data (a missing modality is simply absent): a linear
  projection of the raw features (centred, unit rows), a **filter gate**
  ``proj(f_i) * sigmoid(W proj(f_i))`` that denoises the modal features, and
  an **item–item relation graph** (kNN over the raw features) the gated
  vectors propagate over. Nothing of the behaviour line enters it.
  Modalities are fused with learned softmax weights; an item is
  ``normalize(behaviour + modal)``;
* **Similarity Supervised Signal (S3)** — MSE between the cosine-similarity
  matrix of the learned modal item vectors and that of the raw features (raw
  side is a constant), on a random item sample each step;
* **Behaviour–Modal Alignment** — intra (the user as each line alone would
  serve them vs. the target item in that line, InfoNCE) and inter (behaviour
  vs modal view of the same item and of the same user), in-batch negatives.

Deviations, and why (numbers: ml-100k-dev, prequential protocol, cutoff at
80% of events, validation HitRate@20 unless said; docs/evaluation.md):

* **the training objective is the served readout, not BPR with user
  embeddings.** The worker serves ``u = normalize(sum_e r_e v_e)`` over a
  user's watched items (DreamUMM) and no user table at all, and most users
  of a stream were not in training. Trained with BPR and user embeddings,
  DREAM's items served that way lost to item-kNN (issue 19: Recall@20 0.126
  vs 0.173 leave-last-out). Here every step reads users out exactly as
  served and asks the next item to win a full softmax over the catalogue
  (:mod:`models.readout_trainer`); the same item space served that way
  beats undecayed item-kNN and EASE (the table and its intervals: docs/evaluation.md);
* the modal line's filter gate is computed from the modal projection
  itself (a self-gate that denoises the features), not MGCN's gate over the
  behaviour ID embedding, so the line is a second representation and the
  item tower is the modal line alone;
* the kNN graph excludes the item itself, and the modal line keeps the
  item's own vector by averaging layers 0..L of the item-graph propagation
  (LightGCN-style) instead of MGCN's pure propagation;
* the :class:`ItemTower` is not in the paper: it is the modal line without
  its graph (a brand-new video has no neighbours yet), distilled after
  training onto the catalogue's final DREAM item vectors with a cosine loss
  plus DropoutNet's served-readout term (a random 10% of the items stand in
  with the tower's vectors and the served users must still rank their next
  item first): the cosine alone put new items where every user points
  (see :func:`distil_item_tower`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import load_module, save_module
from models.graphs import knn_adjacency, knn_neighbours
from models.lightgcn import BehaviourLine
from models.readout_trainer import ReadoutBatch, readout_loss

MODALITIES = ("text", "visual")


@dataclass(frozen=True)
class DreamConfig:
    dim: int = 64                # D: the shared item space
    # behaviour line (LightGCN) layers: 0, 1, 2 serve alike on ml-100k-dev (valid 0.272, 0.273, 0.270)
    n_layers: int = 1
    n_item_layers: int = 1       # propagation layers over the item–item kNN graph
    knn_k: int = 10              # neighbours per item in the relation graph
    tau: float = 0.1             # temperature of the served readout's softmax over cosine scores
    # BMA and S3 weights: chosen on ml-100k-dev prequential validation (docs/evaluation.md)
    w_s3: float = 0.1            # Similarity Supervised Signal
    w_intra: float = 0.01        # intra-alignment InfoNCE (user<->item inside each line)
    w_inter: float = 0.01        # inter-alignment InfoNCE (behaviour<->modal view of the same node)
    temperature: float = 0.2     # InfoNCE temperature (MGCN uses 0.2)
    s3_items: int = 256          # items sampled per step for the S3 similarity matrices
    cl_batch: int = 512          # rows of the (shuffled) batch the InfoNCE losses use: B^2 logits get costly
    use_modal: bool = True       # False: behaviour line only (plus intra-alignment if on)
    use_s3: bool = True
    use_intra: bool = True
    use_inter: bool = True
    use_filter_gate: bool = True
    use_item_graph: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DreamConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown DreamConfig keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


def standardize(raw: np.ndarray | torch.Tensor, center: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw modal features -> (centred, unit rows [I, Dm], the centre [Dm]).

    Why: raw features come at any scale and with a large common mean
    (sentence embeddings all point roughly the same way), which would make
    the modal line swamp the behaviour line's small ID embeddings and make
    every cosine look alike. Centring then L2-normalising keeps what kNN and
    S3 care about — which items are alike — at a scale comparable to the IDs.
    The item tower applies the same centre to a new video's features.
    """
    x = torch.as_tensor(raw, dtype=torch.float32)
    center = x.mean(dim=0) if center is None else center
    return F.normalize(x - center, dim=1), center


def info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float,
             ids: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row b of view1 should match row b of view2. Shapes [B, D].

    ``ids`` [B] names the node behind each row of view2; another row with the
    same id is the same node, not a negative, and is masked out (a popular
    item appears many times in a batch, and pushing it away from itself
    fights every other loss).
    """
    v1, v2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    logits = v1 @ v2.T / temperature  # [B, B]
    if ids is not None:
        same = (ids[:, None] == ids[None, :]) & ~torch.eye(ids.shape[0], dtype=torch.bool, device=ids.device)
        logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(v1.shape[0], device=v1.device))


def cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    """[B, B] cosine similarities of the rows of x."""
    x = F.normalize(x, dim=1)
    return x @ x.T


class DreamOutput(NamedTuple):
    items: torch.Tensor                    # [I, D] fused item vectors, unit rows: the served space
    behaviour_items: torch.Tensor          # [I, D] behaviour line
    modal_items: torch.Tensor | None       # [I, D] modal line (fused over modalities)
    per_modality: dict[str, torch.Tensor]  # name -> [I, D] learned modal item vectors


class Dream(nn.Module):
    """DREAM over a fixed catalogue and interaction graph, trained through the served readout."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adjacency: torch.Tensor,
        features: dict[str, np.ndarray | torch.Tensor],
        config: DreamConfig = DreamConfig(),
    ):
        """``adjacency`` [U+I, U+I] from :func:`models.graphs.normalized_adjacency`; ``features`` maps a
        modality name to its raw item features [I, Dm] (absent = not given)."""
        super().__init__()
        self.config = config
        self.n_users, self.n_items = n_users, n_items
        self.behaviour = BehaviourLine(n_users, n_items, adjacency, config.dim, config.n_layers)
        self.modalities = [m for m in MODALITIES if m in features and features[m] is not None] if config.use_modal else []
        self.encoders = nn.ModuleDict()
        self.gates = nn.ModuleDict()
        for m in self.modalities:
            raw, center = standardize(features[m])
            if raw.shape[0] != n_items:
                raise ValueError(f"{m} features have {raw.shape[0]} rows, the catalogue has {n_items} items")
            self.register_buffer(f"raw_{m}", raw, persistent=False)
            self.register_buffer(f"center_{m}", center)  # persistent: the item tower needs it
            self.encoders[m] = nn.Linear(raw.shape[1], config.dim)
            self.gates[m] = nn.Linear(config.dim, config.dim)
            if config.use_item_graph:
                self.register_buffer(f"graph_{m}", knn_adjacency(knn_neighbours(raw, config.knn_k), n_items), persistent=False)
        self.modal_mix = nn.Parameter(torch.zeros(max(len(self.modalities), 1)))

    # --- forward ----------------------------------------------------------
    def _modal_items(self, m: str) -> torch.Tensor:
        """One modality's item vectors [I, D]: project, filter-gate (denoise), propagate over the kNN graph.

        The modal line has its own representation: nothing of the behaviour
        line enters it, so the item tower (this line without the graph) embeds
        a video nobody has watched yet.
        """
        x = self.encoders[m](getattr(self, f"raw_{m}"))  # [I, D]
        if self.config.use_filter_gate:
            x = x * torch.sigmoid(self.gates[m](x))
        if self.config.use_item_graph:
            graph = getattr(self, f"graph_{m}")
            layers = [x]
            for _ in range(self.config.n_item_layers):
                layers.append(torch.sparse.mm(graph, layers[-1]))
            x = torch.stack(layers).mean(dim=0)
        return x

    def forward(self) -> DreamOutput:
        """Every item's vectors, per line and fused. Pure: no state changes, no host syncs."""
        _, b_items = self.behaviour()
        per_modality = {m: self._modal_items(m) for m in self.modalities}
        if not per_modality:
            return DreamOutput(F.normalize(b_items, dim=1), b_items, None, {})
        mix = torch.softmax(self.modal_mix, dim=0)
        m_items = sum(mix[k] * per_modality[m] for k, m in enumerate(self.modalities))  # [I, D]
        return DreamOutput(F.normalize(b_items + m_items, dim=1), b_items, m_items, per_modality)

    def items(self) -> torch.Tensor:
        """The served item vectors [I, D], unit rows."""
        return self().items

    # --- losses -----------------------------------------------------------
    def s3_loss(self, per_modality: dict[str, torch.Tensor], sample: torch.Tensor) -> torch.Tensor:
        """Similarity Supervised Signal: learned modal similarities should keep the raw ones."""
        total = torch.zeros((), device=sample.device)
        for m, learned in per_modality.items():
            raw = getattr(self, f"raw_{m}")[sample]
            target = cosine_matrix(raw).detach()  # stop-gradient on the raw side
            total = total + F.mse_loss(cosine_matrix(learned[sample]), target)
        return total

    def loss(self, batch: ReadoutBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its weighted parts for a batch of (history -> next item) examples.

        The main term is the served readout's softmax (:func:`models.readout_trainer.readout_loss`);
        BMA's intra-alignment is the same readout inside each line alone (the
        user as each line would serve them, against the target's vector in that
        line), its inter-alignment pulls the two lines' views of the same item
        and of the same user together; S3 keeps the modal similarities.
        """
        c = self.config
        out = self()
        parts: dict[str, torch.Tensor] = {"readout": readout_loss(batch, out.items, c.tau)}
        pick = torch.randperm(batch.targets.shape[0])[: c.cl_batch]  # a sample of the batch's examples
        tgt = batch.target_items[pick]
        lines = {"behaviour": out.behaviour_items}
        if out.modal_items is not None:
            lines["modal"] = out.modal_items
        users = {name: batch.users(F.normalize(v, dim=1), pick) for name, v in lines.items()}
        if c.use_intra and c.w_intra > 0:
            parts["intra"] = c.w_intra * sum(info_nce(users[k], lines[k][tgt], c.temperature, ids=tgt) for k in lines)
        if out.modal_items is not None:
            if c.use_inter and c.w_inter > 0:
                si = torch.randperm(self.n_items, device=tgt.device)[: c.cl_batch]  # every item, not only popular ones
                parts["inter"] = c.w_inter * (info_nce(out.behaviour_items[si], out.modal_items[si], c.temperature)
                                              + info_nce(users["behaviour"], users["modal"], c.temperature))
            if c.use_s3 and c.w_s3 > 0:
                sample = torch.randint(0, self.n_items, (min(c.s3_items, self.n_items),), device=tgt.device)
                parts["s3"] = c.w_s3 * self.s3_loss(out.per_modality, sample)
        return sum(parts.values()), parts


# --- item tower -------------------------------------------------------------

@dataclass(frozen=True)
class ItemTowerConfig:
    text_dim: int      # Dt of the `text` input (1 when the data has no text: a zero column)
    visual_dim: int    # Dv of the `visual` input (1 when the data has no visual features)
    dim: int = 64
    text: bool = True  # whether the modality exists in the training data
    visual: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


class ItemTower(nn.Module):
    """A brand-new video's features -> a unit vector in DREAM's item space.

    DREAM's modal line without what a new video lacks: no relation graph (no
    neighbours yet) and no behaviour embedding, so the filter gate is computed
    from the projection itself. A modality absent from the training data keeps
    its input (width 1, fed zeros) so the ONNX signature is always
    ``text [B,Dt], visual [B,Dv]``; its encoder then reduces to a learned
    constant, which is what "no information" should map to.
    """

    def __init__(self, config: ItemTowerConfig):
        super().__init__()
        self.config = config
        d = config.dim
        self.encoders = nn.ModuleDict({"text": nn.Linear(config.text_dim, d), "visual": nn.Linear(config.visual_dim, d)})
        self.gates = nn.ModuleDict({m: nn.Linear(d, d) for m in MODALITIES})
        self.modal_mix = nn.Parameter(torch.zeros(len(MODALITIES)))
        self.head = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        # the training catalogue's feature means (see `standardize`), set by `distil_item_tower`
        self.register_buffer("center_text", torch.zeros(config.text_dim))
        self.register_buffer("center_visual", torch.zeros(config.visual_dim))

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """text [B, Dt], visual [B, Dv] -> item [B, D], unit rows."""
        mix = torch.softmax(self.modal_mix, dim=0)
        fused = torch.zeros(text.shape[0], self.config.dim, dtype=text.dtype, device=text.device)
        for k, (m, x) in enumerate(zip(MODALITIES, (text, visual))):
            x = F.normalize(x - getattr(self, f"center_{m}"), dim=1)  # as `standardize`; an all-zero input stays 0
            h = self.encoders[m](x)  # [B, D]
            fused = fused + mix[k] * h * torch.sigmoid(self.gates[m](h))
        return F.normalize(fused + self.head(fused), dim=1)


def tower_inputs(features: dict[str, np.ndarray | None], n_items: int) -> tuple[ItemTowerConfig, torch.Tensor, torch.Tensor]:
    """Tower config and its (text [I,Dt], visual [I,Dv]) inputs, a zero column for an absent modality."""
    arrays = {}
    for m in MODALITIES:
        raw = features.get(m)
        arrays[m] = torch.zeros(n_items, 1) if raw is None else torch.as_tensor(raw, dtype=torch.float32)
    config = ItemTowerConfig(
        text_dim=arrays["text"].shape[1],
        visual_dim=arrays["visual"].shape[1],
        text=features.get("text") is not None,
        visual=features.get("visual") is not None,
    )
    return config, arrays["text"], arrays["visual"]


STAND_IN_SHARE = 0.1  # items replaced by the tower's vectors per step: the share of new items the cold protocol holds


def distil_item_tower(
    features: dict[str, np.ndarray | None],
    targets: torch.Tensor,
    dim: int,
    dream: Dream | None = None,
    steps: int = 400,
    lr: float = 3e-3,
    batch_size: int = 1024,
    holdout: float = 0.1,
    seed: int = 0,
    progress: bool = True,
    served: tuple[torch.Tensor, torch.Tensor] | None = None,
    learn: np.ndarray | None = None,
    stand_in: float = STAND_IN_SHARE,
    tau: float = 0.1,
    served_batch: int = 1024,
) -> tuple[ItemTower, dict[str, float]]:
    """Fit an :class:`ItemTower` so ``tower(features of item i) ~ targets[i]`` (cosine loss).

    ``targets`` are the trained catalogue's final DREAM item vectors [I, D].
    A random ``holdout`` share of items is never trained on: their cosine is
    the honest estimate of how well a *new* video lands in the space. The
    projections start from DREAM's modal encoders when ``dream`` is given.
    Returns the tower (trained on all items after the holdout is measured)
    and ``{"cosine_to_catalogue", "cosine_holdout"}``.

    ``served`` (user vectors and their next items,
    :func:`models.readout_trainer.served_examples`) adds the served-readout
    term, DropoutNet's recipe (Volkovs et al. 2017) in this product's serving
    path: each step a random ``stand_in`` share of the items is replaced by
    the tower's vectors and the users must still rank their next item first
    in the softmax over the catalogue. The cosine alone regresses to the
    mean: its vectors sit where many users point, so on ml-100k-dev
    validation new items took 29% of the top-20 slots for 9.8% of the events
    and cost the other events' HitRate@20 0.049; with this term, 12% and 0.017
    (docs/evaluation.md). ``learn``: the items the tower may learn from
    (default: all; the cold-item protocol passes the warm ones); the others
    are left out of the softmax.
    """
    from tqdm.auto import tqdm

    n_items = targets.shape[0]
    config, text, visual = tower_inputs(features, n_items)
    config = ItemTowerConfig(**{**config.to_dict(), "dim": dim})
    targets = F.normalize(targets.detach().float(), dim=1)
    gen = torch.Generator().manual_seed(seed)
    pool = torch.arange(n_items) if learn is None else torch.as_tensor(np.asarray(learn), dtype=torch.int64)
    order = pool[torch.randperm(len(pool), generator=gen)]
    n_hold = int(len(pool) * holdout) if len(pool) >= 20 else 0
    held, train_idx = order[:n_hold], order[n_hold:]
    outside = torch.ones(n_items, dtype=torch.bool)
    outside[pool] = False

    def fit(idx: torch.Tensor, desc: str) -> ItemTower:
        torch.manual_seed(seed)
        tower = ItemTower(config)
        tower.center_text.copy_(text.mean(dim=0))
        tower.center_visual.copy_(visual.mean(dim=0))
        if dream is not None:
            with torch.no_grad():
                for m in dream.modalities:
                    tower.encoders[m].load_state_dict(dream.encoders[m].state_dict())
        opt = torch.optim.Adam(tower.parameters(), lr=lr)
        learnable = torch.zeros(n_items, dtype=torch.bool)
        learnable[idx] = True
        bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
        for _ in bar:
            batch = idx[torch.randint(0, len(idx), (min(batch_size, len(idx)),), generator=gen)]
            pred = tower(text[batch], visual[batch])
            loss = (1 - (pred * targets[batch]).sum(-1)).mean()
            if served is not None:
                loss = loss + _stand_in_loss(tower, text, visual, targets, served, learnable, outside, stand_in, tau,
                                             served_batch, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        return tower.eval()

    def cosine(tower: ItemTower, idx: torch.Tensor) -> float:
        with torch.no_grad():
            return float((tower(text[idx], visual[idx]) * targets[idx]).sum(-1).mean())

    metrics: dict[str, float] = {}
    if n_hold:
        metrics["cosine_holdout"] = cosine(fit(train_idx, "item tower (holdout)"), held)
    tower = fit(pool, "item tower")
    metrics["cosine_to_catalogue"] = cosine(tower, pool)
    return tower, metrics



def _stand_in_loss(tower: ItemTower, text: torch.Tensor, visual: torch.Tensor, targets: torch.Tensor,
                   served: tuple[torch.Tensor, torch.Tensor], learnable: torch.Tensor, outside: torch.Tensor,
                   share: float, tau: float, batch: int, gen: torch.Generator) -> torch.Tensor:
    """Served users' next-item softmax over the catalogue with a random ``share`` of it embedded by the tower.

    The stand-ins are positives when a user's next item is one of them and
    negatives for every other user: a vector that scores high for everyone
    (the cosine's mean) is penalised exactly as a ranking service would
    expose it. Items outside the learnable pool never enter the softmax.
    """
    users, next_items = served
    stand_ins = torch.nonzero(learnable & (torch.rand(learnable.shape[0], generator=gen) < share)).squeeze(1)
    catalogue = targets.clone()
    catalogue[stand_ins] = tower(text[stand_ins], visual[stand_ins])
    pick = torch.randint(0, users.shape[0], (min(batch, users.shape[0]),), generator=gen)
    logits = (users[pick] @ catalogue.T / tau).masked_fill(outside, float("-inf"))
    return F.cross_entropy(logits, next_items[pick])


def save_item_tower(tower: ItemTower, path: Path) -> None:
    save_module(tower, path)


def load_item_tower(ckpt_dir: str | Path) -> ItemTower:
    """The trained item tower of a checkpoint folder (``item_tower.pt``), in eval mode."""
    return load_module(Path(ckpt_dir) / "item_tower.pt", lambda config: ItemTower(ItemTowerConfig(**config)))


def load_features_json(ckpt_dir: str | Path) -> dict:
    """What the item tower of a checkpoint expects: ``{text_dim, visual_dim, text, visual}``."""
    return json.loads((Path(ckpt_dir) / "features.json").read_text())
