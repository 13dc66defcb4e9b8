from __future__ import annotations

import itertools
import re
import threading
import time
import uuid

from sluice.audit.stamps import _Ids, format_timestamp, new_id, utc_now, utc_now_text


def _expected_id(ids: _Ids, count: int) -> str:
    """The text uuid.UUID gives for the id of counter value `count`."""
    high = int(ids.head.replace("-", ""), 16)
    low = (0b10 << 62) | (count & ((1 << 62) - 1))
    return str(uuid.UUID(int=high << 64 | low))


def test_ids_are_version_8_uuids_in_uuids_own_text() -> None:
    for text in (new_id() for _ in range(1000)):
        parsed = uuid.UUID(text)
        assert parsed.version == 8
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
    assert len({new_id() for _ in range(10_000)}) == 10_000


def test_ids_follow_the_counter_across_its_wraps() -> None:
    ids = _Ids()
    for start in ((1 << 48) - 3, (1 << 62) - 2, 5):
        ids.counter = itertools.count(start)
        for count in range(start, start + 6):
            assert ids.next() == _expected_id(ids, count)


def test_a_reseeded_process_draws_new_bits() -> None:
    ids = _Ids()
    before = ids.next()
    ids.seed()
    after = ids.next()
    assert before[:23] != after[:23]  # the random head (fork safety relies on it)


def test_ids_from_threads_across_a_wrap_pair_each_group_with_its_own_count() -> None:
    ids = _Ids()
    start = (1 << 48) - 2000  # the fourth group changes halfway through
    ids.counter = itertools.count(start)
    made: list[str] = []

    def work() -> None:
        made.extend(ids.next() for _ in range(500))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 4000
    expected = {_expected_id(ids, count) for count in range(start, start + 4000)}
    assert set(made) == expected


def test_the_text_timestamp_is_the_datetime_one_across_a_second() -> None:
    """utc_now_text() lies between format_timestamp(utc_now()) taken before and
    after it, in the same format, also when the second it keeps turns over."""
    shape = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
    first = utc_now_text()
    deadline = time.monotonic() + 2.5
    while True:
        before = format_timestamp(utc_now())
        text = utc_now_text()
        after = format_timestamp(utc_now())
        assert shape.fullmatch(text), text
        assert before <= text <= after
        if text[:19] != first[:19] and text[:19] == before[:19]:
            break  # a new second, made by the text path itself
        assert time.monotonic() < deadline, "the second never turned over"
