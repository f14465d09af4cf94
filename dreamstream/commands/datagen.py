"""`dreamstream datagen`: write the synthetic micro-video dataset (RecBole atomic files + features)."""
from __future__ import annotations

import time
from pathlib import Path

import click

from dreamstream.cli_options import load_settings
from dreamstream.data.datagen import NAME, SynthConfig, generate

_DEFAULTS = SynthConfig()


def _flag(name: str, env: str, default: object, help_text: str, **kw: object):
    return click.option(name, default=default, show_default=True, envvar=f"DREAMSTREAM_DATAGEN_{env}",
                        help=f"{help_text} [env DREAMSTREAM_DATAGEN_{env}]", **kw)


@click.command("datagen")
@click.option("--out", "out", type=click.Path(path_type=Path, file_okay=False), default=None,
              envvar="DREAMSTREAM_DATAGEN_OUT",
              help="Folder to write into [env DREAMSTREAM_DATAGEN_OUT; default: --data-dir / DREAMSTREAM_DATA_DIR].")
@_flag("--users", "USERS", _DEFAULTS.n_users, "Number of users.", type=click.IntRange(min=1))
@_flag("--items", "ITEMS", _DEFAULTS.n_items, "Number of videos.", type=click.IntRange(min=1))
@_flag("--categories", "CATEGORIES", _DEFAULTS.n_categories, "Number of hyper-categories.", type=click.IntRange(min=1))
@_flag("--seed", "SEED", _DEFAULTS.seed, "Random seed: the same seed writes the same files.", type=int)
@_flag("--quiet", "QUIET", False, "No progress bar.", is_flag=True)
def datagen(out: Path | None, users: int, items: int, categories: int, seed: int, quiet: bool) -> None:
    """Write a synthetic micro-video dataset with known latent structure.

    Users with 1-4 drifting interests, videos in hyper-categories with text
    and visual features correlated with them, watch times with quick skips;
    the ground truth goes to latent.npz beside the RecBole files.
    """
    out = out if out is not None else load_settings().data_dir
    try:
        config = SynthConfig(n_users=users, n_items=items, n_categories=categories, seed=seed,
                             interests_per_user=(1, min(_DEFAULTS.interests_per_user[1], categories)))
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    started = time.perf_counter()
    generate(out, config, progress=not quiet)
    seconds = time.perf_counter() - started
    n_events = sum(1 for _ in (out / f"{NAME}.inter").open(encoding="utf-8")) - 1
    click.echo(f"wrote {out} in {seconds:.1f}s: {users} users, {items} items, {categories} categories, "
               f"{n_events} interactions")
    for path in sorted(out.iterdir()):
        click.echo(f"  {path.name:20s} {path.stat().st_size / 1e6:8.2f} MB")
