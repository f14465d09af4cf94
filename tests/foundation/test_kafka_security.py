"""Kafka security settings reach every client the project creates (SASL can only be checked this way here).

The embedded broker cannot do SASL (its ``--authentication`` mode failed
here), so this file asserts, statically and by construction, that every
Kafka client constructor in ``dreamstream/`` and ``streams/`` is built from
:mod:`dreamstream.kafka.security`, and that those options carry the
configured mechanism and credentials. TLS runs end to end in
``test_tls_end_to_end.py``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dreamstream.kafka.security import aiokafka_options, faust_credentials, kafka_python_options
from dreamstream.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "KafkaConsumer", "KafkaProducer",
           "KafkaAdminClient"}
OPTIONS = {"aiokafka_options", "kafka_python_options"}


def client_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for folder in ("dreamstream", "streams"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call):
                    name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                    if name in CLIENTS:
                        calls.append((f"{path.relative_to(REPO)}:{node.lineno}", node))
    return calls


def test_every_kafka_client_in_the_project_gets_the_security_options() -> None:
    calls = client_calls()
    assert len(calls) >= 10, "the scan found too few client constructors to be looking in the right place"
    missing = []
    for where, call in calls:
        spread = [kw.value for kw in call.keywords if kw.arg is None]
        if not any(isinstance(v, ast.Call) and getattr(v.func, "id", None) in OPTIONS for v in spread):
            missing.append(where)
        if any(kw.arg == "bootstrap_servers" for kw in call.keywords):
            missing.append(f"{where} (sets bootstrap_servers itself)")
    assert not missing, "Kafka clients built without dreamstream.kafka.security: " + ", ".join(missing)


def test_the_faust_app_gets_the_credentials(tmp_path: Path) -> None:
    from streams.app import app_config

    password = tmp_path / "password"
    password.write_text("s3cret\n")
    s = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
                 kafka_sasl_username="worker", kafka_sasl_password_file=password, state_dir=tmp_path)
    credentials = app_config(s)["broker_credentials"]
    assert credentials.username == "worker" and credentials.password == "s3cret"
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert app_config(Settings(state_dir=tmp_path))["broker_credentials"] is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("options", [aiokafka_options, kafka_python_options])
def test_sasl_options_carry_mechanism_user_and_the_password_from_its_file(tmp_path: Path, mechanism: str,
                                                                          options) -> None:
    password = tmp_path / "password"
    password.write_text("s3cret\n")
    got = options(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism=mechanism,
                           kafka_sasl_username="svc", kafka_sasl_password_file=password))
    assert got["security_protocol"] == "SASL_PLAINTEXT" and got["sasl_mechanism"] == mechanism
    assert got["sasl_plain_username"] == "svc" and got["sasl_plain_password"] == "s3cret"
    assert "ssl_context" not in got


@pytest.mark.parametrize("options,asynchronous", [(aiokafka_options, True), (kafka_python_options, False)])
def test_oauthbearer_reads_the_token_file_at_each_login(tmp_path: Path, options, asynchronous: bool) -> None:
    import asyncio

    token = tmp_path / "token"
    token.write_text("t1")
    got = options(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="OAUTHBEARER",
                           kafka_sasl_password_file=token))
    provider = got["sasl_oauth_token_provider"]
    read = (lambda: asyncio.run(provider.token())) if asynchronous else provider.token
    assert read() == "t1"
    token.write_text("t2")  # a rotated Secret
    assert read() == "t2"


def test_a_missing_password_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nowhere"):
        kafka_python_options(Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="svc",
                                      kafka_sasl_password_file=tmp_path / "nowhere"))


def test_tls_options_verify_the_ca_and_host_names_by_default(tmp_path: Path) -> None:
    import ssl

    s = Settings(kafka_security_protocol="SSL")
    context = aiokafka_options(s)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert faust_credentials(s).context is not None
    assert kafka_python_options(s)["ssl_check_hostname"] is True


def secret_file(tmp_path: Path, text: str = "s3cret\n", mode: int = 0o600) -> Path:
    path = tmp_path / "secret"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("settings, why", [
    (dict(kafka_ssl_cafile="ca.pem"), "KAFKA_SSL_CAFILE is set but the protocol has no TLS"),
    (dict(kafka_ssl_certfile="c.pem", kafka_ssl_keyfile="k.pem"), "KAFKA_SSL_KEYFILE is set"),
    (dict(kafka_ssl_check_hostname=False), "CHECK_HOSTNAME=false is set"),
    (dict(kafka_sasl_username="svc"), "KAFKA_SASL_USERNAME is set but the protocol has no SASL"),
    (dict(kafka_sasl_mechanism="SCRAM-SHA-512"), "MECHANISM=SCRAM-SHA-512 is set"),
    (dict(kafka_security_protocol="SSL", kafka_sasl_username="svc"), "no SASL"),
    (dict(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="svc", kafka_ssl_cafile="ca.pem"), "no TLS"),
])
def test_a_half_given_security_setting_is_refused_instead_of_falling_back_to_plaintext(settings: dict, why: str) -> None:
    """Issue 27 #5: a CA, certificate and SASL user with the default protocol connected in PLAINTEXT, silently."""
    from dreamstream.errors import UserError

    for options in (kafka_python_options, aiokafka_options, faust_credentials):
        with pytest.raises(UserError, match=why):
            options(Settings(**settings))


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("password, why", [(None, "needs DREAMSTREAM_KAFKA_SASL_PASSWORD_FILE"), ("", "is empty"),
                                           ("missing", "cannot be read")])
def test_plain_and_scram_need_a_readable_password(tmp_path: Path, protocol: str, password: str | None, why: str) -> None:
    """Issue 27 #5: SASL_SSL without a password file sent an empty password."""
    path = None if password is None else tmp_path / "nowhere" if password == "missing" else secret_file(tmp_path, "\n")
    with pytest.raises(ValueError, match=why):
        kafka_python_options(Settings(kafka_security_protocol=protocol, kafka_sasl_username="svc",
                                      kafka_sasl_password_file=path))
    with pytest.raises(ValueError, match="needs DREAMSTREAM_KAFKA_SASL_USERNAME"):
        kafka_python_options(Settings(kafka_security_protocol=protocol, kafka_sasl_password_file=secret_file(tmp_path)))


def test_a_password_file_others_can_read_is_a_warning_once(tmp_path: Path, caplog) -> None:
    import logging

    shared = secret_file(tmp_path, mode=0o644)
    s = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="svc", kafka_sasl_password_file=shared)
    with caplog.at_level(logging.WARNING, logger="dreamstream.kafka.security"):
        kafka_python_options(s)
        aiokafka_options(s)
    warnings = [r.getMessage() for r in caplog.records if "readable by" in r.getMessage()]
    assert len(warnings) == 1 and "group and others" in warnings[0] and "0644" in warnings[0]


def test_a_worker_with_half_given_security_refuses_to_start(tmp_path: Path) -> None:
    """At start, before any broker is reached: one line naming the setting."""
    from click.testing import CliRunner

    from dreamstream.cli import main

    result = CliRunner().invoke(main, ["indexer", "--index-dim", "8"],
                                env={"DREAMSTREAM_KAFKA_SSL_CAFILE": str(tmp_path / "ca.pem"),
                                     "DREAMSTREAM_BROKER": "kafka://127.0.0.1:1", "DREAMSTREAM_INDEX_DIR": str(tmp_path)})
    assert result.exit_code == 1 and "KAFKA_SSL_CAFILE is set but the protocol has no TLS" in result.output
