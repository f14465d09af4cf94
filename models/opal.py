"""OPAL: orthogonal hyper-category guided multi-interest elicitation (arXiv 2407.14741, Li et al., 2024).

Reference code: github.com/libeibei95/OPAL (``model_devcl.py``, class ``DevCL``).

A user's history is split among K interests by K orthogonal hyper-category
embeddings ``C`` that live in the frozen DREAM item space. Per watched item
``v``: ``p = softmax(C v / tau)`` (soft assignment), ``k = argmax p`` (hard
assignment), one GRU cell shared by every interest steps only ``h[k]``, a
global GRU state steps on every item, ``soft <- decay*soft + p (x) v``.
Readout (``DESIGN.md``, "Update math")::

    seq_k      = normalize(MLP(h[k]))                         (C_k if h[k] has never stepped)
    interest_k = normalize(0.5*normalize(soft[k]) + 0.5*seq_k)  (C_k if soft[k] is empty)
    weights    = softmax(interests . normalize(MLP(g_h)) / tau)

Written so that the streaming update is *the* model: :meth:`Opal.step` is the
function exported to ONNX, and the training forward unrolls it over a
sequence, so what the worker computes is what was trained.

Where this deviates from the paper / reference code, and why:

* Item embeddings are not learned: OPAL is trained on frozen DREAM item
  vectors, so every interest lives in the one item space the index serves.
  Only ``C``, the GRU and the MLP are trained.
* ``C`` is renormalised functionally in every forward (the reference code
  overwrites the weights in place under ``no_grad``), and it really starts
  orthogonal (the reference init looks the parameter up by a name that never
  matches, so it is uniform-random).
* The sequence is processed event by event with a GRU *cell* (the reference
  packs each interest's sub-sequence and runs ``nn.GRU``): same maths, but a
  per-event state is what streaming needs. The global GRU shares the cell
  and MLP with the interests, as in the reference code.
* The MLP maps ``H -> D`` with a tanh hidden layer instead of ``Linear+ReLU``
  (a ReLU output lies in the positive orthant and can be all-zero, which has
  no direction to normalise).
* "Seen" is read from the state itself: an interest whose hidden row is all
  zeros has never been stepped (states start at zero), so no bookkeeping
  input is needed in the ONNX signature.
* Future-item loss: every item in the next ``window`` events is a positive
  (the paper's future-item prediction); each is scored by the best interest
  (``max_k``, as the reference's CE branch) in a full softmax over the frozen
  catalogue, on ``positions`` random cut points per sequence.

Training (:func:`fit_opal`, source-agnostic: per-user item sequences in time
order and a validation callback) follows the authors' ``run.py``: soft
pre-training until the validation score stops improving (``patience``),
the best soft weights restored, then hard fine-tuning from them, early
stopped the same way, the best hard weights restored. :func:`train_opal`
is the leave-last-out wrapper ``dreamstream train`` calls. Inference over
whole histories (:meth:`Opal.states_after`) unrolls each sequence once and
reads any of its prefixes, which is how the prequential scorers
(:mod:`dreamstream.evaluation.opal_scorers`) replay what the worker streamed.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import load_module, save_module
from models.early_stopping import EarlyStopping, train_step


@dataclass(frozen=True)
class OpalConfig:
    dim: int = 64              # D: the DREAM item space
    # K hyper-categories: on ml-100k-dev prequential validation the served merge scores 0.376 with 2, 0.363 with 4
    interests: int = 2
    hidden: int = 64           # H: GRU state width
    tau: float = 0.1           # temperature of assignment and interest weights (reference: temp 0.1)
    w_orth: float = 10.0       # orthogonality loss weight (reference w_orth)
    w_uniform: float = 1.0     # uniformity loss weight (reference w_uniform)
    w_unique: float = 1.0      # unique (sharpness) loss weight (reference w_sharp)
    window: int = 5            # future items that count as positives of a cut point
    max_len: int = 100         # training sequences are windows of at most this many events (served: whole histories)
    positions: int = 8         # cut points scored per training sequence
    lr: float = 1e-2           # ML-100k validation: converges in about half the epochs of 3e-3, no worse
    batch_size: int = 256
    soft_epochs: int = 20      # most epochs of stage 1 (soft pre-training); early stopping ends it sooner
    hard_epochs: int = 20      # most epochs of stage 2 (hard fine-tuning from the best soft weights)
    patience: int = 3          # epochs without a better validation score before a stage stops
    epoch_passes: int = 1      # random windows drawn per trainable sequence in one epoch

    def to_dict(self) -> dict:
        return asdict(self)


class OpalState(NamedTuple):
    hidden: torch.Tensor   # [B, K, H] per-interest GRU states
    glob: torch.Tensor     # [B, H] global GRU state
    soft: torch.Tensor     # [B, K, D] decayed soft interest sums


class OpalStep(NamedTuple):
    """The seven outputs of ``opal_step.onnx``, in the contract's order."""

    hidden_out: torch.Tensor  # [B, K, H]
    global_out: torch.Tensor  # [B, H]
    soft_out: torch.Tensor    # [B, K, D]
    interests: torch.Tensor   # [B, K, D] unit rows
    weights: torch.Tensor     # [B, K] sum to 1
    assign: torch.Tensor      # [B] int64
    probs: torch.Tensor       # [B, K] sum to 1


class Opal(nn.Module):
    def __init__(self, config: OpalConfig):
        super().__init__()
        self.config = config
        d, k, h = config.dim, config.interests, config.hidden
        self.hyper = nn.Parameter(torch.empty(k, d))           # C [K, D]
        self.cell = nn.GRUCell(d, h, bias=False)               # shared by all interests and the global state
        self.mlp = nn.Sequential(nn.Linear(h, d), nn.Tanh(), nn.Linear(d, d))
        # readout used when none is asked for (``step`` and every scorer): hard, the streamed model, except
        # while :func:`fit_opal` validates its soft pre-training stage. Not a weight: never saved.
        self.readout_hard = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.hyper)  # unit, mutually orthogonal rows when K <= D
        std = 1.0 / math.sqrt(self.config.hidden)
        for p in self.cell.parameters():
            nn.init.uniform_(p, -std, std)

    # --- pieces -------------------------------------------------------------
    def categories(self) -> torch.Tensor:
        """C with unit rows [K, D], renormalised functionally (never in place)."""
        return F.normalize(self.hyper, dim=1)

    def scores(self, item: torch.Tensor) -> torch.Tensor:
        """Assignment logits ``C v / tau``: item [..., D] -> [..., K]."""
        return item @ self.categories().T / self.config.tau

    def empty_state(self, batch: int) -> OpalState:
        c = self.config
        z = self.hyper.new_zeros
        return OpalState(z(batch, c.interests, c.hidden), z(batch, c.hidden), z(batch, c.interests, c.dim))

    def readout(self, hidden: torch.Tensor, glob: torch.Tensor, soft: torch.Tensor, hard: bool | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(interests [B,K,D] unit rows, weights [B,K]) from a state; ``hard=False`` = soft pre-training readout.

        ``hard=None`` means ``self.readout_hard`` (True outside :func:`fit_opal`'s soft stage).
        """
        hard = self.readout_hard if hard is None else hard
        cats = self.categories().unsqueeze(0)                                  # [1, K, D]
        soft_seen = soft.pow(2).sum(dim=2, keepdim=True) > 0                   # [B, K, 1]
        soft_part = torch.where(soft_seen, F.normalize(soft, dim=2), cats)      # [B, K, D]
        if hard:
            seq_seen = hidden.abs().sum(dim=2, keepdim=True) > 0               # [B, K, 1]
            seq_part = torch.where(seq_seen, F.normalize(self.mlp(hidden), dim=2), cats)
            interests = F.normalize(0.5 * soft_part + 0.5 * seq_part, dim=2)
        else:
            interests = soft_part
        user = F.normalize(self.mlp(glob), dim=1).unsqueeze(2)                 # [B, D, 1]
        weights = torch.softmax(torch.bmm(interests, user).squeeze(2) / self.config.tau, dim=1)  # [B, K]
        return interests, weights

    def assignment(self, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, probs, assign) of items [..., D]: depends on the item only, so a sequence does it at once."""
        logits = self.scores(item)                                             # [..., K]
        probs = torch.softmax(logits, dim=-1)
        return logits, probs, torch.argmax(probs, dim=-1)                      # assign [...] int64

    def advance(self, item: torch.Tensor, state: OpalState, decay: torch.Tensor, probs: torch.Tensor,
                assign: torch.Tensor) -> OpalState:
        """One event: the new state. item [B,D], decay [B,1], probs [B,K], assign [B]."""
        hidden, glob, soft = state
        b = item.shape[0]
        onehot = torch.arange(self.config.interests, device=item.device).unsqueeze(0) == assign.unsqueeze(1)  # [B, K]
        mine = (hidden * onehot.unsqueeze(2).to(hidden.dtype)).sum(dim=1)      # [B, H] = h[k]
        # one cell call for the assigned interest's state and the global state (same weights)
        stepped = self.cell(torch.cat([item, item], dim=0), torch.cat([mine, glob], dim=0))  # [2B, H]
        hidden_out = torch.where(onehot.unsqueeze(2), stepped[:b].unsqueeze(1), hidden)  # only row k changes
        soft_out = decay.unsqueeze(2) * soft + probs.unsqueeze(2) * item.unsqueeze(1)  # [B, K, D]
        return OpalState(hidden_out, stepped[b:], soft_out)

    # --- the streaming function (exported) ----------------------------------
    def step(self, item: torch.Tensor, hidden: torch.Tensor, glob: torch.Tensor, soft: torch.Tensor,
             decay: torch.Tensor) -> OpalStep:
        """The ONNX function: one event per row. Pure, explicit dims, batch 1 works."""
        _, probs, assign = self.assignment(item)
        state = self.advance(item, OpalState(hidden, glob, soft), decay, probs, assign)
        interests, weights = self.readout(*state)
        return OpalStep(state.hidden, state.glob, state.soft, interests, weights, assign, probs)

    forward = step

    # --- the training function ----------------------------------------------
    def sequence(self, items: torch.Tensor, mask: torch.Tensor, decay: torch.Tensor | None = None,
                 state: OpalState | None = None) -> dict:
        """Unroll :meth:`advance` over items [B,T,D] (mask [B,T] bool: real event; decay [B,T]).

        A masked position leaves the state unchanged. Returns ``states``: the
        state after each position (an :class:`OpalState` of [B,T,...]
        tensors), ``state``: the final one, and the per-position ``logits``,
        ``probs`` [B,T,K] and ``assign`` [B,T]. Read interests out of any
        state with :meth:`readout`; at position t that equals :meth:`step`
        applied event by event.
        """
        b, t, _ = items.shape
        state = state if state is not None else self.empty_state(b)
        decay = decay if decay is not None else items.new_ones(b, t)
        logits, probs, assign = self.assignment(items)                          # [B,T,K], [B,T,K], [B,T]
        states: list[OpalState] = []
        for i in range(t):
            new = self.advance(items[:, i], state, decay[:, i:i + 1], probs[:, i], assign[:, i])
            keep = mask[:, i]
            state = OpalState(*(torch.where(keep.view(-1, *([1] * (n.dim() - 1))), n, o) for n, o in zip(new, state)))
            states.append(state)
        stacked = OpalState(*(torch.stack(parts, dim=1) for parts in zip(*states))) if states else None
        return {"states": stacked, "state": state, "logits": logits, "probs": probs, "assign": assign}

    def readout_at(self, states: OpalState, positions: torch.Tensor, hard: bool | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Readout of the states [B,T,...] at positions [B,P] -> (interests [B,P,K,D], weights [B,P,K])."""
        b, p = positions.shape
        picked = [s.gather(1, positions.view(b, p, *([1] * (s.dim() - 2))).expand(b, p, *s.shape[2:]))
                  .reshape(b * p, *s.shape[2:]) for s in states]
        interests, weights = self.readout(*picked, hard=hard)
        return interests.view(b, p, *interests.shape[1:]), weights.view(b, p, -1)

    @torch.no_grad()
    def states_after(self, items: torch.Tensor, lengths: torch.Tensor, reads: torch.Tensor, at: torch.Tensor,
                     decay: torch.Tensor | None = None) -> OpalState:
        """Inference: the streamed state of sequence ``reads[q]`` after its first ``at[q]`` events, per query q.

        items [S,T,D] left-aligned sequences with ``lengths`` [S] real events;
        reads [Q] sequence of each query, at [Q] its prefix length (0 = the
        empty state). Each sequence is unrolled once however many of its
        prefixes are read (the queries of one user share their history), and
        a step only advances the sequences still running, so the cost is the
        number of real events, not S x T. Same :meth:`advance` as :meth:`step`.
        ``decay`` [S,T]: the decay applied before each event (default 1: none).
        """
        s, t, _ = items.shape
        order = torch.argsort(lengths, descending=True, stable=True)         # running sequences form a prefix
        rank = torch.empty_like(order)
        rank[order] = torch.arange(s)
        items, lengths = items[order], lengths[order]
        decay = items.new_ones(s, t) if decay is None else decay[order].to(items.dtype)
        _, probs, assign = self.assignment(items)                             # [S,T,K], [S,T]
        hidden, glob, soft = self.empty_state(s)
        out = self.empty_state(len(reads))
        slot = rank[reads]                                                    # row of each query's sequence
        by_length = torch.argsort(at, stable=True)
        bounds = torch.searchsorted(at[by_length], torch.arange(t + 2))       # queries reading after i events
        steps = int(lengths.max()) if s else 0
        for i in range(steps):
            a = int((lengths > i).sum())
            new = self.advance(items[:a, i], OpalState(hidden[:a], glob[:a], soft[:a]), decay[:a, i:i + 1],
                               probs[:a, i], assign[:a, i])
            hidden[:a], glob[:a], soft[:a] = new
            q = by_length[bounds[i + 1]:bounds[i + 2]]
            if q.numel():
                out.hidden[q], out.glob[q], out.soft[q] = hidden[slot[q]], glob[slot[q]], soft[slot[q]]
        return out

    # --- losses ---------------------------------------------------------------
    def orthogonality_loss(self) -> torch.Tensor:
        """``|C C^T - I|^2 / K^2``."""
        c = self.categories()
        k = c.shape[0]
        return (c @ c.T - torch.eye(k, device=c.device)).pow(2).sum() / (k * k)

    @staticmethod
    def uniformity_loss(probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """std / mean of the assignment mass per interest over all real events: probs [B,T,K], mask [B,T]."""
        mass = (probs * mask.unsqueeze(2)).sum(dim=(0, 1)) / mask.sum().clamp(min=1)  # [K]
        return mass.std() / mass.mean()

    @staticmethod
    def unique_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the assignment logits against their own argmax: sharpens assignments."""
        flat = logits[mask]                                                     # [N, K]
        return F.cross_entropy(flat, flat.argmax(dim=1))

    def future_loss(self, interests: torch.Tensor, catalogue: torch.Tensor, targets: torch.Tensor,
                    target_mask: torch.Tensor) -> torch.Tensor:
        """Future-item prediction: interests [B,P,K,D]; targets [B,P,W] item indexes; target_mask [B,P,W].

        Each future item is a positive; its score is the best interest's, in a
        full softmax over the frozen catalogue [N, D].
        """
        scores = torch.einsum("bpkd,nd->bpkn", interests, catalogue).amax(dim=2) / self.config.tau  # [B,P,N]
        logp = torch.log_softmax(scores, dim=2)
        picked = logp.gather(2, targets.clamp(min=0))                          # [B,P,W]
        return -(picked * target_mask).sum() / target_mask.sum().clamp(min=1)

    def loss(self, items: torch.Tensor, mask: torch.Tensor, catalogue: torch.Tensor, cut: torch.Tensor,
             targets: torch.Tensor, target_mask: torch.Tensor, hard: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its parts. cut [B,P]: positions whose readout predicts targets [B,P,W].

        The soft readout reads nothing but the soft sums, which (no decay in
        training) are cumulative sums of ``p (x) v``: the soft stage computes
        them in one ``cumsum`` instead of unrolling the GRUs it does not read.
        """
        c = self.config
        if hard:
            out = self.sequence(items, mask)
            interests, _ = self.readout_at(out["states"], cut, hard=True)      # [B,P,K,D]
        else:
            out = dict(zip(("logits", "probs", "assign"), self.assignment(items)))
            soft = torch.cumsum((out["probs"] * mask.unsqueeze(2)).unsqueeze(3) * items.unsqueeze(2), dim=1)  # [B,T,K,D]
            b, p = cut.shape
            picked = soft.gather(1, cut.view(b, p, 1, 1).expand(b, p, *soft.shape[2:])).reshape(b * p, *soft.shape[2:])
            zeros = picked.new_zeros
            interests, _ = self.readout(zeros(b * p, c.interests, c.hidden), zeros(b * p, c.hidden), picked, hard=False)
            interests = interests.view(b, p, *interests.shape[1:])
        parts = {
            "future": self.future_loss(interests, catalogue, targets, target_mask),
            "orth": c.w_orth * self.orthogonality_loss(),
            "uniform": c.w_uniform * self.uniformity_loss(out["probs"], mask),
        }
        if hard:
            parts["unique"] = c.w_unique * self.unique_loss(out["logits"], mask)
        return sum(parts.values()), parts


# --- training ---------------------------------------------------------------

def user_sequences(split, dataset, upto: str = "valid") -> list[np.ndarray]:
    """Per kept user, the item indexes of their positive events before ``upto``, in event order.

    OPAL follows what a user engaged with; skips carry no interest (the
    stream worker feeds OPAL positive events only, for the same reason).
    """
    return [dataset.item[rows[split.positive[rows]]] for rows in split.history(upto)]


def padded_indexes(sequences: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(left-aligned item indexes [S, T] (0-padded), lengths [S]) of whole sequences, T >= 1."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    idx = torch.zeros(len(sequences), max(int(lengths.max()) if len(sequences) else 1, 1), dtype=torch.long)
    for i, s in enumerate(sequences):
        idx[i, :len(s)] = torch.as_tensor(np.asarray(s, dtype=np.int64))
    return idx, lengths


def interests_after(model: Opal, catalogue: torch.Tensor, sequences: list[np.ndarray], reads: np.ndarray | None = None,
                    at: np.ndarray | None = None, decays: list[np.ndarray] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(interests [Q,K,D], weights [Q,K]) after the first ``at[q]`` events of ``sequences[reads[q]]``.

    Defaults: one query per sequence, after its last event (what the worker
    publishes after streaming the whole sequence). ``decays``: per sequence,
    the decay before each event (:func:`dreamstream.dreamumm_ref.decays`, as
    the worker computes it); none by default. See :meth:`Opal.states_after`.
    """
    idx, lengths = padded_indexes(sequences)
    reads = torch.arange(len(sequences)) if reads is None else torch.as_tensor(reads, dtype=torch.long)
    at = lengths[reads] if at is None else torch.as_tensor(at, dtype=torch.long)
    decay = None
    if decays is not None:
        decay = torch.ones(idx.shape, dtype=torch.float32)
        for i, g in enumerate(decays):
            decay[i, :len(g)] = torch.as_tensor(np.asarray(g, np.float32))
    with torch.no_grad():
        state = model.states_after(catalogue[idx], lengths, reads, at, decay)
        return model.readout(*state)


def final_interests(model: Opal, catalogue: torch.Tensor, sequences: list[np.ndarray], batch: int = 512
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sequence, (interests [U,K,D], weights [U,K], hard assignment counts [U,K]) after its last event."""
    model.eval()
    k, d = model.config.interests, model.config.dim
    if not sequences:
        return np.zeros((0, k, d), np.float32), np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    res_i, res_w = [], []
    for s in range(0, len(sequences), batch):
        interests, weights = interests_after(model, catalogue, sequences[s:s + batch])
        res_i.append(interests.numpy()); res_w.append(weights.numpy())
    with torch.no_grad():
        item_assign = model.assignment(catalogue)[2].numpy()                   # depends on the item only
    counts = np.stack([np.bincount(item_assign[np.asarray(q, np.int64)], minlength=k) for q in sequences])
    return np.concatenate(res_i), np.concatenate(res_w), counts.astype(np.int64)


def pad(sequences: list[np.ndarray], catalogue: torch.Tensor, length: int | None = None
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-aligned [B, T, D] item vectors and [B, T] mask of real events."""
    length = length or max((len(s) for s in sequences), default=1) or 1
    idx = torch.zeros(len(sequences), length, dtype=torch.long)
    mask = torch.zeros(len(sequences), length, dtype=torch.bool)
    for i, s in enumerate(sequences):
        n = min(len(s), length)
        idx[i, :n] = torch.as_tensor(s[-n:] if len(s) > length else s[:n], dtype=torch.long)
        mask[i, :n] = True
    return catalogue[idx], mask


def sample_batch(sequences: list[np.ndarray], users: np.ndarray, config: OpalConfig, rng: np.random.Generator):
    """Random windows of the users' sequences, with cut points and their future items."""
    t, w, p = config.max_len, config.window, config.positions
    idx = np.zeros((len(users), t), np.int64)
    mask = np.zeros((len(users), t), bool)
    cut = np.zeros((len(users), p), np.int64)
    targets = np.zeros((len(users), p, w), np.int64)
    tmask = np.zeros((len(users), p, w), np.float32)
    for row, u in enumerate(users):
        seq = sequences[u]
        n = min(len(seq), t + w)
        start = rng.integers(0, len(seq) - n + 1)
        window = seq[start:start + n]
        seen = n - 1 if n <= t else t
        idx[row, :seen] = window[:seen]
        mask[row, :seen] = True
        cut[row] = rng.integers(0, seen, size=p)
        for j, c in enumerate(cut[row]):
            fut = window[c + 1:c + 1 + w]
            targets[row, j, :len(fut)] = fut
            tmask[row, j, :len(fut)] = 1.0
    return (torch.from_numpy(idx), torch.from_numpy(mask), torch.from_numpy(cut), torch.from_numpy(targets),
            torch.from_numpy(tmask))


def evaluate_recall(model: Opal, catalogue: torch.Tensor, split, dataset, upto: str, k: int = 20) -> float:
    """recall@k of max-over-interests retrieval for ``upto`` (training items masked)."""
    from dreamstream.data.metrics import topk_metrics

    interests, _, _ = final_interests(model, catalogue, user_sequences(split, dataset, upto))
    scores = np.einsum("ukd,nd->ukn", interests, catalogue.numpy()).max(axis=1)
    for u, items in enumerate(split.exclude_items(upto)):
        scores[u, items] = -np.inf
    topk = np.argsort(-scores, axis=1)[:, :k]
    return float(topk_metrics(topk, split.targets(upto), ks=(k,))[f"recall@{k}"])


def _train_epoch(model: Opal, opt: torch.optim.Optimizer, catalogue: torch.Tensor, sequences: list[np.ndarray],
                 trainable: np.ndarray, hard: bool, rng: np.random.Generator, desc: str, progress: bool
                 ) -> dict[str, float]:
    """One epoch (``epoch_passes`` random windows per trainable sequence); the mean loss parts."""
    from tqdm.auto import tqdm

    config = model.config
    model.train()
    order = rng.permutation(np.repeat(trainable, max(config.epoch_passes, 1)))
    totals: dict[str, float] = {}
    batches = range(0, len(order), config.batch_size)
    bar = tqdm(batches, desc=desc, disable=not progress, leave=False)
    for s in bar:
        idx, mask, cut, targets, tmask = sample_batch(sequences, order[s:s + config.batch_size], config, rng)
        loss = train_step(opt, *model.loss(catalogue[idx], mask, catalogue, cut, targets, tmask, hard=hard), totals)
        bar.set_postfix(loss=f"{loss:.3f}")
    return {name: value / max(len(batches), 1) for name, value in totals.items()}


def fit_opal(sequences: list[np.ndarray], item_vectors: np.ndarray, validate: Callable[[Opal], float],
             config: OpalConfig | None = None, seed: int = 0, progress: bool = True) -> tuple[Opal, dict]:
    """Train OPAL on per-user item index sequences (time order) over frozen item vectors [N, D].

    Two stages, as the authors' ``run.py``: (1) soft pre-training (interests
    are the soft sums alone; only ``C`` learns), at most ``soft_epochs``,
    stopped after ``patience`` epochs without a better ``validate(model)``
    (higher is better; it is called with the model in eval mode, reading out
    softly), and the best soft weights restored; (2) hard fine-tuning from
    them (full readout, GRU, unique loss on, a fresh optimiser), early
    stopped the same way, best weights restored. Returns the model (eval
    mode, hard readout: what :meth:`Opal.step` exports) and a report:
    ``history`` (one row per epoch: ``stage``, ``epoch`` counted over both
    stages, ``stage_epoch``, loss parts, ``valid``, ``seconds``), per stage
    ``{"best_epoch", "epochs", "valid"}``, the final ``valid`` and the
    orthogonality of ``C``. Sequences shorter than 2 events teach nothing
    and are skipped.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    catalogue = F.normalize(torch.as_tensor(np.asarray(item_vectors), dtype=torch.float32), dim=1)
    config = config or OpalConfig(dim=catalogue.shape[1])
    if config.dim != catalogue.shape[1]:
        config = replace(config, dim=catalogue.shape[1])
    sequences = [np.asarray(s, dtype=np.int64) for s in sequences]
    trainable = np.flatnonzero(np.array([len(s) >= 2 for s in sequences], dtype=bool))
    if trainable.size == 0:
        raise ValueError("no sequence has two events: OPAL has nothing to learn from")
    model = Opal(config)
    history: list[dict] = []
    report: dict = {}
    started = time.time()
    try:
        for stage, hard, most in (("soft", False, config.soft_epochs), ("hard", True, config.hard_epochs)):
            model.readout_hard = hard
            opt = torch.optim.Adam(model.parameters(), lr=config.lr)
            stopper, epoch = EarlyStopping(model, config.patience), 0
            for epoch in range(1, max(most, 1) + 1):
                parts = _train_epoch(model, opt, catalogue, sequences, trainable, hard, rng,
                                     f"opal {stage} {epoch}/{most}", progress)
                model.eval()
                score = float(validate(model))
                history.append({"stage": stage, "epoch": len(history) + 1, "stage_epoch": epoch, **parts,
                                "valid": score, "seconds": round(time.time() - started, 1)})
                if progress:
                    from tqdm.auto import tqdm

                    tqdm.write(f"opal {stage} epoch {epoch}: loss {parts.get('loss', float('nan')):.4f}  valid {score:.4f}")
                if stopper.update(epoch, score):
                    break
            stopper.restore()
            report[stage] = {"best_epoch": stopper.best_epoch, "epochs": epoch, "valid": stopper.best_score}
    finally:
        model.readout_hard = True
    model.eval()
    cats = model.categories().detach()
    report.update({
        "valid": report["hard"]["valid"],
        "orthogonality": float(model.orthogonality_loss().detach()),
        "max_offdiag_cos": float((cats @ cats.T - torch.eye(config.interests)).abs().max()),
        "seconds": round(time.time() - started, 1),
        "config": config.to_dict(),
        "history": history,
    })
    return model, report


def train_opal(item_vectors: np.ndarray, split, dataset, epochs: int, seed: int, out_dir: str | Path,
               config: OpalConfig | None = None, progress: bool = True) -> dict:
    """:func:`fit_opal` on a leave-last-out split's positive sequences; write ``out_dir/opal.pt``.

    Validation is recall@20 of max-over-interests retrieval of the split's
    validation targets. ``epochs`` is the whole budget: at most half of it
    (at least one) for soft pre-training, the rest (at least one) for hard
    fine-tuning, each also capped by the config. Returns the metrics and
    merges them into ``out_dir/metrics.json["opal"]``, and the per-epoch
    curve (both stages, ``recall@20`` per row) into ``out_dir/history.json["opal"]``.
    """
    catalogue = F.normalize(torch.as_tensor(np.asarray(item_vectors), dtype=torch.float32), dim=1)
    config = config or OpalConfig(dim=catalogue.shape[1])
    soft_most = max(1, epochs // 2)
    hard_most = max(1, epochs - soft_most)
    config = replace(config, dim=catalogue.shape[1], soft_epochs=min(config.soft_epochs, soft_most),
                     hard_epochs=min(config.hard_epochs, hard_most))
    model, fit = fit_opal(user_sequences(split, dataset, "valid"), catalogue.numpy(),
                          lambda m: evaluate_recall(m, catalogue, split, dataset, "valid"), config, seed, progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_opal(model, out / "opal.pt")
    metrics = {
        "valid": {"recall@20": fit["valid"]},
        "best_epoch": fit["hard"]["best_epoch"],
        "soft_best_epoch": fit["soft"]["best_epoch"],
        "soft_valid": {"recall@20": fit["soft"]["valid"]},
        "orthogonality": fit["orthogonality"],
        "max_offdiag_cos": fit["max_offdiag_cos"],
        "pretrain_epochs": fit["soft"]["epochs"],
        "epochs": fit["soft"]["epochs"] + fit["hard"]["epochs"],
        "seconds": fit["seconds"],
    }
    history = [{**row, "recall@20": row["valid"]} for row in fit["history"]]
    _merge_json(out / "metrics.json", "opal", metrics)
    _merge_json(out / "history.json", "opal", history)
    return metrics


def _merge_json(path: Path, key: str, value) -> None:
    """Put ``value`` under ``key`` of the JSON object at ``path`` (created when missing)."""
    blob = json.loads(path.read_text()) if path.exists() else {}
    blob[key] = value
    path.write_text(json.dumps(blob, indent=1))


def save_opal(model: Opal, path: str | Path) -> None:
    save_module(model, path)


def load_opal(ckpt_dir: str | Path) -> Opal:
    """The trained OPAL of a checkpoint folder (``opal.pt``), in eval mode."""
    return load_module(Path(ckpt_dir) / "opal.pt", lambda config: Opal(opal_config(config)))


def opal_config(blob: dict) -> OpalConfig:
    """An :class:`OpalConfig` from a saved dict; training-only keys of older versions are dropped."""
    known = OpalConfig.__dataclass_fields__
    return OpalConfig(**{k: v for k, v in blob.items() if k in known})
