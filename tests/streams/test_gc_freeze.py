"""The startup freeze: objects alive at that moment leave the collector's walk, and nothing alive is lost."""
from __future__ import annotations

import gc
import weakref

from streams.gc_freeze import freeze_startup_objects


class Node:
    """A container object the cyclic collector tracks."""


def test_freeze_takes_live_objects_out_of_the_walk_and_collects_cycles_first():
    kept = Node()
    cycle = Node()
    cycle.self = cycle  # garbage only the cyclic collector can free
    dead = weakref.ref(cycle)
    del cycle
    try:
        freeze_startup_objects()
        assert dead() is None, "the collection before the freeze must free cyclic garbage, or it leaks for good"
        assert gc.get_freeze_count() > 0 and not any(o is kept for o in gc.get_objects())
        later = Node()
        later.self = later
        again = weakref.ref(later)
        del later
        gc.collect()
        assert again() is None, "cycles made after the freeze are still collected"
    finally:
        gc.unfreeze()
