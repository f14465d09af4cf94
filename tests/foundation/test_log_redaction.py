"""Issue 27 #4: no secret reaches a log handler, at any level, whoever logs it (kafka-python's admin client did)."""
from __future__ import annotations

import logging

import pytest

from dreamstream.broker import free_port
from dreamstream.kafka.security import kafka_python_options
from dreamstream.logs import setup_logging
from dreamstream.settings import Settings

SENTINEL = "s3ntinel-PaSs-27"


def test_a_sasl_password_never_reaches_a_handler_at_debug_level(tmp_path, capfd) -> None:
    secret = tmp_path / "sasl-password"
    secret.write_text(SENTINEL + "\n")
    secret.chmod(0o600)
    settings = Settings(broker=f"kafka://127.0.0.1:{free_port()}", kafka_security_protocol="SASL_PLAINTEXT",
                        kafka_sasl_username="dreamstream", kafka_sasl_password_file=secret)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # setup_logging binds a handler to capfd's stream, closed after this test
    setup_logging("debug")
    try:
        from kafka import KafkaAdminClient

        with pytest.raises(Exception):  # nobody listens there; the configuration is logged before connecting
            KafkaAdminClient(**kafka_python_options(settings), bootstrap_timeout_ms=300, request_timeout_ms=300)
        log = logging.getLogger("faust.transport")  # a logger the worker's libraries own, not ours
        log.debug("credentials %r", {"sasl_plain_password": SENTINEL})
        log.info("connect password=%s", SENTINEL)
        try:
            raise RuntimeError(f"login failed for {SENTINEL}")
        except RuntimeError:
            logging.getLogger("streams.worker").exception("boom")
        logging.getLogger("x").warning("token: %s", "not-registered-but-named-42")
    finally:
        root.handlers[:] = handlers  # later tests' log lines must not go to a closed stream ('I/O operation on closed file')
        root.setLevel(level)
    err = capfd.readouterr().err
    assert "Starting KafkaAdminClient with configuration" in err and "sasl_plain_password" in err
    assert "login failed for ***" in err and "RuntimeError" in err
    assert SENTINEL not in err and "not-registered-but-named-42" not in err


@pytest.mark.parametrize("text, kept", [
    ("password=None sasl_plain_password: None", "password=None sasl_plain_password: None"),
    ("tokens_total=5 applied=3", "tokens_total=5 applied=3"),
    ("{'ssl_password': b'abc123'}", "{'ssl_password': ***}"),
    ('"client_secret": "xyz-987"', '"client_secret": ***'),
])
def test_values_of_secret_named_keys_are_masked_and_nothing_else(text: str, kept: str) -> None:
    from dreamstream.kafka.redaction import redact

    assert redact(text) == kept


def test_a_redacted_record_formats_through_modes_formatter() -> None:
    """A Faust worker's handler is mode's ExtensionFormatter: a redacted record must format there as a plain line."""
    from mode.utils.logging import ExtensionFormatter

    from dreamstream.kafka.redaction import install

    install()
    record = logging.getLogger("streams.worker").makeRecord(
        "streams.worker", logging.INFO, __file__, 1, "item table caught up items=%d password=%s", (3, SENTINEL), None)
    line = ExtensionFormatter(fmt="msg=%(message)s").format(record)
    assert line == "msg=item table caught up items=3 password=***"
