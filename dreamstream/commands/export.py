"""`dreamstream export`: turn a training checkpoint into the ONNX bundle the worker serves."""
from __future__ import annotations

from pathlib import Path

import click

from dreamstream.cli_options import settings_options
from dreamstream.settings import Settings


@click.command("export")
@settings_options("model_dir")
@click.option("--checkpoint", type=click.Path(path_type=Path, file_okay=False), default=Path("var/checkpoint"),
              show_default=True, envvar="DREAMSTREAM_EXPORT_CHECKPOINT",
              help="Checkpoint folder written by `dreamstream train`. [env DREAMSTREAM_EXPORT_CHECKPOINT]")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              envvar="DREAMSTREAM_EXPORT_OUT",
              help="Model folder to add the bundle version to (default: --model-dir). [env DREAMSTREAM_EXPORT_OUT]")
def export(settings: Settings, checkpoint: Path, out: Path | None) -> None:
    """Export OPAL, the DreamUMM step and the item tower as ONNX, with the item vectors, m_user and a manifest.

    Each ONNX file is checked against PyTorch at batch 1 and 37 before the
    version folder appears (atomically) under the model folder; the manifest
    records every file's sha256, which the worker verifies before serving.
    """
    from export.bundle_writer import export_checkpoint

    try:
        manifest = export_checkpoint(checkpoint, out or settings.model_dir, echo=click.echo)
    except FileNotFoundError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"bundle written: {manifest.parent}")
    click.echo(f"manifest: {manifest}")
