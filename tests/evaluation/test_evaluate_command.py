"""`dreamstream evaluate` end to end on a tiny synthetic dataset: every row of both protocols, in the report."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dreamstream.cli import main
from dreamstream.data.datagen import SynthConfig, generate


def test_evaluate_trains_and_reports_every_row_of_both_protocols(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate(data, SynthConfig(n_users=60, n_items=90, events_per_user=(15, 30), text_dim=16, visual_dim=8),
             progress=False)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["evaluate", "--data", str(data), "--seeds", "2", "--json", str(out),
                                       "--plots", str(tmp_path / "plots"), "--choose-half-life", "inf",
                                       "--choose-half-life", "3600", "--ablations"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(out.read_text())
    pre, loo = report["protocols"]["prequential"], report["protocols"]["leave-last-out"]
    expected = {"popularity", "item-knn", "ease", "item-knn (decayed)", "ease (decayed)", "sasrec",
                "lightgcn (BPR vectors, served readout)", "dream", "opal (best interest)",
                "opal (weighted merge)", "served: dream + opal", "dream (frozen)", "ease (frozen)",
                "dream + candidates (k=2)", "dream -modal line", "dream -S3", "dream -BMA", "dream -decay"}
    assert expected <= set(pre["rows"]), set(pre["rows"])
    assert {"popularity", "dream", "sasrec", "served: dream + opal"} <= set(loo["rows"])
    assert pre["rows"]["dream"]["overall"]["seeds"] == 2 and pre["rows"]["dream -S3"]["overall"]["seeds"] == 1
    for row in pre["rows"].values():
        o = row["overall"]
        assert 0 <= o["hitrate@10"]["mean"] <= o["hitrate@20"]["mean"] <= o["hitrate@50"]["mean"] <= 1
    assert set(pre["chosen"]["dream"]["valid_by_half_life"]) == {"inf", "3600.0"}
    assert report["seconds"] > 0 and "wall time" in result.output and "prequential:" in result.output
    assert pre["describe"]["window"].startswith("validation") and pre["describe"]["grouping"].startswith("strict")
    assert "final" not in report and "FINAL" not in result.output
    served = "served: dream + opal"
    assert set(pre["vs_served"]) == set(pre["rows"]) - {served}
    assert all(d["lo"] <= d["diff"] <= d["hi"] and d["vs"] == served for d in pre["vs_served"].values())
    assert "Δhr@20 vs served" in result.output and "(served)" in result.output
    assert set(pre["opal_by_spread"]) == {"narrow", "middle", "wide"}, pre["opal_by_spread"]
    cold = report["protocols"]["cold-item"]
    assert {"dream, cold items from the item tower", "dream, cold items' trained vectors (upper bound)",
            "content: tf-idf similarity to decayed history"} <= set(cold["rows"]), set(cold["rows"])
    assert cold["describe"]["cold_items"] == 9 and cold["rows"]["dream, cold items from the item tower"]["overall"]["seeds"] == 2
    others = report["protocols"]["cold-item, other events"]  # what the new items' vectors cost the rest
    live = "dream, new films: tower refined by live watchers (served)"  # the product's path, the blocks' reference
    assert live in cold["rows"] and cold["vs_served"]["dream, cold items from the item tower"]["vs"] == live
    assert set(others["rows"]) == {"dream, cold items from the item tower", "dream, cold items not retrievable", live}
    assert others["vs_served"]["dream, cold items not retrievable"]["vs"] == live
    assert others["describe"]["scored_events"] + cold["describe"]["scored_events"] == pre["describe"]["scored_events"]
    assert (tmp_path / "plots" / "hitrate20_prequential.png").stat().st_size > 5000


def test_evaluate_final_scores_the_test_window_and_records_the_commit(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate(data, SynthConfig(n_users=40, n_items=60, events_per_user=(10, 20), text_dim=8, visual_dim=4),
             progress=False)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["evaluate", "--data", str(data), "--seeds", "1", "--json", str(out), "--final",
                                       "--lenient", "--no-ablations", "--no-baselines", "--no-opal", "--no-cold-items",
                                       "--protocol", "prequential"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(out.read_text())
    describe = report["protocols"]["prequential"]["describe"]
    assert describe["window"] == "test" and describe["grouping"].startswith("lenient")
    assert len(report["final"]["commit"]) == 40 and "FINAL: test window scored at commit" in result.output
