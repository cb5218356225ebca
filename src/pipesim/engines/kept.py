"""The open leads' in-horizon wins and revenue of a block, kept per process.

``forecast`` and ``leads_needed`` of one model, seed and trials (the dashboard's forecast view asks both
at once, and the server answers them one after the other in one worker) draw the open cohorts from the
same streams: their wins and revenue are the same arrays in both. The first question computes them, the
second reads them here. The key holds everything they depend on — the stages, horizon, cohorts and deal
law, the seed and block, and a digest of the block's per-trial draws — so a kept entry is what computing
again would give.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np
from numpy.typing import NDArray

from pipesim.distributions import Array
from pipesim.engines.common import TrialDraws
from pipesim.spec import Model

KEPT = 4  # blocks kept: both blocks of one view's questions (a few MiB each at hundreds of cohorts)

Existing = list[tuple[NDArray[np.int64], Array]]  # per open cohort: in-horizon wins and their revenue

_kept: OrderedDict[Hashable, Existing] = OrderedDict()
_counts = {"hits": 0, "misses": 0}
_lock = threading.Lock()  # blocks may run on threads of one process


def key(model: Model, seed: int, block: int, draws: TrialDraws) -> Hashable | None:
    """What the open cohorts' draws depend on; ``None`` when part of it cannot be hashed."""
    digest = hashlib.blake2b(digest_size=16)
    for array in (draws.p, draws.win_u[:, 1:], draws.time_scale, draws.deal_scale):
        digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(repr(array.shape).encode())
    found = (model.stages, model.horizon_days, model.open_leads, model.deal_size, seed, block)
    try:
        hash(found)
    except TypeError:
        return None
    return (*found, digest.digest())


def get(found: Hashable | None) -> Existing | None:
    if found is None:
        return None
    with _lock:
        existing = _kept.get(found)
        if existing is None:
            _counts["misses"] += 1
            return None
        _counts["hits"] += 1
        _kept.move_to_end(found)
        return existing


def put(found: Hashable | None, existing: Existing) -> None:
    if found is None:
        return
    for inside, gained in existing:  # shared by later readers: nobody may write to them
        inside.flags.writeable = False
        gained.flags.writeable = False
    with _lock:
        _kept[found] = existing
        while len(_kept) > KEPT:
            _kept.popitem(last=False)


def counts() -> tuple[int, int]:
    """Hits and misses so far, for tests."""
    return _counts["hits"], _counts["misses"]


def clear() -> None:
    with _lock:
        _kept.clear()
