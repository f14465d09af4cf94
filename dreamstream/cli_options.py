"""Click flags generated from :class:`dreamstream.settings.Settings` fields.

Why: every setting must be a flag *and* a ``DREAMSTREAM_*`` variable, with one
help text. Writing both by hand for a dozen commands drifts; generating the
flags from the settings model cannot.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import click
from pydantic import ValidationError

from dreamstream.settings import Settings

_CLICK_TYPES: dict[Any, Any] = {int: int, float: float, str: str, Path: click.Path(path_type=Path)}


def _option_for(name: str) -> Callable[[Callable], Callable]:
    field = Settings.model_fields[name]
    env = f"DREAMSTREAM_{name.upper()}"
    flag = "--" + name.replace("_", "-")
    help_text = f"{field.description} [env {env}; default {field.default}]"
    return click.option(flag, name, type=_CLICK_TYPES.get(field.annotation, str), default=None, help=help_text)


# Every command that talks to Kafka takes these (docs/production.md#security).
KAFKA_SECURITY = ("kafka_security_protocol", "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile",
                  "kafka_ssl_password_file", "kafka_ssl_check_hostname", "kafka_sasl_mechanism", "kafka_sasl_username",
                  "kafka_sasl_password_file")
# Which index backend readers and the indexer use, and how to reach Milvus (dreamstream/index/backend.py).
INDEX_BACKEND = ("index_backend", "milvus_uri", "milvus_token_file")


def settings_options(*names: str) -> Callable[[Callable], Callable]:
    """Add one flag per named setting and pass the command a built ``settings=``.

    Flags left out fall back to the environment, then to the default, which is
    exactly pydantic-settings' own precedence once we drop the unset ones.
    """
    unknown = set(names) - set(Settings.model_fields)
    if unknown:
        raise KeyError(f"no such settings: {sorted(unknown)}")

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {n: kwargs.pop(n) for n in names if kwargs.get(n) is not None}
            for n in names:
                kwargs.pop(n, None)
            return command(*args, settings=load_settings(**given), **kwargs)

        for name in reversed(names):
            wrapper = _option_for(name)(wrapper)
        return wrapper

    return decorate


def load_settings(**given: Any) -> Settings:
    """Build settings, turning a validation error into a message a person can act on."""
    try:
        return Settings(**given)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            field = ".".join(str(p) for p in e["loc"])
            lines.append(f"  --{field.replace('_', '-')} / DREAMSTREAM_{field.upper()}: {e['msg']} (got {e.get('input')!r})")
        raise click.UsageError("invalid settings:\n" + "\n".join(lines)) from None
