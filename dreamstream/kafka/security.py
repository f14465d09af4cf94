"""The Kafka security settings as each client library wants them: aiokafka, kafka-python and Faust.

One place turns ``DREAMSTREAM_KAFKA_*`` into TLS contexts and SASL
credentials, so every client the project creates (the worker's Faust app,
its feed, item follower and changelog producer; the indexer, the tools and
the ranking-service client) connects the same way. Secrets are read from
files (``..._PASSWORD_FILE``), so they can come from a mounted Secret and
never sit in an environment variable or a command line.
"""
from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from typing import Any

from dreamstream.errors import UserError
from dreamstream.kafka import redaction
from dreamstream.settings import Settings

log = logging.getLogger(__name__)


class SecuritySettingsError(UserError, ValueError):
    """Kafka security settings that would not do what they say (a ValueError too, as the file readers raised before)."""


_warned: set[str] = set()  # password files already warned about: once per process, not once per client


def _read(path: Path | None, what: str) -> str | None:
    """A secret from its file, registered for redaction from every log record before anyone can log it."""
    if path is None:
        return None
    try:
        secret = Path(path).read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read the {what} file {path}: {getattr(err, 'strerror', None) or err}") from None
    redaction.register(secret)
    return secret


def uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def check_security(settings: Settings) -> None:
    """All or nothing: refuse, with every reason at once, security settings that would not do what they say.

    Called before every client is built (so before a process does anything
    on the broker): a CA or certificate with a protocol without TLS, a SASL
    user or password with one without SASL (either would fall back to
    plaintext without a word), a PLAIN/SCRAM login without a user or a
    readable, non-empty password file (it sent an empty password), an
    OAUTHBEARER login without its token file, a TLS file that cannot be
    read. A password file readable by group or others is a warning.
    """
    problems = [*unused_settings(settings), *_incomplete(settings)]
    if problems:
        raise SecuritySettingsError(f"Kafka security settings refused (protocol {settings.kafka_security_protocol}): "
                        + "; ".join(problems) + " (docs/production.md#security)")
    for path in (settings.kafka_sasl_password_file, settings.kafka_ssl_password_file):
        if path is not None:
            _warn_if_shared(Path(path))


def unused_settings(settings: Settings) -> list[str]:
    """Settings of a mechanism the protocol does not use."""
    problems = []
    if not uses_tls(settings):
        tls = {"DREAMSTREAM_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
               "DREAMSTREAM_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
               "DREAMSTREAM_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
               "DREAMSTREAM_KAFKA_SSL_PASSWORD_FILE": settings.kafka_ssl_password_file,
               "DREAMSTREAM_KAFKA_SSL_CHECK_HOSTNAME=false": None if settings.kafka_ssl_check_hostname else True}
        problems += [f"{name} is set but the protocol has no TLS (use SSL or SASL_SSL)"
                     for name, value in tls.items() if value is not None]
    if not uses_sasl(settings):
        sasl = {"DREAMSTREAM_KAFKA_SASL_USERNAME": settings.kafka_sasl_username or None,
                "DREAMSTREAM_KAFKA_SASL_PASSWORD_FILE": settings.kafka_sasl_password_file,
                f"DREAMSTREAM_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism}":
                    None if settings.kafka_sasl_mechanism == "PLAIN" else True}
        problems += [f"{name} is set but the protocol has no SASL (use SASL_PLAINTEXT or SASL_SSL)"
                     for name, value in sasl.items() if value is not None]
    return problems


def _incomplete(settings: Settings) -> list[str]:
    """What the protocol's mechanisms need and do not have."""
    problems = []
    if uses_sasl(settings):
        what = "OAUTHBEARER token" if settings.kafka_sasl_mechanism == "OAUTHBEARER" else "SASL password"
        if settings.kafka_sasl_mechanism != "OAUTHBEARER" and not settings.kafka_sasl_username:
            problems.append(f"{settings.kafka_sasl_mechanism} needs DREAMSTREAM_KAFKA_SASL_USERNAME")
        if settings.kafka_sasl_password_file is None:
            problems.append(f"{settings.kafka_sasl_mechanism} needs DREAMSTREAM_KAFKA_SASL_PASSWORD_FILE (the {what})")
        else:
            problems += _unreadable(settings.kafka_sasl_password_file, what, must_hold_text=True)
    if uses_tls(settings):
        for path, what in ((settings.kafka_ssl_cafile, "CA"), (settings.kafka_ssl_certfile, "client certificate"),
                           (settings.kafka_ssl_keyfile, "client key"),
                           (settings.kafka_ssl_password_file, "client key password")):
            if path is not None:
                problems += _unreadable(path, what, must_hold_text=what == "client key password")
        if settings.kafka_ssl_keyfile is not None and settings.kafka_ssl_certfile is None:
            problems.append("DREAMSTREAM_KAFKA_SSL_KEYFILE needs DREAMSTREAM_KAFKA_SSL_CERTFILE (the certificate it signs)")
        if settings.kafka_ssl_password_file is not None and settings.kafka_ssl_certfile is None:
            problems.append("DREAMSTREAM_KAFKA_SSL_PASSWORD_FILE needs DREAMSTREAM_KAFKA_SSL_CERTFILE")
    return problems


def _unreadable(path: Path, what: str, must_hold_text: bool) -> list[str]:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return [f"the {what} file {path} cannot be read ({err.strerror})"]
    if must_hold_text and not data.strip():
        return [f"the {what} file {path} is empty"]
    return []


def _warn_if_shared(path: Path) -> None:
    """Warn (once) about a secret file that other users can read."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o077 and str(path) not in _warned:
        _warned.add(str(path))
        log.warning("secret file %s is readable by %s (mode %04o); chmod 0400 it (a Kubernetes Secret mounted for an "
                    "fsGroup needs 0440)", path, "group and others" if mode & 0o007 and mode & 0o070 else
                    "others" if mode & 0o007 else "its group", mode)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of every client (None without TLS): CA, optional client certificate, host name check."""
    if not uses_tls(settings):
        return None
    context = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(str(settings.kafka_ssl_certfile),
                                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
                                password=_read(settings.kafka_ssl_password_file, "TLS key password"))
    return context


def _token(path: Path | None) -> str:
    value = _read(path, "OAUTHBEARER token")
    if not value:
        raise ValueError("DREAMSTREAM_KAFKA_SASL_PASSWORD_FILE must hold the OAUTHBEARER token")
    return value


def file_token_provider(path: Path | None, asynchronous: bool) -> Any:
    """OAUTHBEARER: the bearer token read from a file at every login (a rotated Secret is picked up).

    Each library checks the provider's type, so it subclasses that
    library's ``AbstractTokenProvider`` (aiokafka awaits ``token()``,
    kafka-python calls it).
    """
    if asynchronous:
        from aiokafka.abc import AbstractTokenProvider as AsyncBase

        class AsyncFileTokenProvider(AsyncBase):
            async def token(self) -> str:
                return _token(path)

        return AsyncFileTokenProvider()
    from kafka.net.sasl.oauth import AbstractTokenProvider as SyncBase

    class FileTokenProvider(SyncBase):
        def token(self) -> str:
            return _token(path)

    return FileTokenProvider()


def _sasl(settings: Settings, asynchronous: bool) -> dict[str, Any]:
    if not uses_sasl(settings):
        return {}
    mechanism = settings.kafka_sasl_mechanism
    if mechanism == "OAUTHBEARER":
        provider = file_token_provider(settings.kafka_sasl_password_file, asynchronous)
        return {"sasl_mechanism": mechanism, "sasl_oauth_token_provider": provider}
    return {"sasl_mechanism": mechanism, "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": _read(settings.kafka_sasl_password_file, "SASL password")}


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for every ``AIOKafkaConsumer``/``AIOKafkaProducer``/admin client: bootstrap and security."""
    return _options(settings, asynchronous=True)


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for every kafka-python ``KafkaConsumer``/``KafkaProducer``/``KafkaAdminClient``."""
    return _options(settings, asynchronous=False)


def _options(settings: Settings, asynchronous: bool) -> dict[str, Any]:
    check_security(settings)
    options: dict[str, Any] = {"bootstrap_servers": settings.bootstrap_servers,
                               "security_protocol": settings.kafka_security_protocol}
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
        if not asynchronous:  # kafka-python checks host names itself; aiokafka takes the context's setting
            options["ssl_check_hostname"] = settings.kafka_ssl_check_hostname
    return {**options, **_sasl(settings, asynchronous)}


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` (None for PLAINTEXT): its own SSL/SASL credential types over the same context."""
    import faust

    check_security(settings)
    context = ssl_context(settings)
    if uses_sasl(settings):
        if settings.kafka_sasl_mechanism == "OAUTHBEARER":
            from faust.auth import OAuthCredentials

            return OAuthCredentials(oauth_cb=file_token_provider(settings.kafka_sasl_password_file, True),
                                    ssl_context=context)
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=_read(settings.kafka_sasl_password_file, "SASL password"),
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=context)
    if context is not None:
        return faust.SSLCredentials(context)
    return None
