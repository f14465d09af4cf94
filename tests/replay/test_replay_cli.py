"""`dreamstream replay` as a person runs it, through the private broker."""
from __future__ import annotations

from click.testing import CliRunner

from dreamstream import codec
from dreamstream.cli import main
from dreamstream.topics import DLQ, WATCH_EVENTS, create_topics


def test_replay_command_streams_the_heldout_part_then_redrives(make_settings, tmp_path, write_inter, mini_rows,
                                                               read_topic):
    settings = make_settings(partitions=3)
    create_topics(settings)
    data = write_inter(tmp_path / "data", mini_rows)
    common = ["--broker", settings.broker, "--topic-prefix", settings.topic_prefix, "--no-progress"]
    result = CliRunner().invoke(main, ["replay", *common, "--data-dir", str(data), "--part", "heldout",
                                       "--speedup", "1e9"])
    assert result.exit_code == 0, result.output
    import re

    sent = int(re.search(r"^replayed (\d+) event", result.output, flags=re.M).group(1))
    assert 0 < sent < len(mini_rows)
    records = read_topic(settings, settings.topic(WATCH_EVENTS), sent)
    assert len(records) == sent

    bad = CliRunner().invoke(main, ["replay", *common, "--data-dir", str(data), "--rate", "5", "--speedup", "2"])
    assert bad.exit_code == 2 and "not both" in bad.output

    from kafka import KafkaProducer

    prod = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    letter = codec.dead_letter("unknown video", settings.topic(WATCH_EVENTS), 0, 1, b"u9", b"\x80")
    prod.send(settings.topic(DLQ), value=codec.pack(letter))
    prod.flush()
    prod.close()
    result = CliRunner().invoke(main, ["replay", *common, "--dlq"])
    assert result.exit_code == 0 and "re-drove 1 dead letter" in result.output, result.output


def test_replay_dlq_names_the_namespaces_that_would_see_the_events_again_and_needs_yes(tmp_path):
    """Refused before any broker is reached: the inputs are shared, the other namespaces would apply them twice."""
    from dreamstream.serving import switch_serving

    index = tmp_path / "index"
    index.mkdir()
    switch_serving(index, "v2")
    result = CliRunner().invoke(main, ["replay", "--dlq", "--broker", "kafka://127.0.0.1:1", "--index-dir", str(index),
                                       "--state-dir", str(tmp_path / "state"), "--no-progress"])
    assert result.exit_code == 2 and "namespace(s) v2 will see each event again" in result.output, result.output
    assert "--yes" in result.output
