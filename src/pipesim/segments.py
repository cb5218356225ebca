"""What-if by segment: move new leads between sources, take a rep away.

Both return a new model for a paired :func:`pipesim.compare` with the original; both refuse, naming the
argument, what the model cannot express (an unknown source or rep, a fraction outside [0, 1]).

- :func:`shift_source` moves ``fraction`` of the new leads of one source to another. The moved share is
  spread over the receiving source's segments in proportion to their shares (its mix of owners), so
  "20 % of cold outreach to referral" keeps referral's own owner mix.
- :func:`without_owner` takes a rep away: their share of new leads is spread over the other segments in
  proportion to their shares, and their open leads go to the pool — the segment of the same source with
  no owner when the model has one, else the stages' own conversions.
"""

from __future__ import annotations

from dataclasses import replace

from pipesim.errors import QuestionError
from pipesim.spec import Model, Segment


def _sources(model: Model) -> list[str]:
    return sorted({segment.source for segment in model.segments if segment.source is not None})


def _owners(model: Model) -> list[str]:
    return sorted({segment.owner for segment in model.segments if segment.owner is not None})


def shift_source(model: Model, from_source: str, to_source: str, fraction: float) -> Model:
    """``fraction`` of the new leads of ``from_source`` arrive as ``to_source`` leads instead."""
    if not 0 <= fraction <= 1:
        raise QuestionError(f"fraction: must be in [0, 1], got {fraction}")
    sources = _sources(model)
    for name, value in (("from_source", from_source), ("to_source", to_source)):
        if value not in sources:
            raise QuestionError(f"{name}: unknown source {value!r}; the model's sources are {sources}")
    giving = [s for s in model.segments if s.source == from_source]
    taking = [s for s in model.segments if s.source == to_source and s.owner is not None]
    taking = taking or [s for s in model.segments if s.source == to_source]
    moved = fraction * sum(s.share for s in giving)
    receiving = sum(s.share for s in taking)
    if moved > 0 and from_source != to_source:
        if receiving <= 0:
            raise QuestionError(f"to_source: source {to_source!r} has no share of new leads to follow")
        shares = {
            s.name: s.share * (1 - fraction)
            if s.source == from_source
            else s.share + (moved * s.share / receiving if s in taking else 0.0)
            for s in model.segments
        }
        return _with_shares(model, shares)
    return model


def without_owner(model: Model, owner: str) -> Model:
    """``owner`` leaves: no new leads of theirs, their open leads reassigned to the pool."""
    owners = _owners(model)
    if owner not in owners:
        raise QuestionError(f"owner: unknown owner {owner!r}; the model's owners are {owners}")
    leaving = {s.name for s in model.segments if s.owner == owner}
    remaining = sum(s.share for s in model.segments if s.name not in leaving)
    if remaining <= 0:
        raise QuestionError(f"owner: {owner!r} takes every new lead; nobody is left to take them")
    shares = {s.name: 0.0 if s.name in leaving else s.share / remaining for s in model.segments}
    pool: dict[str | None, str] = {
        s.source: s.name for s in model.segments if s.owner is None and s.source is not None
    }
    by_name = {s.name: s for s in model.segments}
    cohorts = tuple(
        replace(cohort, segment=pool.get(by_name[cohort.segment].source))
        if cohort.segment in leaving
        else cohort
        for cohort in model.open_leads
    )
    return replace(_with_shares(model, shares), open_leads=cohorts)


def _with_shares(model: Model, shares: dict[str, float]) -> Model:
    total = sum(shares.values())
    segments: tuple[Segment, ...] = tuple(
        replace(segment, share=shares[segment.name] / total) for segment in model.segments
    )
    return replace(model, segments=segments)
