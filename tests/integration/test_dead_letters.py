"""Every kind of bad input becomes a dead letter; the valid events around it are all predicted."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable

import orjson
import pytest

from streamapp.scenarios.bad import bad_messages
from streamapp.settings import Settings
from streamapp.worker import Worker
from tests.conftest import assert_valid, produce_raw, read_topic

pytestmark = pytest.mark.integration


def test_bad_input_goes_to_the_dead_letter_topic_and_the_loop_goes_on(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(partitions=1)
    topics = settings.topics
    valid = [
        (
            topics.features,
            f"v{i}".encode(),
            orjson.dumps({"event_id": f"v{i}", "features": [float(i % 16)] * 64}),
        )
        for i in range(60)
    ]
    bad = bad_messages(64)
    records = []
    for i, (kind, key, value, _) in enumerate(bad):
        records += valid[i * 5 : i * 5 + 5]
        records.append((topics.features if kind == "features" else topics.feedback, key, value))
    records += valid[len(bad) * 5 :]
    records.append((topics.features, b"v3", valid[3][2]))  # the same event again
    produce_raw(settings, records)

    with Worker(settings) as worker, caplog.at_level(logging.WARNING, "streamapp.publish"):
        worker.run(count=len(records), timeout=60)
        stats = worker.pipeline.stats
    # every dead letter is logged with where it came from
    logged = [r for r in caplog.records if r.getMessage().startswith("dead-lettered")]
    assert {(r.topic, r.partition) for r in logged} <= {(topics.features, 0), (topics.feedback, 0)}
    assert all(f"[0]@{r.offset} ({r.reason})" in r.getMessage() for r in logged)
    assert (
        len(logged)
        + sum(
            int(r.getMessage().split()[1])
            for r in caplog.records
            if r.getMessage().startswith("and ")
        )
        == len(bad) + 1
    )

    predictions = read_topic(settings, topics.predictions, expected=60)
    assert sorted(doc["event_id"] for _, doc in predictions) == sorted(f"v{i}" for i in range(60))

    dead = read_topic(settings, topics.dead_letter, expected=len(bad) + 1)
    expected_reasons = sorted([reason for *_, reason in bad] + ["duplicate_event"])
    assert sorted(doc["error"]["type"] for _, doc in dead) == expected_reasons
    assert dict(stats.dead_letters) == dict(
        (reason, expected_reasons.count(reason)) for reason in set(expected_reasons)
    )
    for key, doc in dead:
        assert_valid("dead-letter", doc)
        assert doc["error"]["message"]
        assert doc["source"]["topic"] in (topics.features, topics.feedback)
        original = next(r for r in records if r[1] == key)
        if doc["error"]["type"] == "duplicate_event":
            on_features = [r for r in records if r[0] == topics.features]
            assert doc["source"] == {
                "topic": topics.features,
                "partition": 0,
                "offset": len(on_features) - 1,
            }  # and, as every dead letter, the input itself (it carried none)
        payload = (
            base64.b64decode(doc["payload"])
            if doc["payload_encoding"] == "base64"
            else doc["payload"].encode()
        )
        # the original bytes (for replay after a fix), or their first bytes when large
        assert doc["payload_size"] == len(original[2])
        assert doc["payload_sha256"] == hashlib.sha256(original[2]).hexdigest()
        assert doc["payload_truncated"] is (
            len(original[2]) > settings.input.dead_letter_payload_bytes
        )
        if doc["payload_truncated"]:
            assert payload == original[2][: settings.input.dead_letter_payload_bytes]
        else:
            assert payload == original[2]
