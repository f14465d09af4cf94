"""Every command fails like a well-kept CLI: non-zero exit, one line saying what to do, no traceback (issue 21, 5).

Each subcommand of the click group runs as a real process against a broker
address where nothing listens (a free port) and/or a path that does not
exist. The cases run concurrently: a command that needs the broker waits for
it as long as it would in production (about 30 s, no setting shortens it),
so one after the other would take minutes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import pytest

from dreamstream.broker import free_port
from dreamstream.cli import main

DREAMSTREAM = str(Path(sys.executable).parent / "dreamstream")
NO_BROKER = "no Kafka broker answers at {broker}"

# Commands that legitimately need nothing from the outside world, or start everything they need themselves.
NEEDS_NOTHING = {
    "broker": "starts the broker itself",
    "datagen": "writes its own output folder",
    "demo": "starts its own broker and generates its own data (tests/demo)",
    "bench-index": "builds a synthetic catalogue in a temporary folder",
}


def _cases(tmp: Path, broker: str) -> dict[str, list[tuple[list[str], str]]]:
    """Per command: (arguments, text the one error line must contain). Click's own usage errors are marked 'click:'."""
    missing = tmp / "no-such-folder"
    empty = tmp / "empty"
    fake_models = tmp / "models"  # a version folder with a manifest: enough for the worker to go on to the broker
    return {
        "topics": [(["--broker", broker], NO_BROKER.format(broker=broker))],
        "train": [(["--data", str(missing)], f"{missing}: no such dataset folder"),
                  (["--data", str(empty)], f"{empty} holds no .inter file"),
                  (["--data-dir", str(missing)], f"{missing}: no such dataset folder")],
        "export": [(["--checkpoint", str(missing), "--out", str(tmp / "out")], f"{missing} lacks")],
        "evaluate": [(["--data-dir", str(missing), "--no-baselines"], f"{missing}: no such dataset folder"),
                     (["--data", str(empty), "--checkpoint", str(empty)], f"{empty} is not a checkpoint"),
                     (["--data", str(missing)], "click:Invalid value for '--data'")],
        "publish-items": [(["--bundle", str(missing), "--broker", broker], str(missing)),
                          (["--model-dir", str(missing), "--broker", broker], f"no bundle (sub-folder with manifest.json) in {missing}"),
                          (["--delete", "v1", "--broker", broker], NO_BROKER.format(broker=broker))],
        "publish-features": [(["--data", str(missing), "--broker", broker], f"{missing}: no such dataset folder"),
                             (["--data", str(tmp / "data"), "--model-dir", str(missing), "--broker", broker],
                              f"no bundle (sub-folder with manifest.json) in {missing}")],
        "worker": [(["--model-dir", str(missing), "--broker", broker], f"no model bundle in {missing}"),
                   (["--model-dir", str(fake_models), "--broker", broker, "--state-dir", str(tmp / "state"), "--web-port", "0"],
                    NO_BROKER.format(broker=broker))],
        "indexer": [(["--broker", broker, "--index-dir", str(tmp / "index-out"), "--state-dir", str(tmp / "state-ix"),
                      "--index-dim", "64"], NO_BROKER.format(broker=broker)),
                    (["--broker", broker, "--index-dir", str(tmp / "index-out"), "--state-dir", str(tmp / "state-ix"),
                      "--model-dir", str(missing)], "to take the index width from")],
        "monitor": [(["--broker", broker, "--index-dir", str(tmp / "index")], NO_BROKER.format(broker=broker))],
        "backfill": [(["--namespace", "v9", "--model-dir", str(missing), "--broker", broker], "cannot roll out v9")],
        "rollout": [(["switch", "v9", "--index-dir", str(tmp / "index"), "--broker", broker], "'v9' has no index version"),
                    (["rollback", "--index-dir", str(missing)], "nothing to roll back to"),
                    (["start", "v9", "--model-dir", str(missing), "--broker", broker], "cannot roll out v9")],
        "retrieve": [(["--user", "1", "--index-dir", str(missing), "--broker", broker], f"no index version under {missing}"),
                     (["--user", "1", "--index-dir", str(tmp / "index"), "--broker", broker], NO_BROKER.format(broker=broker)),
                     (["--user", "1", "--index-dir", str(missing), "--index-backend", "milvus"], "needs --milvus-uri"),
                     (["--user", "1", "--index-dir", str(missing), "--index-backend", "milvus", "--milvus-uri",
                       "http://127.0.0.1:1"], "cannot reach Milvus at http://127.0.0.1:1")],
        "replay": [(["--data-dir", str(missing), "--broker", broker], f"{missing}: no such dataset folder"),
                   (["--dlq", "--broker", broker], NO_BROKER.format(broker=broker)),
                   (["--data-dir", str(tmp / "data"), "--broker", broker, "--no-progress"], NO_BROKER.format(broker=broker))],
        "bench": [(["--latency-repeats", "0"], "click:Invalid value for '--latency-repeats'")],
        "bench-recovery": [(["--scenario", "nope"], "click:Invalid value for '--scenario'")],
        "bench-scale": [(["--size", "1M"], "click:Invalid value for '--size'")],
        "bench-broker": [(["--engine", "postgres"], "click:Invalid value for '--engine'")],
        "bench-items": [(["--store", "nope"], "click:Invalid value for '--store'")],
    }


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DREAMSTREAM_") or k == "DREAMSTREAM_CACHE"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tiny_index(folder: Path) -> None:
    """A published index version of a few items, so `retrieve` gets past the index to the broker."""
    from dreamstream.index.builder import build_version
    from dreamstream.index.service import build_params, publish_version
    from dreamstream.index.store import ItemStore
    from dreamstream.settings import Settings

    settings = Settings(index_shards=1)
    vectors = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = ItemStore(1)
    store.put_many([f"v{i}" for i in range(len(vectors))], vectors)
    params = build_params(settings, 1)
    assert publish_version(build_version(store, folder, params), folder, params.recall_floor).published


def _tiny_config():
    from dreamstream.data.datagen import SynthConfig

    return SynthConfig(n_users=20, n_items=30, n_categories=2, interests_per_user=(1, 2))


def _tiny_dataset(folder: Path) -> None:
    from dreamstream.data.datagen import generate

    generate(folder, _tiny_config(), progress=False)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[tuple[str, tuple[str, ...]], tuple[subprocess.CompletedProcess, str]]:
    tmp = tmp_path_factory.mktemp("cli-errors")
    broker = f"kafka://127.0.0.1:{free_port()}"  # nothing listens there
    (tmp / "empty").mkdir()
    (tmp / "models" / "v1").mkdir(parents=True)
    (tmp / "models" / "v1" / "manifest.json").write_text("{}")
    _tiny_index(tmp / "index")
    _tiny_dataset(tmp / "data")
    running = []
    cases = [(name, args, expected) for name, runs in _cases(tmp, broker).items() for args, expected in runs]
    # The broker cases first and at normal priority, the rest niced: the broker cases then reach their ~30 s
    # wait for the broker soon, and the others start up (imports are most of their time) while they wait.
    cases.sort(key=lambda case: NO_BROKER.format(broker=broker) not in case[2])
    for name, args, expected in cases:
        waits = NO_BROKER.format(broker=broker) in expected
        proc = subprocess.Popen([DREAMSTREAM, name, *args], cwd=tmp, env=_env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=None if waits else (lambda: os.nice(15)))
        running.append((name, args, expected, proc))
    done = {}
    deadline = time.monotonic() + 120
    for name, args, expected, proc in running:
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += "\n<killed: still running after 120 s>"
        done[(name, tuple(args))] = (subprocess.CompletedProcess(proc.args, proc.returncode, out, err), expected)
    return done


def test_every_subcommand_is_covered() -> None:
    """A new command must get a failure case here (or a reason it needs nothing)."""
    names = set(main.list_commands(click.Context(main)))
    covered = set(_cases(Path("/x"), "kafka://127.0.0.1:1")) | set(NEEDS_NOTHING)
    assert names == covered, f"not covered: {sorted(names - covered)}; stale: {sorted(covered - names)}"


def test_failures_are_one_line_without_traceback(outcomes) -> None:
    problems = []
    for (name, args), (result, expected) in outcomes.items():
        command = f"dreamstream {name} {' '.join(args)}"
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        if result.returncode == 0:
            problems.append(f"{command}: exit 0")
        if "Traceback" in result.stderr:
            problems.append(f"{command}: traceback:\n{result.stderr[-1500:]}")
            continue
        if expected.startswith("click:"):  # click's own usage errors pass through: usage, hint, then the error
            if not lines or not lines[-1].startswith("Error: ") or expected[len("click:"):] not in lines[-1]:
                problems.append(f"{command}: expected a click usage error naming {expected[6:]!r}, got:\n{result.stderr}")
        elif len(lines) != 1 or not lines[0].startswith("Error: ") or expected not in lines[0]:
            problems.append(f"{command}: expected one line 'Error: ...{expected}...', got:\n{result.stderr}")
    assert not problems, "\n\n".join(problems)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(tmp_path: Path, how: str) -> None:
    missing = tmp_path / "no-such-folder"
    env = _env()
    argv = [DREAMSTREAM, "train", "--data", str(missing)]
    if how == "flag":
        argv.insert(1, "--debug")
    else:
        env["DREAMSTREAM_DEBUG"] = "1"
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert f"UserError: {missing}: no such dataset folder" in result.stderr
    assert not missing.exists()  # and nothing was generated there


def test_train_generates_synthetic_data_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--data synthetic` is the explicit request; it refuses to write beside another dataset."""
    from dreamstream.commands.train import training_data
    from dreamstream.data import datagen
    from dreamstream.errors import UserError

    real = datagen.generate
    tiny = _tiny_config()
    monkeypatch.setattr(datagen, "generate", lambda folder, config: real(folder, tiny, progress=False))  # default: ~10 s
    folder, name = training_data("synthetic", None, tmp_path / "data", seed=0, echo=lambda _: None)
    assert name == "synthetic" and (folder / "synthetic.inter").is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "ml.inter").write_text("user_id:token\titem_id:token\n1\t2\n")
    with pytest.raises(UserError, match="beside ml.inter"):
        training_data("synthetic", None, other, seed=0, echo=lambda _: None)
    assert training_data(str(other), None, tmp_path / "unused", seed=0) == (other, None)


def test_an_unknown_dreamstream_variable_is_reported_with_the_closest_setting() -> None:
    from dreamstream.cli import unknown_variables

    warnings = unknown_variables({"DREAMSTREAM_BATCHSIZE": "3", "DREAMSTREAM_BATCH_SIZE": "4", "DREAMSTREAM_USER": "u",
                                  "DREAMSTREAM_EVALUATE_SEEDS": "1", "DREAMSTREAM_CACHE": "/tmp", "HOME": "/root"})
    assert warnings == ["DREAMSTREAM_BATCHSIZE is not a dreamstream setting (did you mean DREAMSTREAM_BATCH_SIZE?); "
                        "it is ignored"]


def test_the_cli_prints_the_warning_and_still_runs() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([str(Path(sys.executable).parent / "dreamstream"), "topics", "--help"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "DREAMSTREAM_PARTITONS": "8"})
    assert done.returncode == 0 and "DREAMSTREAM_PARTITONS is not a dreamstream setting" in done.stderr
    assert "did you mean DREAMSTREAM_PARTITIONS?" in done.stderr
