"""The collector tuning: objects alive at that moment leave the collector's walk, nothing alive is lost, cycles still go."""
from __future__ import annotations

import gc
import weakref

from streams.ops.gc_tuning import YOUNG_THRESHOLD, tune_collector


class Node:
    """A container object the cyclic collector tracks."""


def test_tuning_takes_live_objects_out_of_the_walk_collects_cycles_first_and_spaces_young_passes() -> None:
    kept = Node()
    cycle = Node()
    cycle.self = cycle  # garbage only the cyclic collector can free
    dead = weakref.ref(cycle)
    del cycle
    before = gc.get_threshold()
    try:
        tune_collector()
        assert dead() is None, "the collection before the freeze must free cyclic garbage, or it leaks for good"
        assert gc.get_freeze_count() > 0 and not any(o is kept for o in gc.get_objects())
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
        later = Node()
        later.self = later
        again = weakref.ref(later)
        del later
        gc.collect()
        assert again() is None, "cycles made after the freeze are still collected"
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_fewer_young_passes_holds_only_inside_the_block_even_when_it_raises() -> None:
    from streams.ops.gc_tuning import fewer_young_passes

    before = gc.get_threshold()
    try:
        with fewer_young_passes():
            assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
            raise KeyError("a reader that fails")
    except KeyError:
        pass
    assert gc.get_threshold() == before
