"""The Kafka security settings as each client library wants them: aiokafka, kafka-python and Faust.

One place turns ``DREAMSTREAM_KAFKA_*`` into TLS contexts and SASL
credentials, so every client the project creates (the worker's Faust app,
its feed, item follower and changelog producer; the indexer, the tools and
the ranking-service client) connects the same way. Secrets are read from
files (``..._PASSWORD_FILE``), so they can come from a mounted Secret and
never sit in an environment variable or a command line.
"""
from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from dreamstream.kafka import redaction
from dreamstream.settings import Settings


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
            "sasl_plain_password": _read(settings.kafka_sasl_password_file, "SASL password") or ""}


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for every ``AIOKafkaConsumer``/``AIOKafkaProducer``/admin client: bootstrap and security."""
    return _options(settings, asynchronous=True)


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for every kafka-python ``KafkaConsumer``/``KafkaProducer``/``KafkaAdminClient``."""
    return _options(settings, asynchronous=False)


def _options(settings: Settings, asynchronous: bool) -> dict[str, Any]:
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

    context = ssl_context(settings)
    if uses_sasl(settings):
        if settings.kafka_sasl_mechanism == "OAUTHBEARER":
            from faust.auth import OAuthCredentials

            return OAuthCredentials(oauth_cb=file_token_provider(settings.kafka_sasl_password_file, True),
                                    ssl_context=context)
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=_read(settings.kafka_sasl_password_file, "SASL password") or "",
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=context)
    if context is not None:
        return faust.SSLCredentials(context)
    return None
