"""A synthetic micro-video dataset whose hidden structure is known, in RecBole atomic format.

Why synthetic: the tests, the demo and ``train`` need a dataset that is
small, fast, offline and *has the properties the three papers exploit*, with
the ground truth written beside it so a test can check a model recovers it:

* items belong to hyper-categories and carry a latent vector near their
  category's centre; the text and visual features are noisy linear maps of
  that latent (text less noisy than visual), and titles are drawn from
  category-specific words, so a sentence encoder separates them too (DREAM's
  modal line has something to learn);
* item popularity has a long tail (Zipf), so many items have few
  interactions — where modal features beat behaviour alone;
* users hold 1–4 interests (a category plus a preferred latent direction),
  with mixture weights; halfway through their timeline the weights are
  re-drawn, the directions move, and with probability ``drift`` one interest
  is swapped for a new category (OPAL's multi-interest, DreamUMM's decay);
* a user mostly watches items near a current interest, long (positive); some
  off-interest items are shown and quickly skipped (the engagement weight).

Every draw comes from one seeded generator, so a seed gives the same bytes.
Written files: ``synthetic.inter``, ``synthetic.item``, ``text_feat.npy``,
``image_feat.npy`` and ``latent.npz`` (the ground truth, see :func:`generate`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

NAME = "synthetic"

# Category themes with real words, so an off-the-shelf sentence encoder sees the categories apart.
THEMES: dict[str, tuple[str, ...]] = {
    "cooking": ("recipe", "pasta", "kitchen", "bake", "chef", "dinner", "spicy", "noodles", "dessert", "grill",
                "soup", "bread", "sauce", "breakfast"),
    "gaming": ("gameplay", "speedrun", "boss", "level", "console", "multiplayer", "quest", "controller", "minecraft",
               "stream", "ranked", "glitch", "arcade", "esports"),
    "travel": ("beach", "mountain", "island", "flight", "hotel", "roadtrip", "backpacking", "village", "sunset",
               "passport", "hiking", "lake", "desert", "city"),
    "fitness": ("workout", "squat", "cardio", "yoga", "abs", "gym", "stretch", "running", "protein", "muscle",
                "pilates", "marathon", "pushup", "training"),
    "music": ("guitar", "piano", "cover", "song", "concert", "drums", "melody", "singer", "violin", "remix",
              "chorus", "band", "album", "acoustic"),
    "pets": ("puppy", "kitten", "dog", "cat", "parrot", "hamster", "bunny", "aquarium", "paws", "leash", "vet",
             "fetch", "cuddle", "rescue"),
    "comedy": ("prank", "sketch", "standup", "joke", "parody", "funny", "blooper", "roast", "meme", "sitcom",
               "laugh", "improv", "satire", "punchline"),
    "fashion": ("outfit", "dress", "sneakers", "runway", "denim", "jacket", "style", "thrift", "lookbook",
                "accessories", "handbag", "tailor", "vintage", "streetwear"),
    "tech": ("smartphone", "laptop", "unboxing", "gadget", "review", "processor", "camera", "battery", "software",
             "keyboard", "headphones", "robot", "coding", "chip"),
    "sports": ("football", "basketball", "goal", "tennis", "match", "dunk", "stadium", "penalty", "highlights",
               "league", "pitcher", "sprint", "referee", "tournament"),
    "beauty": ("makeup", "skincare", "lipstick", "eyeliner", "foundation", "haircut", "nails", "serum", "blush",
               "contour", "moisturizer", "curls", "mascara", "manicure"),
    "cars": ("engine", "drift", "supercar", "horsepower", "garage", "tires", "racing", "turbo", "sedan",
             "motorcycle", "exhaust", "torque", "dashboard", "electric"),
    "dance": ("choreography", "ballet", "hiphop", "salsa", "tango", "breakdance", "routine", "moves", "tutorial",
              "spin", "rhythm", "waltz", "freestyle", "stage"),
    "science": ("experiment", "chemistry", "physics", "planet", "telescope", "molecule", "volcano", "magnet",
                "fossil", "galaxy", "microscope", "reaction", "biology", "rocket"),
    "diy": ("woodworking", "drill", "paint", "craft", "repair", "shelf", "glue", "sewing", "garden", "renovation",
            "knitting", "pottery", "hammer", "upcycle"),
    "kids": ("cartoon", "toys", "lullaby", "alphabet", "puppet", "crayons", "storytime", "playground", "lego",
             "dinosaur", "counting", "nursery", "bubbles", "puzzle"),
}
GENERIC = ("my", "best", "new", "today", "first", "quick", "easy", "amazing", "ultimate", "daily", "top", "how",
           "why", "try", "vs", "challenge", "part", "live", "short", "guide")


@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator; the defaults give ~100k events that train in about a minute on 2 cores."""

    n_users: int = 2000
    n_items: int = 3000
    n_categories: int = 8
    interests_per_user: tuple[int, int] = (1, 4)  # inclusive range of interests a user holds
    events_per_user: tuple[int, int] = (20, 80)  # inclusive range of events per user (before exhaustion)
    latent_dim: int = 32  # dimension of the hidden item / interest space
    text_dim: int = 384  # like all-MiniLM-L6-v2
    visual_dim: int = 128
    item_spread: float = 1.5  # how far items sit from their category centre (0 = on it): room for per-user taste
    text_noise: float = 2.0  # per-dimension noise std of text features (signal std is 1)
    visual_noise: float = 3.0  # visual features are the less informative modality
    # Share of the latent directions each modality sees at all. Real content features carry taste only partly;
    # with full coverage and less noise a linear map from text_feat recovered the latent with cosine 0.94, so
    # synthetic numbers were inflated by features that gave the answer away (issue 19).
    text_coverage: float = 0.5
    visual_coverage: float = 0.35
    popularity_alpha: float = 1.0  # Zipf exponent of item popularity: the long tail
    affinity: float = 12.0  # how sharply a user prefers items near an interest's direction
    skip_rate: float = 0.2  # target share of quick skips (watch < 20% of the duration)
    explore_rate: float = 0.15  # share of events that show an off-interest item (mostly skipped)
    fresh_share: float = 0.5  # share of videos uploaded during the log (the rest exist before it starts)
    freshness_days: float = 7.0  # a video's appeal halves-ish (e-folds) every this many days after upload
    drift: float = 0.5  # probability that one interest is swapped for a new category mid-timeline
    direction_drift: float = 0.5  # how far interest directions move at the drift point
    span_days: float = 30.0  # length of the whole log
    start_ts: int = 1_704_067_200_000  # ms since epoch of the log's start (2024-01-01 UTC), fixed for determinism
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.interests_per_user
        if not 1 <= lo <= hi or hi > self.n_categories:
            raise ValueError(f"interests_per_user must be 1 <= lo <= hi <= n_categories ({self.n_categories}), "
                             f"got {self.interests_per_user}")
        if not 1 <= self.events_per_user[0] <= self.events_per_user[1]:
            raise ValueError(f"events_per_user must be 1 <= lo <= hi, got {self.events_per_user}")
        if self.n_users < 1 or self.n_items < self.n_categories or self.n_categories < 1:
            raise ValueError(f"need n_users >= 1 and n_items >= n_categories >= 1, got {self.n_users} users, "
                             f"{self.n_items} items, {self.n_categories} categories")
        if not 0 <= self.explore_rate * 0.9 <= self.skip_rate < 1:
            raise ValueError(f"skip_rate ({self.skip_rate}) must lie in [0.9 * explore_rate, 1): off-interest "
                             f"items are skipped 90% of the time")


@dataclass(frozen=True)
class _Items:
    category: np.ndarray  # int64 [I]
    latent: np.ndarray  # float32 [I, L], unit rows
    centers: np.ndarray  # float32 [C, L], unit rows
    popularity: np.ndarray  # float64 [I], sums to 1
    duration_ms: np.ndarray  # float64 [I]
    release_s: np.ndarray  # float64 [I], upload time in seconds from the log's start (negative: before it)


def generate(out_dir: Path | str, config: SynthConfig = SynthConfig(), progress: bool = True) -> Path:
    """Write the dataset into ``out_dir`` (created if needed) and return it.

    ``latent.npz`` holds the ground truth: ``item_category`` [I],
    ``item_latent`` [I, L], ``category_centers`` [C, L], ``item_popularity``
    [I]; per user (index = id number - 1) ``interest_categories`` [U, 2, M]
    and ``interest_weights`` [U, 2, M] for phase 0 / 1 (before / after the
    drift point, -1 / 0 padded), ``interest_directions`` [U, 2, M, L],
    ``drift_ts`` [U] (seconds); per ``.inter`` row ``event_category`` and
    ``event_interest`` (the interest slot, -1 for an off-interest item);
    ``category_names`` and ``config`` (a JSON string).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    items = _make_items(config, rng)
    names = _category_names(config.n_categories)
    titles = _titles(config, items, names, rng)
    text = _features(items.latent, config.text_dim, config.text_noise, config.text_coverage, rng)
    visual = _features(items.latent, config.visual_dim, config.visual_noise, config.visual_coverage, rng)
    users = _make_users(config, items, rng)
    events = _make_events(config, items, users, rng, progress)

    item_ids = _ids("v", config.n_items)
    user_ids = _ids("u", config.n_users)
    _write_inter(out / f"{NAME}.inter", events, user_ids, item_ids)
    _write_item(out / f"{NAME}.item", item_ids, [names[c] for c in items.category], titles)
    np.save(out / "text_feat.npy", text)
    np.save(out / "image_feat.npy", visual)
    np.savez_compressed(
        out / "latent.npz",
        item_category=items.category, item_latent=items.latent, category_centers=items.centers,
        item_popularity=items.popularity, item_release_ts=cfg_start_s(config) + items.release_s, interest_categories=users["categories"],
        interest_weights=users["weights"], interest_directions=users["directions"], drift_ts=events["drift_ts"],
        event_category=events["category"], event_interest=events["interest"],
        category_names=np.array(names), config=np.array(json.dumps(asdict(config))),
    )
    return out


def cfg_start_s(config: SynthConfig) -> float:
    """The log's start in seconds since the epoch."""
    return config.start_ts / 1000.0


def _ids(prefix: str, n: int) -> list[str]:
    width = max(5, len(str(n)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, n + 1)]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _category_names(n: int) -> list[str]:
    themes = list(THEMES)
    return [themes[c] if c < len(themes) else f"topic{c + 1}" for c in range(n)]


def _vocab(name: str, c: int) -> tuple[str, ...]:
    return THEMES.get(name) or tuple(f"{name}w{j}" for j in range(14))


def _make_items(cfg: SynthConfig, rng: np.random.Generator) -> _Items:
    centers = _unit(rng.normal(size=(cfg.n_categories, cfg.latent_dim)))
    # every category gets at least one item; the rest uniformly
    category = np.concatenate([np.arange(cfg.n_categories),
                               rng.integers(0, cfg.n_categories, cfg.n_items - cfg.n_categories)])
    rng.shuffle(category)
    noise = rng.normal(size=(cfg.n_items, cfg.latent_dim)) / np.sqrt(cfg.latent_dim)
    latent = _unit(centers[category] + cfg.item_spread * noise)
    rank = rng.permutation(cfg.n_items) + 1.0
    popularity = rank ** -cfg.popularity_alpha
    duration = np.clip(rng.lognormal(np.log(30_000), 0.6, cfg.n_items), 5_000, 180_000).round()
    span_s = cfg.span_days * 86_400.0
    release = np.where(rng.random(cfg.n_items) < cfg.fresh_share, rng.uniform(0, span_s, cfg.n_items),
                       rng.uniform(-span_s, 0, cfg.n_items))
    return _Items(category.astype(np.int64), latent.astype(np.float32), centers.astype(np.float32),
                  popularity / popularity.sum(), duration, release)


def _features(latent: np.ndarray, dim: int, noise: float, coverage: float, rng: np.random.Generator) -> np.ndarray:
    """``(latent restricted to a random subspace) @ W + bias + noise``: a partial, noisy view of the latent.

    The modality sees ``coverage`` of the latent directions (a random
    orthonormal subspace) and nothing of the rest, with a non-zero mean like real features.
    """
    seen = max(1, int(round(coverage * latent.shape[1])))
    basis, _ = np.linalg.qr(rng.normal(size=(latent.shape[1], seen)))  # [L, seen] orthonormal columns
    latent = latent @ basis @ basis.T * np.sqrt(latent.shape[1] / seen)  # keep the signal's scale
    weights = rng.normal(size=(latent.shape[1], dim))  # signal std per output dim ~ |latent| = 1
    bias = rng.normal(scale=0.5, size=dim)
    return (latent @ weights + bias + noise * rng.normal(size=(latent.shape[0], dim))).astype(np.float32)


def _titles(cfg: SynthConfig, items: _Items, names: list[str], rng: np.random.Generator) -> list[str]:
    """Titles of 3–6 words: mostly the category's words, chosen by the item's latent (sub-topics)."""
    word_vecs = {c: _unit(rng.normal(size=(len(_vocab(names[c], c)), cfg.latent_dim))) for c in range(cfg.n_categories)}
    lengths = rng.integers(3, 7, cfg.n_items)
    titles = []
    for i in range(cfg.n_items):
        c = int(items.category[i])
        vocab = _vocab(names[c], c)
        logits = 4.0 * word_vecs[c] @ items.latent[i]
        p = np.exp(logits - logits.max())
        topical = rng.choice(len(vocab), size=lengths[i], p=p / p.sum())
        words = [vocab[w] if rng.random() < 0.75 else GENERIC[rng.integers(len(GENERIC))] for w in topical]
        titles.append(" ".join(words))
    return titles


def _make_users(cfg: SynthConfig, items: _Items, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per user and phase (0 before the drift point, 1 after): interest categories, weights, directions."""
    m = cfg.interests_per_user[1]
    cats = np.full((cfg.n_users, 2, m), -1, dtype=np.int64)
    weights = np.zeros((cfg.n_users, 2, m))
    directions = np.zeros((cfg.n_users, 2, m, cfg.latent_dim), dtype=np.float32)
    # categories differ in appeal: a few are popular with many users
    appeal = rng.dirichlet(np.full(cfg.n_categories, 2.0))
    counts = rng.integers(cfg.interests_per_user[0], m + 1, cfg.n_users)
    for u in range(cfg.n_users):
        k = counts[u]
        first = rng.choice(cfg.n_categories, size=k, replace=False, p=appeal)
        second = first.copy()
        if rng.random() < cfg.drift and k < cfg.n_categories:
            free = np.setdiff1d(np.arange(cfg.n_categories), first)
            second[rng.integers(k)] = rng.choice(free, p=appeal[free] / appeal[free].sum())
        noise = rng.normal(size=(k, cfg.latent_dim)) / np.sqrt(cfg.latent_dim)
        d0 = _unit(items.centers[first] + 0.6 * noise)
        moved = _unit(d0 + cfg.direction_drift * rng.normal(size=d0.shape) / np.sqrt(cfg.latent_dim))
        fresh = _unit(items.centers[second] + 0.6 * rng.normal(size=d0.shape) / np.sqrt(cfg.latent_dim))
        d1 = np.where((second == first)[:, None], moved, fresh)
        cats[u, 0, :k], cats[u, 1, :k] = first, second
        weights[u, 0, :k], weights[u, 1, :k] = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))
        directions[u, 0, :k], directions[u, 1, :k] = d0, d1
    return {"categories": cats, "weights": weights, "directions": directions}


def _make_events(cfg: SynthConfig, items: _Items, users: dict[str, np.ndarray], rng: np.random.Generator,
                 progress: bool) -> dict[str, np.ndarray]:
    """Every user's timeline: when, which item (never the same twice), how long they watched."""
    by_category = [np.flatnonzero(items.category == c) for c in range(cfg.n_categories)]
    log_pop = np.log(items.popularity)
    span_s = cfg.span_days * 86_400.0
    # an on-interest item is skipped with this probability so that the overall skip share is skip_rate
    on_skip = (cfg.skip_rate - 0.9 * cfg.explore_rate) / (1.0 - cfg.explore_rate)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("user", "item", "ts", "watch", "category", "interest")}
    drift_ts = np.zeros(cfg.n_users)
    for u in tqdm(range(cfg.n_users), desc="users", disable=not progress, leave=False):
        n = int(rng.integers(cfg.events_per_user[0], cfg.events_per_user[1] + 1))
        active = span_s * rng.uniform(0.5, 1.0)
        start = rng.uniform(0, span_s - active)
        ts = np.sort(start + active * rng.random(n))
        drift_ts[u] = start + active * rng.uniform(0.35, 0.65)
        phase = (ts >= drift_ts[u]).astype(np.int64)
        k = int((users["categories"][u, 0] >= 0).sum())
        explore = rng.random(n) < cfg.explore_rate
        cumulative = np.cumsum(users["weights"][u, :, :k], axis=1)  # [2, k]
        slot = (rng.random(n)[:, None] * cumulative[phase, -1:] >= cumulative[phase]).sum(axis=1).astype(np.int64)
        slot[explore] = -1
        chosen = np.full(n, -1, dtype=np.int64)
        used = np.zeros(cfg.n_items, dtype=bool)
        for p in (0, 1):
            for s in range(k):
                at = np.flatnonzero((phase == p) & (slot == s))
                pool = by_category[users["categories"][u, p, s]]
                logits = log_pop[pool] + cfg.affinity * (items.latent[pool] @ users["directions"][u, p, s])
                chosen[at] = _draw_unused(pool, logits, ts[at], items.release_s, cfg.freshness_days, used, rng)
        held = np.zeros(cfg.n_categories, dtype=bool)
        held[users["categories"][u][users["categories"][u] >= 0]] = True
        pool = np.flatnonzero(~held[items.category]) if not held.all() else np.arange(cfg.n_items)
        at = np.flatnonzero(explore)
        chosen[at] = _draw_unused(pool, log_pop[pool], ts[at], items.release_s, cfg.freshness_days, used, rng)
        keep = chosen >= 0  # a tiny category can run out of unseen items: those events do not happen
        skip = np.where(explore, rng.random(n) < 0.9, rng.random(n) < on_skip)
        ratio = np.where(skip, rng.uniform(0.01, 0.18, n), _play_ratio(items, users, u, phase, slot, chosen, rng))
        watch = np.round(ratio * items.duration_ms[np.maximum(chosen, 0)])
        for key, value in (("user", np.full(n, u)), ("item", chosen), ("ts", ts), ("watch", watch),
                           ("category", items.category[np.maximum(chosen, 0)]), ("interest", slot)):
            cols[key].append(value[keep])
    out = {k: np.concatenate(v) for k, v in cols.items()}
    out["ts"] = np.round(cfg.start_ts / 1000.0 + out["ts"], 3)  # seconds with ms precision, as RecBole stores
    order = np.lexsort((out["user"], out["ts"]))  # the log is written in time order, like a real event log
    out = {k: v[order] for k, v in out.items()}
    out["duration"] = items.duration_ms[out["item"]]
    out["drift_ts"] = np.round(cfg.start_ts / 1000.0 + drift_ts, 3)
    return out


def _draw_unused(pool: np.ndarray, logits: np.ndarray, at_s: np.ndarray, release_s: np.ndarray,
                 freshness_days: float, used: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One item of ``pool`` per event time in ``at_s`` (ascending), never one in ``used`` (marked as drawn).

    Per event the choice is ∝ exp(logits - age_days / freshness_days) over the
    videos already uploaded: fresh videos are what a feed shows, so the last
    events of a user (the test targets) are often items with little history —
    where an item's text and visuals must stand in for its missing behaviour.
    Gumbel-max per event; -1 when nothing is left to draw.
    """
    picked = np.full(at_s.size, -1, dtype=np.int64)
    if at_s.size == 0:
        return picked
    age = (at_s[:, None] - release_s[pool][None, :]).astype(np.float32)  # [m, P] seconds since upload
    keys = np.where(age >= 0, logits.astype(np.float32)[None, :] - age * np.float32(1 / (86_400 * freshness_days)),
                    np.float32(-np.inf))
    # Gumbel noise as -log(-log(U)) in float32: the same law as rng.gumbel at a third of the cost
    with np.errstate(divide="ignore"):
        keys -= np.log(-np.log(rng.random(keys.shape, dtype=np.float32)))
    keys[:, used[pool]] = -np.inf
    # row r can lose at most r candidates to earlier rows, so each row's best m are enough
    n_best = min(at_s.size, pool.size)
    best = np.argpartition(-keys, n_best - 1, axis=1)[:, :n_best] if n_best < pool.size else \
        np.broadcast_to(np.arange(pool.size), keys.shape)
    best_keys = np.take_along_axis(keys, best, axis=1)
    rank = np.argsort(-best_keys, axis=1, kind="stable")
    best, best_keys = np.take_along_axis(best, rank, axis=1), np.take_along_axis(best_keys, rank, axis=1)
    taken: set[int] = set()
    for row, (candidates, finite) in enumerate(zip(best.tolist(), np.isfinite(best_keys).tolist())):
        for j, ok in zip(candidates, finite):
            if not ok:
                break
            if j not in taken:
                taken.add(j)
                picked[row] = pool[j]
                break
    used[picked[picked >= 0]] = True
    return picked


def _play_ratio(items: _Items, users: dict[str, np.ndarray], u: int, phase: np.ndarray, slot: np.ndarray,
                chosen: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Completion of a non-skipped play: higher the closer the item is to the interest, replays above 1."""
    n = chosen.size
    dirs = users["directions"][u, phase, np.maximum(slot, 0)]  # [n, L]
    closeness = np.einsum("nl,nl->n", items.latent[np.maximum(chosen, 0)], dirs)
    closeness = np.where(slot >= 0, closeness, 0.0)
    ratio = 0.3 + 0.9 / (1.0 + np.exp(-4.0 * (closeness - 0.4))) + rng.normal(0, 0.1, n)
    return np.clip(ratio, 0.22, 1.5)


def _write_inter(path: Path, ev: dict[str, np.ndarray], user_ids: list[str], item_ids: list[str]) -> None:
    positive = ev["watch"] >= 0.2 * ev["duration"]
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float\twatch_ms:float\tduration_ms:float\n"
    lines = [f"{user_ids[u]}\t{item_ids[i]}\t{int(r)}\t{t:.3f}\t{int(w)}\t{int(d)}\n"
             for u, i, r, t, w, d in zip(ev["user"].tolist(), ev["item"].tolist(), positive.tolist(),
                                         ev["ts"].tolist(), ev["watch"].tolist(), ev["duration"].tolist())]
    path.write_text(header + "".join(lines), encoding="utf-8")


def _write_item(path: Path, item_ids: list[str], categories: list[str], titles: list[str]) -> None:
    lines = [f"{i}\t{c}\t{t}\n" for i, c, t in zip(item_ids, categories, titles)]
    path.write_text("item_id:token\tcategory:token\ttitle:token_seq\n" + "".join(lines), encoding="utf-8")
