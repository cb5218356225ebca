"""The model: stages, conversions, times in stage, deal sizes, arrivals, reps, open leads, segments, horizon.

A model is a tree of frozen dataclasses, built either in code (``Model(stages=(Stage(...), ...), ...)``)
or from a TOML/JSON file via :func:`load_model`. Parsing collects every problem before raising one
:class:`~pipesim.errors.ModelError` whose issues name the key path and the bad value, e.g.
``stages[2].conversion.alpha: must be > 0, got -1``. ``Model.to_toml()`` writes a model back so a model
calibrated in code can be saved, reviewed and re-run. The full file reference is docs/pipesim.md.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pipesim.distributions import (
    BetaProbability,
    Conversion,
    Distribution,
    Empirical,
    Exponential,
    Fixed,
    FixedProbability,
    Gamma,
    LogNormal,
    Triangular,
    Weibull,
)
from pipesim.errors import Issue, ModelError


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: time spent in it, then conversion to the next stage (or loss).

    Conversion out of the last stage is the close: a lead that passes it is won."""

    name: str
    conversion: Conversion
    time_in_stage: Distribution = field(default_factory=lambda: Fixed(0.0))
    work: Distribution | None = None  # a rep's dedicated time at the start of the stage (needs reps)
    # Parameter uncertainty: the sd of the log of this stage's time scale across trials. Each trial
    # multiplies every time in the stage by exp(sd·Z), Z ~ N(0, 1): the sampling distribution of a fitted
    # scale (or mean), so that not knowing the true time reaches the forecast's spread. 0 = known exactly.
    time_uncertainty: float = 0.0


@dataclass(frozen=True)
class Arrivals:
    """New leads: a ``batch`` of ``count`` at day 0, or ``poisson`` at ``rate_per_day`` over the horizon.

    Poisson arrivals may vary in time: ``weekday`` gives seven relative weights (Monday first, mean 1) and
    ``start_weekday`` the weekday of day 0 (0 = Monday); ``trend_per_day`` a growth rate, so the rate at
    day ``t`` is ``rate_per_day · weekday[(start_weekday + ⌊t⌋) mod 7] · exp(trend_per_day · t)``.
    ``rate_uncertainty`` is the sd of the log of the rate across trials (0 = known exactly)."""

    kind: Literal["batch", "poisson"] = "batch"
    count: int = 0
    rate_per_day: float = 0.0
    weekday: tuple[float, ...] | None = None
    start_weekday: int = 0
    trend_per_day: float = 0.0
    rate_uncertainty: float = 0.0

    @property
    def varies(self) -> bool:
        """Whether the rate changes within the horizon (a weekday profile or a trend)."""
        return self.kind == "poisson" and (self.weekday is not None or self.trend_per_day != 0.0)

    @staticmethod
    def batch(count: int) -> Arrivals:
        return Arrivals("batch", count=count)

    @staticmethod
    def poisson(rate_per_day: float) -> Arrivals:
        return Arrivals("poisson", rate_per_day=rate_per_day)


@dataclass(frozen=True)
class Person:
    """A rep named on their own: ``leads`` open leads at once when fully productive (default: the team's
    ``leads_each``), hired on ``start_day``, productivity rising linearly from 0 to full over ``ramp_days``,
    leaving on ``leave_day`` (from then on they take no new lead; leads they hold run to their end).

    A ramp opens the rep's slots one by one: slot k of C at ``start_day + ramp_days × (k - ½) / C``, so
    the slot-days available over the ramp equal the integral of productivity, ``C × ramp_days / 2``."""

    name: str = ""
    leads: int | None = None
    start_day: float = 0.0
    ramp_days: float = 0.0
    leave_day: float | None = None


@dataclass(frozen=True)
class Reps:
    """Sales reps: ``count`` of them, each working up to ``leads_each`` open leads at once, plus
    ``people`` named one by one (their own capacity, ramp and leaving date)."""

    count: int
    leads_each: int = 1
    people: tuple[Person, ...] = ()

    @property
    def slots(self) -> int:
        """Rep slots when everyone is present and fully productive."""
        return self.count * self.leads_each + sum(self.capacity(person) for person in self.people)

    @property
    def reps(self) -> int:
        return self.count + len(self.people)

    def capacity(self, person: Person) -> int:
        return self.leads_each if person.leads is None else person.leads

    @property
    def uniform(self) -> bool:
        """Every slot open from day 0 for ever (no ramp, late start or leaving date)."""
        return all(
            person.start_day == 0 and person.ramp_days == 0 and person.leave_day is None
            for person in self.people
        )

    def slot_times(self) -> tuple[list[float], list[float]]:
        """When each rep slot opens and closes (``inf``: never), team slots first, then each person's."""
        opens = [0.0] * (self.count * self.leads_each)
        closes = [math.inf] * len(opens)
        for person in self.people:
            size = self.capacity(person)
            for k in range(size):
                opens.append(person.start_day + person.ramp_days * (k + 0.5) / size)
                closes.append(math.inf if person.leave_day is None else person.leave_day)
        return opens, closes


@dataclass(frozen=True)
class Measurement:
    """Where waits, lead times and utilisation are measured: after ``warmup_days`` (the floor filling
    up from empty) and up to ``end_days`` (default: the horizon), so the figures describe steady state."""

    warmup_days: float = 0.0
    end_days: float | None = None

    def end(self, horizon_days: float) -> float:
        return horizon_days if self.end_days is None else self.end_days


@dataclass(frozen=True)
class OpenLeads:
    """A cohort of leads already in the pipeline: ``count`` of them in ``stage`` for ``age_days`` so far.

    ``value`` is their known deal size; without it they draw from the model's deal size."""

    stage: str
    count: int
    age_days: float = 0.0
    value: float | None = None
    segment: str | None = None  # the segment the leads belong to; None: the stages' own conversions


@dataclass(frozen=True)
class Segment:
    """A kind of lead — a source, an owner, or both — with its own conversions and deal size.

    Each new lead draws its segment from the model's mix (``share``); an open-lead cohort names its
    segment. ``conversions`` has one entry per stage; ``None`` (or no deal size) means the model's own."""

    name: str
    share: float
    conversions: tuple[Conversion, ...] | None = None
    deal_size: Distribution | None = None
    source: str | None = None
    owner: str | None = None

    def conversion(self, stages: tuple[Stage, ...], index: int) -> Conversion:
        return stages[index].conversion if self.conversions is None else self.conversions[index]


SHARE_TOLERANCE = 1e-6  # segment shares must sum to 1 within this


@dataclass(frozen=True)
class Model:
    """A complete lead-flow model. ``reps=None`` means unlimited capacity (no queues)."""

    stages: tuple[Stage, ...]
    deal_size: Distribution
    arrivals: Arrivals
    horizon_days: float
    reps: Reps | None = None
    open_leads: tuple[OpenLeads, ...] = ()
    currency: str = "USD"
    name: str = ""
    measurement: Measurement | None = None
    # Parameter uncertainty of the deal size: the sd of the log of its scale across trials (each trial
    # multiplies every drawn deal by exp(sd·Z)); the mean's sampling distribution. 0 = known exactly.
    deal_size_uncertainty: float = 0.0

    @property
    def has_parameter_uncertainty(self) -> bool:
        """Whether times in stage, deal size or the arrival rate vary from trial to trial."""
        return (
            self.deal_size_uncertainty > 0
            or self.arrivals.rate_uncertainty > 0
            or any(stage.time_uncertainty > 0 for stage in self.stages)
        )

    segments: tuple[Segment, ...] = ()

    def __post_init__(self) -> None:
        issues = _check_model(self)
        if issues:
            raise ModelError(issues)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    def stage_index(self, name: str) -> int:
        return self.stage_names.index(name)

    @property
    def win_probability(self) -> float:
        """Expected probability that a new lead is eventually won (product of mean conversions; with
        segments, their mix of such products)."""
        if not self.segments:
            return math.prod(stage.conversion.mean for stage in self.stages)
        return sum(segment.share * self.segment_win_probability(segment) for segment in self.segments)

    def segment_win_probability(self, segment: Segment, start: int = 0) -> float:
        count = len(self.stages)
        return math.prod(segment.conversion(self.stages, i).mean for i in range(start, count))

    def segment_index(self, name: str) -> int:
        return [segment.name for segment in self.segments].index(name)

    @property
    def mean_deal_size(self) -> float:
        """Mean deal size of a won new lead (with segments: weighted by each segment's share of wins)."""
        if not self.segments:
            return self.deal_size.mean
        weights = [segment.share * self.segment_win_probability(segment) for segment in self.segments]
        total = sum(weights)
        if total <= 0:
            return self.deal_size.mean
        sizes = [(segment.deal_size or self.deal_size).mean for segment in self.segments]
        return sum(w * x for w, x in zip(weights, sizes, strict=True)) / total

    @property
    def needs_capacity(self) -> bool:
        return self.reps is not None

    def with_new_leads(self, count: int) -> Model:
        """The same model with a batch of ``count`` new leads (used by the leads-needed search)."""
        return replace(self, arrivals=Arrivals.batch(count))

    def replace_stage(self, index: int, **changes: Any) -> Model:
        stages = list(self.stages)
        stages[index] = replace(stages[index], **changes)
        return replace(self, stages=tuple(stages))

    def to_mapping(self) -> dict[str, Any]:
        """The model as plain data, in the file layout that :func:`from_mapping` reads."""
        data: dict[str, Any] = {}
        if self.name:
            data["name"] = self.name
        data["currency"] = self.currency
        data["horizon_days"] = self.horizon_days
        if self.arrivals.kind == "batch":
            data["arrivals"] = {"kind": "batch", "count": self.arrivals.count}
        else:
            arrivals: dict[str, Any] = {"kind": "poisson", "rate_per_day": self.arrivals.rate_per_day}
            if self.arrivals.weekday is not None:
                arrivals["weekday"] = list(self.arrivals.weekday)
                arrivals["start_weekday"] = self.arrivals.start_weekday
            if self.arrivals.trend_per_day:
                arrivals["trend_per_day"] = self.arrivals.trend_per_day
            if self.arrivals.rate_uncertainty:
                arrivals["rate_uncertainty"] = self.arrivals.rate_uncertainty
            data["arrivals"] = arrivals
        data["deal_size"] = self.deal_size.to_mapping()
        if self.deal_size_uncertainty:
            data["deal_size_uncertainty"] = self.deal_size_uncertainty
        if self.reps is not None:
            data["reps"] = {"count": self.reps.count, "leads_each": self.reps.leads_each}
            if self.reps.people:
                data["reps"]["people"] = [_person_mapping(person) for person in self.reps.people]
        stages = []
        for stage in self.stages:
            entry: dict[str, Any] = {
                "name": stage.name,
                "conversion": stage.conversion.to_value(),
                "time_in_stage": stage.time_in_stage.to_mapping(),
            }
            if stage.work is not None:
                entry["work"] = stage.work.to_mapping()
            if stage.time_uncertainty:
                entry["time_uncertainty"] = stage.time_uncertainty
            stages.append(entry)
        data["stages"] = stages
        if self.measurement is not None:
            data["measurement"] = {"warmup_days": self.measurement.warmup_days}
            if self.measurement.end_days is not None:
                data["measurement"]["end_days"] = self.measurement.end_days
        if self.open_leads:
            cohorts = []
            for cohort in self.open_leads:
                item: dict[str, Any] = {
                    "stage": cohort.stage,
                    "count": cohort.count,
                    "age_days": cohort.age_days,
                }
                if cohort.value is not None:
                    item["value"] = cohort.value
                if cohort.segment is not None:
                    item["segment"] = cohort.segment
                cohorts.append(item)
            data["open_leads"] = cohorts
        if self.segments:
            data["segments"] = [_segment_mapping(segment) for segment in self.segments]
        return data

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_mapping())


def _person_mapping(person: Person) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if person.name:
        item["name"] = person.name
    if person.leads is not None:
        item["leads"] = person.leads
    item["start_day"] = person.start_day
    item["ramp_days"] = person.ramp_days
    if person.leave_day is not None:
        item["leave_day"] = person.leave_day
    return item


def _check_reps(reps: Reps, model: Model) -> list[Issue]:
    issues: list[Issue] = []
    if reps.count < 0 or reps.leads_each < 1:
        issues.append(
            Issue("reps", f"needs count >= 0 and leads_each >= 1, got {reps.count}, {reps.leads_each}")
        )
    if reps.slots < 1:
        issues.append(Issue("reps", "needs at least one rep slot (count >= 1 or a person)"))
    for index, person in enumerate(reps.people):
        path = f"reps.people[{index}]"
        if person.leads is not None and person.leads < 1:
            issues.append(Issue(f"{path}.leads", f"must be >= 1, got {person.leads}"))
        if not (math.isfinite(person.start_day) and person.start_day >= 0):
            issues.append(
                Issue(f"{path}.start_day", f"must be a finite number >= 0, got {person.start_day!r}")
            )
        if not (math.isfinite(person.ramp_days) and person.ramp_days >= 0):
            issues.append(
                Issue(f"{path}.ramp_days", f"must be a finite number >= 0, got {person.ramp_days!r}")
            )
        if person.leave_day is not None and not (
            math.isfinite(person.leave_day) and person.leave_day > person.start_day
        ):
            issues.append(
                Issue(
                    f"{path}.leave_day",
                    f"must be after start_day ({person.start_day:g}), got {person.leave_day!r}",
                )
            )
    if reps.people:
        for index, stage in enumerate(model.stages):
            if stage.work is not None:
                issues.append(
                    Issue(
                        f"stages[{index}].work",
                        "stage work cannot be combined with reps.people (work is done by the team's count)",
                    )
                )
    return issues


def _segment_mapping(segment: Segment) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": segment.name, "share": segment.share}
    if segment.source is not None:
        entry["source"] = segment.source
    if segment.owner is not None:
        entry["owner"] = segment.owner
    if segment.conversions is not None:
        entry["conversions"] = [conversion.to_value() for conversion in segment.conversions]
    if segment.deal_size is not None:
        entry["deal_size"] = segment.deal_size.to_mapping()
    return entry


def _check_segments(model: Model) -> list[Issue]:
    issues: list[Issue] = []
    names = [segment.name for segment in model.segments]
    for index, segment in enumerate(model.segments):
        path = f"segments[{index}]"
        if not segment.name.strip():
            issues.append(Issue(f"{path}.name", "must be a non-empty string"))
        elif names.index(segment.name) != index:
            issues.append(Issue(f"{path}.name", f"duplicate segment name {segment.name!r}"))
        if not (math.isfinite(segment.share) and 0 <= segment.share <= 1):
            issues.append(Issue(f"{path}.share", f"must be a share in [0, 1], got {segment.share!r}"))
        if segment.conversions is not None and len(segment.conversions) != len(model.stages):
            issues.append(
                Issue(
                    f"{path}.conversions",
                    f"needs one conversion per stage ({len(model.stages)}), got {len(segment.conversions)}",
                )
            )
    total = math.fsum(segment.share for segment in model.segments)
    if model.segments and abs(total - 1) > SHARE_TOLERANCE:
        issues.append(Issue("segments", f"shares must sum to 1, got {total:.9g}"))
    for index, cohort in enumerate(model.open_leads):
        if cohort.segment is not None and cohort.segment not in names:
            issues.append(
                Issue(
                    f"open_leads[{index}].segment",
                    f"unknown segment {cohort.segment!r}; segments are {names}",
                )
            )
    return issues


def _check_model(model: Model) -> list[Issue]:
    """Cross-field rules, checked however the model was built (file or code)."""
    issues: list[Issue] = []
    if not model.stages:
        issues.append(Issue("stages", "needs at least one stage"))
    names = [stage.name for stage in model.stages]
    for index, name in enumerate(names):
        if names.index(name) != index:
            issues.append(Issue(f"stages[{index}].name", f"duplicate stage name {name!r}"))
    if not (model.horizon_days > 0 and math.isfinite(model.horizon_days)):
        issues.append(Issue("horizon_days", f"must be a finite number > 0, got {model.horizon_days!r}"))
    for index, stage in enumerate(model.stages):
        issues += _uncertainty_issues(stage.time_uncertainty, f"stages[{index}].time_uncertainty")
    issues += _uncertainty_issues(model.deal_size_uncertainty, "deal_size_uncertainty")
    issues += _arrival_issues(model.arrivals, model.horizon_days)
    for index, stage in enumerate(model.stages):
        if stage.work is not None and model.reps is None:
            issues.append(
                Issue(f"stages[{index}].work", "work time needs a [reps] table (who does the work?)")
            )
    if model.reps is not None:
        issues += _check_reps(model.reps, model)
    if model.measurement is not None:
        warmup, end = model.measurement.warmup_days, model.measurement.end(model.horizon_days)
        if not (math.isfinite(warmup) and 0 <= warmup < end <= model.horizon_days):
            issues.append(
                Issue(
                    "measurement",
                    f"needs 0 <= warmup_days < end_days <= horizon_days, got {warmup:g}, {end:g}",
                )
            )
    for index, cohort in enumerate(model.open_leads):
        if cohort.stage not in names:
            issues.append(
                Issue(f"open_leads[{index}].stage", f"unknown stage {cohort.stage!r}; stages are {names}")
            )
    return issues + _check_segments(model)


MAX_UNCERTAINTY = 3.0  # sd of a log: beyond this a "parameter" spans orders of magnitude


def _uncertainty_issues(value: float, path: str) -> list[Issue]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return [Issue(path, f"must be a number, got {value!r}")]
    if not (math.isfinite(value) and 0 <= value <= MAX_UNCERTAINTY):
        return [Issue(path, f"must be a number in [0, {MAX_UNCERTAINTY:g}] (sd of a log), got {value!r}")]
    return []


def _arrival_issues(arrivals: Arrivals, horizon_days: float) -> list[Issue]:
    issues = _uncertainty_issues(arrivals.rate_uncertainty, "arrivals.rate_uncertainty")
    poisson_only = arrivals.weekday is not None or arrivals.trend_per_day or arrivals.rate_uncertainty
    if arrivals.kind != "poisson" and poisson_only:
        issues.append(
            Issue("arrivals.kind", "weekday, trend_per_day and rate_uncertainty need kind = 'poisson'")
        )
    if arrivals.weekday is not None:
        weights = arrivals.weekday
        if len(weights) != 7 or not all(math.isfinite(w) and w >= 0 for w in weights):
            issues.append(
                Issue("arrivals.weekday", f"must be 7 numbers >= 0 (Monday first), got {list(weights)!r}")
            )
        elif sum(weights) <= 0:
            issues.append(Issue("arrivals.weekday", "needs at least one weekday with a weight > 0"))
    if not (isinstance(arrivals.start_weekday, int) and 0 <= arrivals.start_weekday <= 6):
        issues.append(
            Issue(
                "arrivals.start_weekday", f"must be 0 (Monday) to 6 (Sunday), got {arrivals.start_weekday!r}"
            )
        )
    trend = arrivals.trend_per_day
    # exp(trend · horizon) beyond ~e^20 overflows counts long before it means anything.
    if not (math.isfinite(trend) and abs(trend) * (horizon_days if math.isfinite(horizon_days) else 0) <= 20):
        issues.append(
            Issue(
                "arrivals.trend_per_day", f"must be finite with |trend| x horizon_days <= 20, got {trend!r}"
            )
        )
    return issues


# --- reading files ----------------------------------------------------------------------------------------


def load_model(path: str | Path) -> Model:
    """Read a model from a ``.toml`` or ``.json`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError([Issue("", f"cannot read model file: {exc.strerror}")], source=str(path)) from exc
    if path.suffix.lower() == ".json":
        return from_json(text, source=str(path))
    return from_toml(text, source=str(path))


def from_toml(text: str, source: str | None = None) -> Model:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ModelError([Issue("", f"not valid TOML: {exc}")], source=source) from exc
    return from_mapping(data, source=source)


def from_json(text: str, source: str | None = None) -> Model:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError([Issue("", f"not valid JSON: {exc}")], source=source) from exc
    if not isinstance(data, dict):
        raise ModelError([Issue("", "the top level must be an object")], source=source)
    return from_mapping(data, source=source)


def from_mapping(data: Mapping[str, Any], source: str | None = None) -> Model:
    """Build a model from plain data, reporting every problem at once."""
    reader = _Reader()
    model = reader.model(data)
    if reader.issues or model is None:
        raise ModelError(reader.issues, source=source)
    try:
        built: Model = model()
        return built
    except ModelError as exc:
        raise ModelError(exc.issues, source=source) from None


_DISTRIBUTIONS = ("fixed", "exponential", "gamma", "weibull", "lognormal", "triangular", "empirical")
_TOP_KEYS = {
    "name",
    "currency",
    "horizon_days",
    "arrivals",
    "deal_size",
    "reps",
    "stages",
    "open_leads",
    "measurement",
    "deal_size_uncertainty",
    "segments",
}


class _Reader:
    """Walks the mapping, converting values and collecting issues instead of stopping at the first."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []

    def fail(self, path: str, message: str) -> None:
        self.issues.append(Issue(path, message))

    def unknown_keys(self, data: Mapping[str, Any], allowed: set[str], path: str) -> None:
        for key in data:
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                self.fail(where, f"unknown key; expected one of {sorted(allowed)}")

    def number(
        self, data: Mapping[str, Any], key: str, path: str, *, minimum: float = 0.0, strict: bool = True
    ) -> float | None:
        where = f"{path}.{key}" if path else key
        if key not in data:
            self.fail(where, "is required")
            return None
        return self.value_number(data[key], where, minimum=minimum, strict=strict)

    def value_number(
        self, value: Any, where: str, *, minimum: float = 0.0, strict: bool = True
    ) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(where, f"must be a number, got {value!r}")
            return None
        number = float(value)
        bad = number <= minimum if strict else number < minimum
        if not math.isfinite(number) or bad:
            self.fail(where, f"must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
            return None
        return number

    def integer(self, data: Mapping[str, Any], key: str, path: str, *, minimum: int) -> int | None:
        where = f"{path}.{key}"
        if key not in data:
            self.fail(where, "is required")
            return None
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(where, f"must be a whole number, got {value!r}")
            return None
        if value < minimum:
            self.fail(where, f"must be >= {minimum}, got {value!r}")
            return None
        return value

    def table(self, data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
        where = f"{path}.{key}" if path else key
        value = data.get(key)
        if not isinstance(value, Mapping):
            self.fail(where, "is required" if value is None else f"must be a table, got {value!r}")
            return None
        return value

    def distribution(self, value: Any, path: str) -> Distribution | None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = self.value_number(value, path, strict=False)
            return None if number is None else Fixed(number)
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a number or a table with 'dist', got {value!r}")
            return None
        kind = value.get("dist")
        if kind not in _DISTRIBUTIONS:
            self.fail(f"{path}.dist", f"must be one of {list(_DISTRIBUTIONS)}, got {kind!r}")
            return None
        if kind == "fixed":
            self.unknown_keys(value, {"dist", "value"}, path)
            fixed = self.number(value, "value", path, strict=False)
            return None if fixed is None else Fixed(fixed)
        if kind == "exponential":
            self.unknown_keys(value, {"dist", "mean"}, path)
            mean = self.number(value, "mean", path)
            return None if mean is None else Exponential(mean)
        if kind == "gamma":
            return self.gamma(value, path)
        if kind == "weibull":
            self.unknown_keys(value, {"dist", "shape", "scale"}, path)
            shape, scale = self.number(value, "shape", path), self.number(value, "scale", path)
            return None if shape is None or scale is None else Weibull(shape, scale)
        if kind == "lognormal":
            self.unknown_keys(value, {"dist", "mean", "sd"}, path)
            mean, sd = self.number(value, "mean", path), self.number(value, "sd", path, strict=False)
            return None if mean is None or sd is None else LogNormal(mean, sd)
        if kind == "triangular":
            return self.triangular(value, path)
        return self.empirical(value, path)

    def gamma(self, value: Mapping[str, Any], path: str) -> Distribution | None:
        self.unknown_keys(value, {"dist", "shape", "scale", "mean", "sd"}, path)
        if "shape" in value or "scale" in value:
            shape, scale = self.number(value, "shape", path), self.number(value, "scale", path)
            return None if shape is None or scale is None else Gamma(shape, scale)
        mean, sd = self.number(value, "mean", path), self.number(value, "sd", path)
        if mean is None or sd is None:
            return None
        return Gamma((mean / sd) ** 2, sd * sd / mean)

    def triangular(self, value: Mapping[str, Any], path: str) -> Distribution | None:
        self.unknown_keys(value, {"dist", "low", "mode", "high"}, path)
        low = self.number(value, "low", path, strict=False)
        mode = self.number(value, "mode", path, strict=False)
        high = self.number(value, "high", path, strict=False)
        if low is None or mode is None or high is None:
            return None
        if not low <= mode <= high:
            self.fail(path, f"needs low <= mode <= high, got {low:g}, {mode:g}, {high:g}")
            return None
        return Triangular(low, mode, high)

    def empirical(self, value: Mapping[str, Any], path: str) -> Distribution | None:
        self.unknown_keys(value, {"dist", "samples"}, path)
        samples = value.get("samples")
        if not isinstance(samples, list) or not samples:
            self.fail(f"{path}.samples", f"must be a non-empty list of numbers, got {samples!r}")
            return None
        numbers = [
            self.value_number(item, f"{path}.samples[{i}]", strict=False) for i, item in enumerate(samples)
        ]
        if any(number is None for number in numbers):
            return None
        return Empirical(tuple(number for number in numbers if number is not None))

    def conversion(self, value: Any, path: str) -> Conversion | None:
        if isinstance(value, Mapping):
            self.unknown_keys(value, {"alpha", "beta"}, path)
            alpha, beta = self.number(value, "alpha", path), self.number(value, "beta", path)
            return None if alpha is None or beta is None else BetaProbability(alpha, beta)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            self.fail(path, f"must be a probability in [0, 1] or a table {{alpha, beta}}, got {value!r}")
            return None
        return FixedProbability(float(value))

    def stage(self, data: Any, path: str) -> Stage | None:
        if not isinstance(data, Mapping):
            self.fail(path, f"must be a table, got {data!r}")
            return None
        self.unknown_keys(data, {"name", "conversion", "time_in_stage", "work", "time_uncertainty"}, path)
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            self.fail(f"{path}.name", f"must be a non-empty string, got {name!r}")
        if "conversion" not in data:
            self.fail(f"{path}.conversion", "is required")
            conversion = None
        else:
            conversion = self.conversion(data["conversion"], f"{path}.conversion")
        time_in_stage = self.distribution(data.get("time_in_stage", 0.0), f"{path}.time_in_stage")
        work = self.distribution(data["work"], f"{path}.work") if "work" in data else None
        if not isinstance(name, str) or conversion is None or time_in_stage is None:
            return None
        if "work" in data and work is None:
            return None
        spread = self.uncertainty(data, "time_uncertainty", path)
        if spread is None:
            return None
        return Stage(
            name=name, conversion=conversion, time_in_stage=time_in_stage, work=work, time_uncertainty=spread
        )

    def uncertainty(self, data: Mapping[str, Any], key: str, path: str) -> float | None:
        """An optional sd of a log (default 0), checked where it is read so the issue names the key."""
        if key not in data:
            return 0.0
        where = f"{path}.{key}" if path else key
        value = self.value_number(data[key], where, strict=False)
        if value is not None and value > MAX_UNCERTAINTY:
            self.fail(where, f"must be a number in [0, {MAX_UNCERTAINTY:g}] (sd of a log), got {value!r}")
            return None
        return value

    def arrivals(self, data: Mapping[str, Any]) -> Arrivals | None:
        table = self.table(data, "arrivals", "")
        if table is None:
            return None
        kind = table.get("kind", "batch")
        if kind == "batch":
            self.unknown_keys(table, {"kind", "count"}, "arrivals")
            count = self.integer(table, "count", "arrivals", minimum=0)
            return None if count is None else Arrivals.batch(count)
        if kind == "poisson":
            allowed = {
                "kind",
                "rate_per_day",
                "weekday",
                "start_weekday",
                "trend_per_day",
                "rate_uncertainty",
            }
            self.unknown_keys(table, allowed, "arrivals")
            rate = self.number(table, "rate_per_day", "arrivals", strict=False)
            weekday = self.weekday(table.get("weekday"))
            start = self.integer({"start_weekday": 0, **table}, "start_weekday", "arrivals", minimum=0)
            trend = (
                self.value_number(table["trend_per_day"], "arrivals.trend_per_day", minimum=-math.inf)
                if "trend_per_day" in table
                else 0.0
            )
            spread = self.uncertainty(table, "rate_uncertainty", "arrivals")
            if rate is None or start is None or trend is None or spread is None:
                return None
            if "weekday" in table and weekday is None:
                return None
            return Arrivals(
                "poisson",
                rate_per_day=rate,
                weekday=weekday,
                start_weekday=start,
                trend_per_day=trend,
                rate_uncertainty=spread,
            )
        self.fail("arrivals.kind", f"must be 'batch' or 'poisson', got {kind!r}")
        return None

    def weekday(self, value: Any) -> tuple[float, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != 7:
            self.fail("arrivals.weekday", f"must be a list of 7 numbers (Monday first), got {value!r}")
            return None
        weights = [
            self.value_number(item, f"arrivals.weekday[{i}]", strict=False) for i, item in enumerate(value)
        ]
        if any(weight is None for weight in weights):
            return None
        return tuple(weight for weight in weights if weight is not None)

    def reps(self, data: Mapping[str, Any]) -> Reps | None:
        table = self.table(data, "reps", "")
        if table is None:
            return None
        self.unknown_keys(table, {"count", "leads_each", "people"}, "reps")
        has_people = "people" in table
        defaults = {"count": 0} if has_people else {}
        count = self.integer({**defaults, **table}, "count", "reps", minimum=0 if has_people else 1)
        leads_each = self.integer({"leads_each": 1, **table}, "leads_each", "reps", minimum=1)
        people = self.people(table["people"]) if has_people else ()
        if count is None or leads_each is None or people is None:
            return None
        return Reps(count, leads_each, people)

    def people(self, value: Any) -> tuple[Person, ...] | None:
        if not isinstance(value, list) or not value:
            self.fail("reps.people", f"must be a non-empty list of tables, got {value!r}")
            return None
        people: list[Person] = []
        for index, item in enumerate(value):
            path = f"reps.people[{index}]"
            if not isinstance(item, Mapping):
                self.fail(path, f"must be a table, got {item!r}")
                continue
            self.unknown_keys(item, {"name", "leads", "start_day", "ramp_days", "leave_day"}, path)
            name = item.get("name", "")
            if not isinstance(name, str):
                self.fail(f"{path}.name", f"must be a string, got {name!r}")
            leads = self.integer(item, "leads", path, minimum=1) if "leads" in item else None
            start = self.number({"start_day": 0.0, **item}, "start_day", path, strict=False)
            ramp = self.number({"ramp_days": 0.0, **item}, "ramp_days", path, strict=False)
            leave = self.number(item, "leave_day", path) if "leave_day" in item else None
            if start is not None and leave is not None and leave <= start:
                self.fail(f"{path}.leave_day", f"must be after start_day ({start:g}), got {leave:g}")
                continue
            bad = ("leads" in item and leads is None) or ("leave_day" in item and leave is None)
            if isinstance(name, str) and start is not None and ramp is not None and not bad:
                people.append(Person(name, leads, start, ramp, leave))
        return tuple(people) if len(people) == len(value) else None

    def measurement(self, data: Mapping[str, Any]) -> Measurement | None:
        table = self.table(data, "measurement", "")
        if table is None:
            return None
        self.unknown_keys(table, {"warmup_days", "end_days"}, "measurement")
        warmup = self.number({"warmup_days": 0.0, **table}, "warmup_days", "measurement", strict=False)
        end = self.number(table, "end_days", "measurement") if "end_days" in table else None
        if warmup is None or ("end_days" in table and end is None):
            return None
        return Measurement(warmup, end)

    def open_leads(self, value: Any) -> tuple[OpenLeads, ...] | None:
        if not isinstance(value, list):
            self.fail("open_leads", f"must be a list of tables, got {value!r}")
            return None
        cohorts: list[OpenLeads] = []
        for index, item in enumerate(value):
            path = f"open_leads[{index}]"
            if not isinstance(item, Mapping):
                self.fail(path, f"must be a table, got {item!r}")
                continue
            self.unknown_keys(item, {"stage", "count", "age_days", "value", "segment"}, path)
            stage = item.get("stage")
            if not isinstance(stage, str):
                self.fail(f"{path}.stage", f"must be a stage name, got {stage!r}")
            count = self.integer(item, "count", path, minimum=0)
            age = self.number({"age_days": 0.0, **item}, "age_days", path, strict=False)
            deal = self.number(item, "value", path, strict=False) if "value" in item else None
            segment = item.get("segment")
            if segment is not None and not isinstance(segment, str):
                self.fail(f"{path}.segment", f"must be a segment name, got {segment!r}")
                segment = None
            if isinstance(stage, str) and count is not None and age is not None:
                cohorts.append(OpenLeads(stage=stage, count=count, age_days=age, value=deal, segment=segment))
        return tuple(cohorts)

    def optional_name(self, item: Mapping[str, Any], key: str, path: str) -> str | None:
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            self.fail(f"{path}.{key}", f"must be a string, got {value!r}")
            return None
        return value

    def segments(self, value: Any) -> tuple[Segment, ...] | None:
        if not isinstance(value, list):
            self.fail("segments", f"must be a list of tables, got {value!r}")
            return None
        found: list[Segment] = []
        for index, item in enumerate(value):
            path = f"segments[{index}]"
            if not isinstance(item, Mapping):
                self.fail(path, f"must be a table, got {item!r}")
                continue
            self.unknown_keys(item, {"name", "share", "source", "owner", "conversions", "deal_size"}, path)
            name = item.get("name")
            if not isinstance(name, str) or not name.strip():
                self.fail(f"{path}.name", f"must be a non-empty string, got {name!r}")
            share = self.number(item, "share", path, strict=False)
            source = self.optional_name(item, "source", path)
            owner = self.optional_name(item, "owner", path)
            conversions: tuple[Conversion, ...] | None = None
            ok = True
            if "conversions" in item:
                raw = item["conversions"]
                if not isinstance(raw, list):
                    self.fail(
                        f"{path}.conversions", f"must be a list with one conversion per stage, got {raw!r}"
                    )
                    ok = False
                else:
                    parsed = [
                        self.conversion(entry, f"{path}.conversions[{i}]") for i, entry in enumerate(raw)
                    ]
                    ok = all(entry is not None for entry in parsed)
                    conversions = tuple(entry for entry in parsed if entry is not None)
            deal = self.distribution(item["deal_size"], f"{path}.deal_size") if "deal_size" in item else None
            if "deal_size" in item and deal is None:
                ok = False
            if ok and isinstance(name, str) and name.strip() and share is not None:
                found.append(Segment(name, share, conversions, deal, source, owner))
        return tuple(found)

    def model(self, data: Mapping[str, Any]) -> Any:
        """Returns a zero-argument constructor so cross-field checks run only on well-typed parts."""
        self.unknown_keys(data, _TOP_KEYS, "")
        name = data.get("name", "")
        if not isinstance(name, str):
            self.fail("name", f"must be a string, got {name!r}")
        currency = data.get("currency", "USD")
        if not isinstance(currency, str) or not currency:
            self.fail("currency", f"must be a currency code such as 'USD', got {currency!r}")
        horizon = self.number(data, "horizon_days", "")
        arrivals = self.arrivals(data)
        deal_size = self.distribution(data["deal_size"], "deal_size") if "deal_size" in data else None
        if "deal_size" not in data:
            self.fail("deal_size", "is required")
        reps = self.reps(data) if "reps" in data else None
        raw_stages = data.get("stages")
        stages: list[Stage | None] = []
        if not isinstance(raw_stages, list) or not raw_stages:
            self.fail("stages", f"must be a non-empty list of stage tables, got {raw_stages!r}")
        else:
            stages = [self.stage(item, f"stages[{index}]") for index, item in enumerate(raw_stages)]
        cohorts = self.open_leads(data["open_leads"]) if "open_leads" in data else ()
        measurement = self.measurement(data) if "measurement" in data else None
        deal_spread = self.uncertainty(data, "deal_size_uncertainty", "")
        segments = self.segments(data["segments"]) if "segments" in data else ()
        if self.issues:
            return None
        assert horizon is not None
        assert arrivals is not None
        assert deal_size is not None
        assert cohorts is not None
        assert segments is not None
        built = tuple(stage for stage in stages if stage is not None)

        def construct() -> Model:
            return Model(
                stages=built,
                deal_size=deal_size,
                arrivals=arrivals,
                horizon_days=horizon,
                reps=reps,
                open_leads=cohorts,
                currency=str(currency),
                name=str(name),
                measurement=measurement,
                deal_size_uncertainty=deal_spread or 0.0,
                segments=segments,
            )

        return construct
