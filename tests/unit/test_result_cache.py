"""The results cache: bounded, least recently used, never older than the last write."""

from __future__ import annotations

import pyarrow as pa

from agentdata.result_cache import Recorder, ResultCache, params_key


def _batch(n: int, value: int = 0) -> pa.RecordBatch:
    return pa.record_batch([pa.array([value] * n, pa.int64())], names=["v"])


def test_hit_until_a_table_it_read_is_written() -> None:
    cache = ResultCache(1 << 20)
    before = cache.versions(["demo.t"])
    assert cache.put("k", _batch(1).schema, [_batch(10)], before)
    hit = cache.get("k", ["demo.t"])
    assert hit is not None and hit.batches[0].num_rows == 10
    cache.bump(["demo.other"])  # another table: still fresh
    assert cache.get("k", ["demo.t"]) is not None
    cache.bump(["demo.t"])
    assert cache.get("k", ["demo.t"]) is None
    assert cache.nbytes == 0  # the stale entry was dropped


def test_a_result_read_before_a_write_is_never_stored() -> None:
    cache = ResultCache(1 << 20)
    started = cache.versions(["demo.t"])
    cache.bump(["demo.t"])  # a write commits while the query runs
    assert not cache.put("k", _batch(1).schema, [_batch(3)], started)
    assert cache.get("k", ["demo.t"]) is None


def test_bounded_in_bytes_least_recently_used_goes_first() -> None:
    one = _batch(1000).nbytes
    cache = ResultCache(3 * one, max_entry_fraction=1.0)
    v = cache.versions([])
    for key in ("a", "b", "c"):
        assert cache.put(key, _batch(1).schema, [_batch(1000)], v)
    assert cache.get("a", []) is not None  # a is now the most recent
    assert cache.put("d", _batch(1).schema, [_batch(1000)], v)
    assert cache.get("b", []) is None and cache.get("a", []) is not None
    assert cache.nbytes <= 3 * one
    assert not cache.put("huge", _batch(1).schema, [_batch(4000)], v)


def test_zero_bytes_turns_it_off() -> None:
    cache = ResultCache(0)
    assert not cache.enabled
    assert not cache.put("k", _batch(1).schema, [_batch(1)], cache.versions([]))
    assert cache.get("k", []) is None


def test_recorder_keeps_small_streams_and_forgets_big_ones() -> None:
    small = Recorder(iter([_batch(10), _batch(10)]), limit=10_000)
    assert sum(b.num_rows for b in small) == 20
    assert small.done and small.kept is not None and len(small.kept) == 2
    big = Recorder(iter([_batch(1000), _batch(1000)]), limit=10_000)
    assert sum(b.num_rows for b in big) == 2000
    assert big.done and big.kept is None


def test_params_key_is_hashable_and_order_free_for_names() -> None:
    assert params_key({"b": 2, "a": 1}) == params_key({"a": 1, "b": 2})
    assert params_key([1, "x"]) != params_key([1, "y"])
    assert params_key(None) is None
