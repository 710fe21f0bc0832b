"""Alert rules: loaded from a TOML file and validated at start, evaluated without I/O.

The rules are data (`rules.toml`): kinds are code, instances (thresholds, severities, windows) are
not, so one kind may appear several times (a `warning` at 100 per hour, a `critical` at 500).
Counting events in a sliding window needs stored counts; the caller asks :func:`window_queries`
what to count, loads the actor's per-minute counts into :class:`MinuteCounts`, and hands the numbers
it gives to :func:`evaluate`.

Windows are counted at minute resolution: a window of W minutes is W + 1 consecutive calendar minutes
[a, a + W] (UTC, event time), and an event's count is the most events in any such window containing
its minute. Every exact window [s, s + W] lies within the W + 1 minutes starting at s's minute, so a
rule never misses what an exact count would catch; it may fire up to one minute's events early.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, field_validator

from cdap_audit.domain import EntryFacts, format_time
from cdap_shared.datafiles import load_toml
from cdap_shared.events import Severity

DEFAULT_RULES = Path(__file__).with_name("rules.toml")
CONSULTATIONS = ("dossier.consulted",)


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,49}$")
    severity: Severity
    enabled: bool = True
    types: tuple[str, ...] = Field(default=CONSULTATIONS, min_length=1)
    cooldown_minutes: int = Field(
        default=60, ge=1, le=7 * 24 * 60, description="at most one alert per actor per rule per period"
    )


class NightRule(_Rule):
    """Activity between `start` and `end`, local time (the interval may wrap midnight)."""

    kind: Literal["night"]
    start: time = time(22, 0)
    end: time = time(6, 0)


class VolumeRule(_Rule):
    """More than `max_count` events by one actor within `window_minutes`."""

    kind: Literal["volume"]
    max_count: int = Field(ge=1)
    window_minutes: int = Field(default=60, ge=1, le=24 * 60)


class DenialsRule(_Rule):
    """At least `count` refused events by one actor within `window_minutes`."""

    kind: Literal["denials"]
    count: int = Field(ge=1)
    window_minutes: int = Field(default=10, ge=1, le=24 * 60)
    decisions: tuple[str, ...] = Field(default=("denied",), min_length=1)


class NetworkRule(_Rule):
    """A client IP outside the networks its organisation declared (in this file's [organisations])."""

    kind: Literal["network"]
    undeclared: Literal["ignore", "alert"] = Field(
        default="ignore", description="what to do when the organisation declared no networks"
    )


Rule = Annotated[NightRule | VolumeRule | DenialsRule | NetworkRule, Field(discriminator="kind")]


class Organisation(BaseModel):
    """An organisation's declared networks (no event carries them, so the rules file does)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str | None = None
    networks: tuple[IPvAnyNetwork, ...] = Field(min_length=1)


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    timezone: str = "Europe/Paris"
    rules: tuple[Rule, ...] = ()
    organisations: dict[str, Organisation] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, value: tuple[Rule, ...]) -> tuple[Rule, ...]:
        names = [r.name for r in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique: {duplicates}")
        return value

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def active(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.enabled)

    @cached_property
    def _by_type(self) -> dict[str, tuple[Rule, ...]]:
        return {}

    @cached_property
    def _queries(self) -> dict[tuple[str, str | None], tuple[WindowQuery, ...]]:
        return {}

    def for_type(self, event_type: str) -> tuple[Rule, ...]:
        """The active rules that look at `event_type` (worked out once per type: asked for every entry)."""
        found = self._by_type.get(event_type)
        if found is None:
            found = self._by_type[event_type] = tuple(r for r in self.active if event_type in r.types)
        return found

    def window_queries(self, event_type: str, decision: str | None) -> tuple[WindowQuery, ...]:
        """The windowed rules an event of `event_type` with `decision` could set off (worked out once)."""
        found = self._queries.get((event_type, decision))
        if found is None:
            queries = []
            for rule in self.for_type(event_type):
                if isinstance(rule, VolumeRule):
                    window = timedelta(minutes=rule.window_minutes)
                    queries.append(WindowQuery(rule.name, window, rule.types, None))
                elif isinstance(rule, DenialsRule) and decision in rule.decisions:
                    window = timedelta(minutes=rule.window_minutes)
                    queries.append(WindowQuery(rule.name, window, rule.types, rule.decisions))
            found = self._queries[(event_type, decision)] = tuple(queries)
        return found

    def counted_types(self) -> frozenset[str]:
        """Event types whose occurrences windowed rules count (the others need no activity row)."""
        return frozenset(t for r in self.active if isinstance(r, VolumeRule | DenialsRule) for t in r.types)

    def longest_window(self) -> timedelta:
        windows = [r.window_minutes for r in self.active if isinstance(r, VolumeRule | DenialsRule)]
        return timedelta(minutes=max(windows, default=0))


class RulesError(SystemExit):
    """A rules file that cannot be used: the service refuses to start, saying why."""


def load_rules(path: Path = DEFAULT_RULES) -> RuleSet:
    """Read and validate the rules; raise `RulesError` with a readable message otherwise."""
    return load_toml(path, RuleSet, what="alert rules file", env="CDAP_ALERT_RULES_PATH", error=RulesError)


# ---- evaluation -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowQuery:
    """Count the actor's events of `types` (and `decisions`, if given) in `(time - window, time]`."""

    rule: str
    window: timedelta
    types: tuple[str, ...]
    decisions: tuple[str, ...] | None

    @cached_property
    def counted(self) -> tuple[timedelta, tuple[str, ...], tuple[str, ...] | None]:
        """What is counted, rule aside: rules counting the same thing (a warning and a critical
        volume rule) share one count. (Cached: asked several times for every counted entry.)"""
        return (self.window, self.types, self.decisions)


def minute_of(at: datetime) -> int:
    """Minutes since the epoch (UTC) of `at`: the bucket an event is counted in."""
    return int(at.timestamp()) // 60


def window_count(series: Mapping[int, int], minute: int, window: int) -> int:
    """The most events of `series` (count by minute) in W + 1 consecutive minutes [a, a + W] that
    contain `minute` (W = `window`). Cost grows with the minutes that have events, never with events."""
    keys = sorted(k for k in series if minute - window <= k <= minute + window)
    sums = [0]
    for k in keys:
        sums.append(sums[-1] + series[k])
    # The best window starts at the earliest allowed minute or at a minute with events.
    starts = [minute - window, *(k for k in keys if k <= minute)]
    return max(
        sums[bisect.bisect_right(keys, a + window)] - sums[bisect.bisect_left(keys, a)] for a in starts
    )


@dataclass
class MinuteCounts:
    """Per-minute counts of the events windowed rules count, for the actors of one batch.

    Holds what was stored plus the batch's own events as they are added, in order: an event's count
    includes the events before it, as one-by-one evaluation would. `added` is what to store back,
    keyed (actor, type, decision, minute) with decision "" for events without one.
    """

    # actor -> (type, decision) -> minute -> count
    series: dict[str, dict[tuple[str, str], dict[int, int]]] = field(default_factory=dict)
    added: dict[tuple[str, str, str, int], int] = field(default_factory=dict)
    # (actor, query) -> (minute, count) last computed; an event in that same minute adds one to every
    # window containing it, so a busy actor's count is kept up without recounting its minutes.
    _known: dict[tuple[str, object], tuple[int, int]] = field(default_factory=dict)

    def load(self, rows: Iterable[tuple[str, str, str, int, int]]) -> None:
        """Stored counters: (actor, type, decision, minute, n)."""
        for actor, type_, decision, minute, n in rows:
            bucket = self.series.setdefault(actor, {}).setdefault((type_, decision), {})
            bucket[minute] = bucket.get(minute, 0) + n

    def add(self, actor: str, facts: EntryFacts, minute: int, queries: Iterable[WindowQuery]) -> None:
        """Count `facts` for `actor` in `minute` (`minute_of` its time); `queries` are the windowed rules
        it concerns (`window_queries`)."""
        decision = facts.decision or ""
        bucket = self.series.setdefault(actor, {}).setdefault((facts.type, decision), {})
        bucket[minute] = bucket.get(minute, 0) + 1
        key = (actor, facts.type, decision, minute)
        self.added[key] = self.added.get(key, 0) + 1
        seen = set()
        for query in queries:
            counted = query.counted
            if counted in seen:  # two rules counting the same thing: the event adds one, once
                continue
            seen.add(counted)
            known = self._known.pop((actor, counted), None)
            if known is not None and known[0] == minute:
                self._known[(actor, counted)] = (minute, known[1] + 1)

    def count(self, actor: str, query: WindowQuery, minute: int) -> int:
        """The count `query` asks for, for `actor`'s event in `minute`."""
        known = self._known.get((actor, query.counted))
        if known is not None and known[0] == minute:
            return known[1]
        merged: dict[int, int] = {}
        for (type_, decision), bucket in self.series.get(actor, {}).items():
            if type_ in query.types and (query.decisions is None or decision in query.decisions):
                for m, n in bucket.items():
                    merged[m] = merged.get(m, 0) + n
        count = window_count(merged, minute, int(query.window.total_seconds()) // 60)
        self._known[(actor, query.counted)] = (minute, count)
        return count


@dataclass(frozen=True)
class Triggered:
    rule: str
    severity: Severity
    detail: str
    dedup_key: str


def window_queries(rules: RuleSet, facts: EntryFacts) -> list[WindowQuery]:
    """What must be counted for `facts`; only rules the event itself could set off are asked."""
    if facts.actor is None:
        return []
    return list(rules.window_queries(facts.type, facts.decision))


def evaluate(
    rules: RuleSet, facts: EntryFacts, counts: dict[str, int], raised: Container[str] = ()
) -> list[Triggered]:
    """The rules `facts` sets off, given the window `counts` (by rule name) that include it. A rule whose
    alert for this actor and period is in `raised` (keys of alerts raised already) is not looked at."""
    fired: list[Triggered] = []
    seconds = int(facts.time.timestamp())
    who = _who(facts)
    for rule in rules.for_type(facts.type):
        # Most entries set nothing off: their keys are not worth writing. Of those that do, most
        # concern an alert raised already: their detail (times formatted, ...) is not worth writing.
        if not _fires(rule, rules, facts, counts):
            continue
        key = _dedup_key(rule, who, seconds)
        if key not in raised:
            fired.append(Triggered(rule.name, rule.severity, _detail(rule, rules, facts, counts), key))
    return fired


def dedup_key(rule: Rule, facts: EntryFacts) -> str:
    """One alert per rule, actor and cooldown period (periods aligned on the epoch, event time)."""
    return _dedup_key(rule, _who(facts), int(facts.time.timestamp()))


def _who(facts: EntryFacts) -> str:
    return facts.actor or facts.organisation_id or "-"


def _dedup_key(rule: Rule, who: str, seconds: int) -> str:
    return f"{rule.name}|{who}|{seconds // (rule.cooldown_minutes * 60)}"


def _fires(rule: Rule, rules: RuleSet, facts: EntryFacts, counts: dict[str, int]) -> bool:
    """Whether `rule` fires on `facts` (`_detail` says why)."""
    if isinstance(rule, NightRule):
        return is_night(facts.time.astimezone(rules.zone).time(), rule.start, rule.end)
    if isinstance(rule, VolumeRule):
        return counts.get(rule.name, 0) > rule.max_count
    if isinstance(rule, DenialsRule):
        return facts.decision in rule.decisions and counts.get(rule.name, 0) >= rule.count
    if isinstance(rule, NetworkRule) and facts.client_ip:
        return outside_networks(rule, rules, facts.organisation_id, facts.client_ip) is not None
    return False


def _detail(rule: Rule, rules: RuleSet, facts: EntryFacts, counts: dict[str, int]) -> str:
    """Why `rule` fires on `facts`, which `_fires` said it does."""
    if isinstance(rule, NightRule):
        local = facts.time.astimezone(rules.zone)
        return f"{facts.type} at {local:%H:%M} {rules.timezone} ({format_time(facts.time)})"
    if isinstance(rule, VolumeRule):
        what = "/".join(rule.types)
        n = counts.get(rule.name, 0)
        return f"{n} {what} events within {rule.window_minutes} min (limit {rule.max_count})"
    if isinstance(rule, DenialsRule):
        n = counts.get(rule.name, 0)
        return f"{n} refusals ({'/'.join(rule.decisions)}) within {rule.window_minutes} min"
    assert isinstance(rule, NetworkRule) and facts.client_ip
    return outside_networks(rule, rules, facts.organisation_id, facts.client_ip) or ""


def is_night(local: time, start: time, end: time) -> bool:
    """Whether `local` lies in `[start, end)`, an interval that may wrap midnight (22:00-06:00)."""
    if start <= end:
        return start <= local < end
    return local >= start or local < end


def outside_networks(rule: NetworkRule, rules: RuleSet, organisation_id: str | None, ip: str) -> str | None:
    """Why `ip` is not one of the organisation's declared networks, or None when it is (or cannot tell)."""
    declared = rules.organisations.get(organisation_id or "")
    if declared is None:
        if rule.undeclared == "alert":
            return f"client IP {ip}: organisation {organisation_id} declared no networks"
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return f"client IP {ip!r} is not an IP address (organisation {organisation_id})"
    if any(address.version == net.version and address in net for net in declared.networks):
        return None
    return f"client IP {ip} outside the networks declared for organisation {organisation_id}"
