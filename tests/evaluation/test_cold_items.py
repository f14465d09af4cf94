"""The cold-item block's other-events rows: the same item space, the new videos retrievable or not."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from dreamstream.data.datagen import SynthConfig, generate
from dreamstream.data.recbole import load_dataset
from dreamstream.evaluation import cold_items as cold
from dreamstream.evaluation import runner
from dreamstream.evaluation.live_refinement import LIVE_ROW
from dreamstream.evaluation.prequential import Histories


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_withheld_row_ranks_with_the_tower_rows_user_vectors(tmp_path: Path, monkeypatch) -> None:
    """A user who watched a new film carries its tower vector in both rows; only retrievability differs.

    DREAM's fit and the tower are replaced by random vectors, the cold films'
    tower vectors unlike their "trained" (never-trained) ones: a withheld row
    built over the trained vectors ranks the warm films differently for every
    user whose history holds a cold film, and this test fails.
    """
    data = generate(tmp_path / "data", SynthConfig(n_users=40, n_items=60, events_per_user=(15, 30), text_dim=8,
                                                    visual_dim=4), progress=False)
    source = runner.Source(load_dataset(data), None, runner.EvalConfig(seeds=(0,)))
    n_items = source.ds.n_items
    new = cold.cold_items(n_items)
    rng = np.random.default_rng(1)
    trained = _unit(rng.standard_normal((n_items, 8)))
    tower = trained.copy()
    tower[new] = _unit(rng.standard_normal((new.size, 8)))
    monkeypatch.setattr("models.dream_fit.fit_dream",
                        lambda *a, **k: SimpleNamespace(items=trained, fit=SimpleNamespace(best_epoch=1)))
    monkeypatch.setattr(cold, "tower_vectors", lambda features, items, c, *a, **k: tower.copy())
    scorers: dict[tuple[str, str], object] = {}
    scored = runner._scored

    def recording(protocol, name, scorer, *args, **kwargs):
        scorers[protocol.name, name] = scorer
        return scored(protocol, name, scorer, *args, **kwargs)

    monkeypatch.setattr(runner, "_scored", recording)
    out = runner.JobResult(runner.Job("cold-item", "cold", 0, 3600.0), [], {}, [])
    runner._cold_job(source, source.protocol("cold-item"), out.job, out)

    assert {name for name, *_ in out.other[cold.WARM_BLOCK]} == {cold.TOWER_ROW, cold.WITHHELD_ROW, LIVE_ROW}
    assert {name for name, *_ in out.rows} == {cold.TOWER_ROW, LIVE_ROW}
    qs = source.protocol(cold.WARM_BLOCK).test
    watched_new = np.isin(qs.log.item[np.concatenate(qs.seen)], new).any()
    assert watched_new, "no other-event history holds a cold film: the test would prove nothing"
    histories = Histories(qs.log, qs.seen, None, qs.queries)
    shown = scorers[cold.WARM_BLOCK, cold.TOWER_ROW].scores(histories)
    withheld = scorers[cold.WARM_BLOCK, cold.WITHHELD_ROW].scores(histories)
    warm = np.setdiff1d(np.arange(n_items), new)
    np.testing.assert_allclose(withheld[:, warm], shown[:, warm], rtol=1e-6, atol=1e-6)
    assert np.isneginf(withheld[:, new]).all()
    served_items = scorers["cold-item", cold.TOWER_ROW].items
    np.testing.assert_array_equal(served_items[new], tower[new])  # the tower's vectors, not DREAM's own


def test_withheld_over_other_vectors_would_differ(log) -> None:
    """The check above has teeth: the user vectors move when a watched item's vector does."""
    from dreamstream.evaluation.baselines import Popularity
    from dreamstream.evaluation.scorers import DreamUMMScorer

    rng = np.random.default_rng(0)
    items = _unit(rng.standard_normal((log.n_items, 6)))
    other = items.copy()
    new = np.array([int(log.item[0])])
    other[new] = _unit(rng.standard_normal((1, 6)))
    histories = Histories(log, [np.arange(5)], None, np.array([5]))
    popularity = Popularity.fit(log)
    rows = cold.other_event_scorers(DreamUMMScorer(items, popularity, 3600.0), new)
    moved = cold.Withheld(DreamUMMScorer(other, popularity, 3600.0), new)
    warm = np.setdiff1d(np.arange(log.n_items), new)
    same = rows[cold.WITHHELD_ROW].scores(histories)[:, warm]
    np.testing.assert_allclose(same, rows[cold.TOWER_ROW].scores(histories)[:, warm], rtol=1e-6)
    assert not np.allclose(moved.scores(histories)[:, warm], same)
