"""Segments of a calibrated model: conversion by source and by owner, partially pooled, and their mix.

Per stage and per dimension (source, owner), each segment's advances and losses are tallied as the
stage's are (the same stays, the same skip rules), then pooled by ``pipesim.pooling.pool_rates``: a
segment's conversion is its exact Beta-binomial posterior under the pool's fitted Beta prior, so a rep
with 5 leads sits near the pool and one with 500 near their own rate.

A model segment is a (source, owner) cell. Its conversion at a stage combines both dimensions as
independent factors on the pooled rate — mean ``m_source · m_owner / m_stage``, clipped below 1 — with
the weaker dimension's weight of evidence (the smaller ``alpha + beta``). Its share of new leads is the
cell's share of the leads created in the arrival window; its deal size is its source's log-normal fit
when the source has enough wins. For every source a cell without owner (share 0) carries the source's
own conversions: the pool an open lead goes to when its rep leaves. Open leads keep their cell.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from pipegraph.db.models import Lead, StageHistory
from pipegraph.services.metrics_sql import at
from pipesim import BetaProbability, LogNormal, Segment
from pipesim.distributions import Distribution
from pipesim.pooling import PooledRates, pool_rates

MAX_MEAN = 1 - 1e-6  # a combined conversion stays below certainty


@dataclass(frozen=True)
class SegmentRates:
    """Per stage, each segment's pooled conversion along one dimension."""

    stages: tuple[PooledRates, ...]


def pooled_by_stage(
    stage_ids: list[int], tallies_by_segment: dict[str, dict[int, tuple[int, int]]]
) -> SegmentRates:
    """``tallies_by_segment[segment][stage_id] = (advances, losses)`` → each stage's pooled rates."""
    return SegmentRates(
        tuple(
            pool_rates({name: counts.get(stage_id, (0, 0)) for name, counts in tallies_by_segment.items()})
            for stage_id in stage_ids
        )
    )


def combine(
    stage: BetaProbability, source: BetaProbability, owner: BetaProbability | None
) -> BetaProbability:
    """A cell's conversion: the source's, scaled by the owner's rate relative to the stage's."""
    if owner is None:
        return source
    mean = min(source.mean * owner.mean / max(stage.mean, 1e-9), MAX_MEAN)
    weight = min(source.alpha + source.beta, owner.alpha + owner.beta)
    return BetaProbability(max(mean * weight, 1e-9), max((1 - mean) * weight, 1e-9))


def cell_name(source: str, owner: str | None) -> str:
    label = source or "(no source)"
    return label if owner is None else f"{label} / {owner or '(no owner)'}"


async def arrivals_by_cell(
    session: AsyncSession, pipeline_id: int, as_of: datetime, window_days: float, key: Callable[[str], Any]
) -> dict[tuple[str, str], int]:
    """Leads created in the arrival window, by (source, owner email)."""
    h = StageHistory
    start = as_of - timedelta(days=window_days)
    source, owner = func.coalesce(key("source"), ""), func.coalesce(key("owner"), "")
    statement = (
        select(source, owner, func.count())
        .select_from(h)
        .join(Lead, Lead.id == h.lead_id)
        .where(
            h.pipeline_id == pipeline_id,
            h.from_stage_id.is_(None),
            h.changed_at <= at(as_of),
            h.changed_at >= at(start),
        )
        .group_by(source, owner)
    )
    return {(str(s), str(o)): int(n) for s, o, n in (await session.execute(statement)).all()}


async def won_values_by_source(
    session: AsyncSession, pipeline_id: int, as_of: datetime, limit: int
) -> dict[str, list[int]]:
    h = StageHistory
    statement = (
        select(Lead.source, Lead.value_cents)
        .select_from(h)
        .join(Lead, Lead.id == h.lead_id)
        .where(
            h.pipeline_id == pipeline_id,
            h.to_status == "WON",
            h.from_status == "OPEN",
            h.changed_at <= at(as_of),
            Lead.value_cents > 0,
        )
        .order_by(h.changed_at.desc(), h.id.desc())
        .limit(limit)
    )
    found: dict[str, list[int]] = defaultdict(list)
    for source, cents in (await session.execute(statement)).all():
        found[str(source or "")].append(int(cents))
    return found


def build_segments(
    stage_conversions: tuple[BetaProbability, ...],
    by_source: SegmentRates,
    by_owner: SegmentRates | None,
    arrivals: dict[tuple[str, str], int],
    open_cells: set[tuple[str, str]],
    deal_sizes: dict[str, Distribution],
) -> tuple[Segment, ...]:
    """The model's cells: every cell with arrivals or open leads, plus one owner-less cell per source."""
    total = sum(arrivals.values())
    cells = sorted(set(arrivals) | open_cells)
    sources = sorted({source for source, _ in cells})

    def conversions(source: str, owner: str | None) -> tuple[BetaProbability, ...]:
        return tuple(
            combine(
                stage,
                by_source.stages[i].rate(source),
                None if owner is None or by_owner is None else by_owner.stages[i].rate(owner),
            )
            for i, stage in enumerate(stage_conversions)
        )

    found = [
        Segment(
            cell_name(source, owner if by_owner is not None else None),
            arrivals.get((source, owner), 0) / total if total else 0.0,
            conversions(source, owner if by_owner is not None else None),
            deal_sizes.get(source),
            source,
            owner if by_owner is not None else None,
        )
        for source, owner in cells
    ]
    if by_owner is not None:
        found += [
            Segment(cell_name(s, None), 0.0, conversions(s, None), deal_sizes.get(s), s) for s in sources
        ]
    return _merged(found, total)


def _merged(found: list[Segment], total: int) -> tuple[Segment, ...]:
    """One segment per name (cells collapse when owners are not modelled); shares renormalised."""
    merged: dict[str, Segment] = {}
    for segment in found:
        if segment.name in merged:
            kept = merged[segment.name]
            merged[segment.name] = Segment(
                kept.name,
                kept.share + segment.share,
                kept.conversions,
                kept.deal_size,
                kept.source,
                kept.owner,
            )
        else:
            merged[segment.name] = segment
    shares = sum(segment.share for segment in merged.values())
    if shares <= 0:  # no arrivals in the window: spread evenly so the mix is still a mix
        even = 1 / len(merged)
        return tuple(
            Segment(s.name, even, s.conversions, s.deal_size, s.source, s.owner) for s in merged.values()
        )
    return tuple(
        Segment(s.name, s.share / shares, s.conversions, s.deal_size, s.source, s.owner)
        for s in merged.values()
    )


def lognormal_deal(values_cents: list[int], minimum: int) -> Distribution | None:
    """A log-normal by maximum likelihood on won values (cents); None with fewer than ``minimum``."""
    if len(values_cents) < minimum:
        return None
    logs = np.log(np.asarray(values_cents, dtype=np.float64) / 100)
    mu, sigma = float(np.mean(logs)), float(np.std(logs))
    mean = float(np.exp(mu + sigma**2 / 2))
    sd = mean * float(np.sqrt(np.expm1(sigma**2)))
    return LogNormal(mean, max(sd, 1e-9 * mean))
