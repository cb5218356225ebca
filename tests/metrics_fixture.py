"""A small pipeline history with explicit timestamps, for hand-checked metrics.

Window: January 2024, ``[T(0), T(31))``; ``now`` is T(40) (10 February). ``T(d)`` is d days after
1 January 2024 00:00 UTC. Stages, in order (post-sale last):

    S0 Lead In     probability -    target 5 days
    S1 Qualified   probability 0.4  target 10 days
    S2 Proposal    probability -    no target
    S3 Closing     probability 0.8  target 3 days
    S4 Onboarding  post-sale

Leads (value in cents; owner; source; qualification score) and their history:

    A 100000 Ada web 100      T0 S0, T2 →S1, T5 →S2, T9 →S3, T10 won, T12 →S4 (won, post-sale)
    B 200000 Ada web 25       T1 S0, T4 →S2 (skips S1), T6 lost
    C 300000 Bo referral 50   T2 S0, T3 →S1, T7 →S2, T8 →S1 (backwards), T10 lost, T12 reopened, T15 lost
    D 400000 Bo web 75        T-10 S0, T-5 →S1, T4 →S3 (skips S2); open
    E 500000 Ada referral 0   T20 S0; open
    F  50000 - web 0          T25 created straight into S1; open
    G 600000 Bo referral 100  T-20 S2, T-15 won (all before the window)
    H 700000 Bo web 50        T28 S0, T35 →S1 (after the window, before now); open
    I 800000 Ada referral 100 T6 S0, T8.5 →S3 (skips two), T14 won

A second pipeline, "Empty", has stages and no leads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipegraph.db.models import Lead, LeadStatus, Pipeline, Stage, StageHistory, User
from pipegraph.db.session import Store
from pipegraph.db.stays import derive_stays

ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
START = ORIGIN
END = datetime(2024, 2, 1, tzinfo=UTC)
NOW = datetime(2024, 2, 10, tzinfo=UTC)

OPEN, WON, LOST = LeadStatus.OPEN, LeadStatus.WON, LeadStatus.LOST


def T(days: float) -> datetime:
    return ORIGIN + timedelta(days=days)


@dataclass(frozen=True)
class Fixture:
    pipeline_id: int
    empty_pipeline_id: int
    stage_ids: tuple[int, ...]
    ada_id: int
    bo_id: int


# (lead, value, owner, source, score, history as (day, from stage, to stage, from status, to status))
_H = tuple[float, int | None, int, LeadStatus | None, LeadStatus]
_LEADS: list[tuple[str, int, str | None, str, int, list[_H]]] = [
    ("A", 100000, "Ada", "web", 100, [
        (0, None, 0, None, OPEN), (2, 0, 1, OPEN, OPEN), (5, 1, 2, OPEN, OPEN), (9, 2, 3, OPEN, OPEN),
        (10, 3, 3, OPEN, WON), (12, 3, 4, WON, WON),
    ]),
    ("B", 200000, "Ada", "web", 25, [(1, None, 0, None, OPEN), (4, 0, 2, OPEN, OPEN), (6, 2, 2, OPEN, LOST)]),
    ("C", 300000, "Bo", "referral", 50, [
        (2, None, 0, None, OPEN), (3, 0, 1, OPEN, OPEN), (7, 1, 2, OPEN, OPEN), (8, 2, 1, OPEN, OPEN),
        (10, 1, 1, OPEN, LOST), (12, 1, 1, LOST, OPEN), (15, 1, 1, OPEN, LOST),
    ]),
    ("D", 400000, "Bo", "web", 75, [
        (-10, None, 0, None, OPEN), (-5, 0, 1, OPEN, OPEN), (4, 1, 3, OPEN, OPEN),
    ]),
    ("E", 500000, "Ada", "referral", 0, [(20, None, 0, None, OPEN)]),
    ("F", 50000, None, "web", 0, [(25, None, 1, None, OPEN)]),
    ("G", 600000, "Bo", "referral", 100, [(-20, None, 2, None, OPEN), (-15, 2, 2, OPEN, WON)]),
    ("H", 700000, "Bo", "web", 50, [(28, None, 0, None, OPEN), (35, 0, 1, OPEN, OPEN)]),
    ("I", 800000, "Ada", "referral", 100, [
        (6, None, 0, None, OPEN), (8.5, 0, 3, OPEN, OPEN), (14, 3, 3, OPEN, WON),
    ]),
]  # fmt: skip

_STAGES = [
    ("Lead In", None, 5, False),
    ("Qualified", 0.4, 10, False),
    ("Proposal", None, None, False),
    ("Closing", 0.8, 3, False),
    ("Onboarding", None, None, True),
]


def _stage(pipeline_id: int, position: int) -> Stage:
    name, probability, target_days, is_post_sale = _STAGES[position]
    return Stage(
        pipeline_id=pipeline_id,
        name=name,
        position=position,
        probability=probability,
        target_days=target_days,
        is_post_sale=is_post_sale,
    )


async def load(store: Store) -> Fixture:
    """Insert the fixture in one write transaction."""
    async with store.write() as session:
        pipeline = Pipeline(name="Fixture", created_at=T(-30), updated_at=T(-30))
        empty = Pipeline(name="Empty", created_at=T(-30), updated_at=T(-30))
        ada = User(name="Ada", email="ada@example.com", created_at=T(-30))
        bo = User(name="Bo", email="bo@example.com", created_at=T(-30))
        session.add_all([pipeline, empty, ada, bo])
        await session.flush()
        stages = [
            Stage(
                pipeline_id=pipeline.id, name=name, position=i, probability=p, target_days=t, is_post_sale=ps
            )
            for i, (name, p, t, ps) in enumerate(_STAGES)
        ]
        session.add_all(stages)
        session.add_all(
            Stage(pipeline_id=empty.id, name=name, position=i, probability=p, target_days=t, is_post_sale=ps)
            for i, (name, p, t, ps) in enumerate(_STAGES)
        )
        await session.flush()
        owners = {"Ada": ada.id, "Bo": bo.id, None: None}
        lead_ids: list[int] = []
        for title, value, owner, source, score, history in _LEADS:
            last = history[-1]
            closed = [
                day
                for day, _, _, from_status, to_status in history
                if from_status is OPEN and to_status is not OPEN
            ]
            entered = [day for day, from_stage, to_stage, *_ in history if from_stage != to_stage]
            lead = Lead(
                pipeline_id=pipeline.id,
                stage_id=stages[last[2]].id,
                owner_id=owners[owner],
                title=title,
                source=source,
                value_cents=value,
                status=last[4],
                qualification_score=score,
                created_at=T(history[0][0]),
                updated_at=T(last[0]),
                closed_at=T(closed[-1]) if last[4] is not OPEN else None,
                stage_entered_at=T(entered[-1]),
            )
            session.add(lead)
            await session.flush()
            session.add_all(
                StageHistory(
                    lead_id=lead.id,
                    pipeline_id=pipeline.id,
                    from_stage_id=None if from_stage is None else stages[from_stage].id,
                    to_stage_id=stages[to_stage].id,
                    from_status=from_status,
                    to_status=to_status,
                    changed_at=T(day),
                )
                for day, from_stage, to_stage, from_status, to_status in history
            )
            lead_ids.append(lead.id)
        # The history rows are written directly, so their stays are derived from them.
        await session.flush()
        await derive_stays(session, lead_ids=lead_ids)
        return Fixture(
            pipeline_id=pipeline.id,
            empty_pipeline_id=empty.id,
            stage_ids=tuple(s.id for s in stages),
            ada_id=ada.id,
            bo_id=bo.id,
        )
