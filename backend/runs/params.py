"""Hyperparameter search: a run's params as typed, indexed rows, and the filters that search them.

One source for the API (`param=lora_rank:16`), the CLI (`--param lora_rank=16`) and the WebUI. A run's params are its
config's flat LLaMA-Factory keys (`Config.params`), one `run_params` row each, written when the run is launched:
numbers in `num` (equality and ranges use the (key, num, loss) index), text and booleans in `text` (the (key, text,
loss) index). Lists, mappings, keys over 64 characters and text over 255 characters are not searchable (no row).

Each row also carries its run's final loss (`loss`, +inf while it has none), written with the run's own: at launch
(`record_params`) and when the run finishes (`record_loss`, in the same transaction). So "best loss first" with an
equality filter reads that filter's index already in loss order and probes the other filters per row, instead of
probing runs read from the runs' loss index (~300 rows read for a page of 50 at 100,000 runs, not ~3,000).

A filter names a key some run has; its value must fit that key's type (a number for a numeric key). Anything else is
one error naming the filter, before any query runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, exists, func, insert, literal, null, select, update
from sqlalchemy.orm import Session, aliased

from backend.errors import InvalidQuery
from backend.store.models import Run, RunParam

KEY_MAX = 64
TEXT_MAX = 255
MAX_FILTERS = 10
# Counting a filter's runs stops here: enough to choose how to ask, cheap on an index (~1 ms).
COUNT_CAP = 10_000
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_SEPARATORS = re.compile(r"[:=]")
FIELD = "param"


def loss_key(final_loss: float | None) -> float:
    """A run's final loss as `run_params.loss` holds it: +inf when it has none (or none that is finite), so that an
    ascending index puts those runs last on both databases (SQLite's indexes sort NULL first and cannot serve
    NULLS LAST), ties by run id, as `RunQueries.list` orders runs."""
    return final_loss if final_loss is not None and math.isfinite(final_loss) else math.inf


def param_row(run_id: int, key: str, value: Any, final_loss: float | None = None) -> dict[str, Any] | None:
    """The `run_params` row of one value, or None when the value is not searchable."""
    if len(key) > KEY_MAX:
        return None
    row = {"run_id": run_id, "key": key, "num": None, "text": None, "loss": loss_key(final_loss)}
    if isinstance(value, bool):  # before int: a bool is an int to Python
        return row | {"text": "true" if value else "false"}
    if isinstance(value, int | float):
        return row | {"num": float(value)} if math.isfinite(value) else None
    if isinstance(value, str) and len(value) <= TEXT_MAX:
        return row | {"text": value}
    return None


def param_rows(run_id: int, params: Mapping[str, Any], final_loss: float | None = None) -> list[dict[str, Any]]:
    """The rows of every searchable value of a run's params."""
    return [row for key, value in params.items() if (row := param_row(run_id, key, value, final_loss)) is not None]


def record_params(s: Session, run_id: int, params: Mapping[str, Any]) -> int:
    """Write a run's param rows (in the caller's transaction, after the run's row, whose final loss they copy);
    returns how many."""
    rows = param_rows(run_id, params, s.scalar(select(Run.final_loss).where(Run.id == run_id)))
    if rows:
        s.execute(insert(RunParam), rows)
    return len(rows)


def record_loss(s: Session, run_id: int, final_loss: float | None) -> None:
    """Copy a run's final loss to its param rows: call it in the transaction that sets `Run.final_loss`."""
    s.execute(update(RunParam).where(RunParam.run_id == run_id).values(loss=loss_key(final_loss)))


@dataclass(frozen=True)
class ParamFilter:
    """One `key=value` or `key=low..high` filter (either end of a range may be left open)."""

    given: str  # as the user wrote it, for messages
    key: str
    value: str | None = None  # equality
    low: str | None = None  # range ends, inclusive
    high: str | None = None

    @property
    def is_range(self) -> bool:
        return self.value is None

    @classmethod
    def parse(cls, given: str) -> ParamFilter:
        """`key=value`, `key:value` (the API's form), or a range `key=a..b`, `key=a..`, `key=..b`."""
        parts = _SEPARATORS.split(given, maxsplit=1)
        if len(parts) != 2 or not parts[0].strip():
            raise _invalid(given, "write it as name=value or name=low..high")
        key, raw = parts[0].strip(), parts[1].strip()
        if not _KEY_RE.match(key) or len(key) > KEY_MAX:
            raise _invalid(given, f"{key!r} is not a parameter name")
        if raw == "":
            raise _invalid(given, "give a value after the name")
        if ".." in raw:
            low, high = (end.strip() or None for end in raw.split("..", 1))
            if low is None and high is None:
                raise _invalid(given, "a range needs at least one end")
            return cls(given, key, low=low, high=high)
        return cls(given, key, value=raw)


def parse_filters(given: Iterable[str]) -> list[ParamFilter]:
    """Parse every filter (the syntax only: whether the keys exist is asked of the database by `param_search`)."""
    filters = [ParamFilter.parse(g) for g in given]
    if len(filters) > MAX_FILTERS:
        raise InvalidQuery(f"{FIELD}: at most {MAX_FILTERS} filters, got {len(filters)}", field=FIELD)
    return filters


# A filter's shape: (numeric, equality, has a low end, has a high end). The statements are built once per shape of
# the filters, with bound parameters for keys and values (building and keying SQLAlchemy statements was half of a
# search's own CPU time); `search_f<i>...` names cannot meet the names SQLAlchemy gives literal values.
Shape = tuple[bool, bool, bool, bool]
DRIVER = aliased(RunParam, name="driver")


@dataclass(frozen=True)
class _Match:
    """What one filter matches: one range of the (key, num) or (key, text) index; `low == high` for equality."""

    key: str
    numeric: bool
    low: Any
    high: Any

    @property
    def is_equality(self) -> bool:
        return self.low is not None and self.low == self.high

    @property
    def shape(self) -> Shape:
        return (self.numeric, self.is_equality, self.low is not None, self.high is not None)

    def values(self, name: str) -> dict[str, Any]:
        """The bound values of `_conditions(..., name, self.shape)`."""
        return {f"{name}_key": self.key, f"{name}_low": self.low, f"{name}_high": self.high}


def _conditions(table: Any, name: str, shape: Shape) -> list[Any]:
    numeric, equality, has_low, has_high = shape
    column = table.num if numeric else table.text
    conditions = [table.key == bindparam(f"{name}_key")]
    if equality:
        return [*conditions, column == bindparam(f"{name}_low")]
    if has_low:
        conditions.append(column >= bindparam(f"{name}_low"))
    if has_high:
        conditions.append(column <= bindparam(f"{name}_high"))
    return conditions


def _lookup(name: str, shape: Shape) -> Any:
    return select(literal(1)).select_from(RunParam).where(*_conditions(RunParam, name, shape))


@dataclass(frozen=True)
class ParamSearch:
    """The conditions the filters make, the values bound in them (`values`: pass them when executing), and, when
    one filter's index is read first in loss order, that alias of run_params (`driver`): the query reads from it,
    joins the run on `driver.run_id` and orders by `order`."""

    clauses: Sequence[Any] = ()
    driver: Any = None
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def order(self) -> tuple[Any, ...]:
        return (self.driver.loss, self.driver.run_id)


def param_search(s: Session, filters: Sequence[ParamFilter], rows_wanted: int, by_loss: bool = False) -> ParamSearch:
    """How to ask for the runs the filters match, checked against the keys runs have: an unknown key, a number
    expected and not given, or a range of text is an error naming the filter.

    How they are written decides the plan, and the database's planner cannot see that two filters together match a
    thirtieth of the runs while each matches a fifth. Each filter's runs are counted in its index (up to COUNT_CAP).
    Best loss first with an equality as the smallest filter: that filter's index rows are read in loss order (the
    `driver`) and the others probed per row, so the page is found after ~rows_wanted / (share of its rows matching
    the others) rows, never more than it has. Otherwise, when walking the runs in the list's order (an index) finds
    `rows_wanted` within fewer runs than the smallest filter matches, every filter is an EXISTS probe per run;
    else the smallest filter's runs are looked up first (IN) and the others probed."""
    if not filters:
        return ParamSearch()
    # One round trip checks the keys and counts: each filter's value is counted as each type it may be (a number,
    # text), and the key's type picks the count that applies (or the error, the same as checking the type first).
    readings = [(_reading(f, numeric=True), _reading(f, numeric=False)) for f in filters]
    check_values: dict[str, Any] = {}
    for i, (f, (as_number, as_text)) in enumerate(zip(filters, readings, strict=True)):
        check_values[f"search_f{i}_key"] = f.key
        for name, reading in ((f"search_f{i}n", as_number), (f"search_f{i}t", as_text)):
            if reading is not None:
                check_values |= reading.values(name)
    shapes = tuple((n.shape if n else None, t.shape if t else None) for n, t in readings)
    *found, total = s.execute(_check_statement(shapes), check_values).one()
    matches, counts = [], []
    for i, f in enumerate(filters):
        numeric, as_number, as_text = found[3 * i : 3 * i + 3]
        if numeric is None:
            raise InvalidQuery(f"{FIELD}: no run has a parameter named {f.key!r}", field=FIELD)
        matches.append(_match(f, bool(numeric)))  # raises what the key's type makes of the value
        counts.append(as_number if numeric else as_text)
    values: dict[str, Any] = {}
    for i, m in enumerate(matches):
        values |= m.values(f"search_f{i}")
    match_shapes = tuple(m.shape for m in matches)
    smallest = min(range(len(counts)), key=counts.__getitem__)
    if by_loss and matches[smallest].is_equality:
        return ParamSearch(_driver_clauses(match_shapes, smallest), DRIVER, values)
    fraction = math.prod(count / total for count in counts)
    walk = fraction > 0 and rows_wanted / fraction <= counts[smallest]
    return ParamSearch(_run_clauses(match_shapes, smallest, walk), None, values)


@lru_cache(maxsize=256)
def _check_statement(shapes: tuple[tuple[Shape | None, Shape | None], ...]) -> Any:
    """Each filter's key type (`search_f<i>_key`) and its runs counted as a number (`search_f<i>n`) and as text
    (`search_f<i>t`) where its value can be that; then the highest run id."""
    columns: list[Any] = []
    for i, (as_number, as_text) in enumerate(shapes):
        columns.append(_key_type(bindparam(f"search_f{i}_key")))
        for name, shape in ((f"search_f{i}n", as_number), (f"search_f{i}t", as_text)):
            columns.append(_count(_lookup(name, shape)) if shape is not None else null())
    columns.append(select(func.coalesce(func.max(Run.id), 1)).scalar_subquery())
    return select(*columns)


@lru_cache(maxsize=256)
def _driver_clauses(shapes: tuple[Shape, ...], driving: int) -> tuple[Any, ...]:
    """The driving filter on DRIVER, and EXISTS probes of the others.

    Every row of a run carries its loss, so a probe names the other filter's whole index entry (key, value, loss,
    run_id): both index ranges are in (loss, run_id) order and PostgreSQL merges them (0.4 ms for a page at 100,000
    runs, where probing the primary key and the table per row took 8-20 ms)."""
    probes = (
        exists(_lookup(f"search_f{i}", shape).where(RunParam.loss == DRIVER.loss, RunParam.run_id == DRIVER.run_id))
        for i, shape in enumerate(shapes)
        if i != driving
    )
    return (*_conditions(DRIVER, f"search_f{driving}", shapes[driving]), *probes)


@lru_cache(maxsize=256)
def _run_clauses(shapes: tuple[Shape, ...], smallest: int, walk: bool) -> tuple[Any, ...]:
    """Each filter as a probe per run (EXISTS), or, unless walking, the smallest as the runs it matches (IN)."""
    clauses = []
    for i, shape in enumerate(shapes):
        lookup = _lookup(f"search_f{i}", shape)
        if walk or i != smallest:
            clauses.append(exists(lookup.where(RunParam.run_id == Run.id)))
        else:
            clauses.append(Run.id.in_(lookup.with_only_columns(RunParam.run_id)))
    return tuple(clauses)


def _key_type(key: Any) -> Any:
    """Whether runs hold `key` as a number (true) or as text (false), NULL when no run has it: LLaMA-Factory's keys
    are typed, so one row tells (one index probe)."""
    return select(RunParam.num.is_not(None)).where(RunParam.key == key).limit(1).scalar_subquery()


def _count(lookup: Any) -> Any:
    """A filter's runs counted in its index, up to COUNT_CAP."""
    return select(func.count()).select_from(lookup.limit(COUNT_CAP).subquery()).scalar_subquery()


def _reading(f: ParamFilter, numeric: bool) -> _Match | None:
    """The filter read as the given type, or None when its value cannot be that type."""
    try:
        return _match(f, numeric)
    except InvalidQuery:
        return None


def _match(f: ParamFilter, numeric: bool) -> _Match:
    """The filter checked against its key's type (numeric or text)."""
    if numeric:
        low, high = (_number(f, end) for end in ((f.value, f.value) if not f.is_range else (f.low, f.high)))
        if low is not None and high is not None and low > high:
            raise _invalid(f.given, f"the range is empty ({f.low} > {f.high})")
        return _Match(f.key, True, low, high)
    if f.is_range:
        raise _invalid(f.given, f"{f.key} is not numeric: give one value, not a range")
    text = _text(f.value or "")
    return _Match(f.key, False, text, text)


def _number(f: ParamFilter, raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _invalid(f.given, f"{f.key} is numeric, {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise _invalid(f.given, f"{f.key} is numeric, {raw!r} is not a finite number")
    return value


def _text(raw: str) -> str:
    # booleans are stored as true/false; True, FALSE... as YAML would read them
    return raw.lower() if raw.lower() in ("true", "false") else raw


def _invalid(given: str, reason: str) -> InvalidQuery:
    return InvalidQuery(f"{FIELD}: {given!r}: {reason}", field=FIELD)
