"""Typed step parameters: one declaration checks a verb's parameters wherever they come from.

A verb declares its parameters once (`Param(name, kind, required, default, example)`); the
scenario parser checks a step against them (errors name the key path, `steps[3].rate`), and
lab.faults checks a direct `apply()` call against the same declaration (errors name the
parameter, `rate is a bad rate ...`). Where the problem is reported is the caller's `Where`;
a kind only says what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Where(Protocol):
    """How a problem with a parameter is reported, by whoever checks it."""

    def fail(self, path: str, message: str) -> Exception:
        """`message` says what is wrong with the value at `path` ("must be ...", "is ...")."""
        ...

    def missing(self, path: str, example: str) -> Exception: ...

    def unknown(self, path: str, keys: Sequence[str], allowed: Sequence[str]) -> Exception: ...


# A kind checks one written value and returns it normalized (e.g. "10mbit" -> 10000000).
Kind = Callable[[object, Where, str], Any]


@dataclass(frozen=True)
class Param:
    name: str
    kind: Kind
    required: bool = False
    # Used when the parameter is absent, checked like a written value; None: it stays absent.
    default: object = None
    example: str = ""  # shown when a required parameter is missing, e.g. "rate: 10mbit"


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check_params(
    params: Sequence[Param],
    written: Mapping[str, object],
    where: Where,
    path: str = "",
    *,
    ignore: frozenset[str] = frozenset(),
    also_allowed: Sequence[str] = (),
) -> dict[str, Any]:
    """The written parameters, checked against the declaration and normalized, defaults
    filled in. Keys in `ignore` are someone else's (not checked, not returned); keys in
    `also_allowed` are checked by the caller (listed as allowed, not returned)."""
    declared = {p.name for p in params}
    unknown = sorted(k for k in written if k not in declared and k not in ignore)
    unknown = [k for k in unknown if k not in also_allowed]
    if unknown:
        raise where.unknown(path, unknown, sorted(declared | set(also_allowed)))
    for p in params:
        if p.required and p.name not in written:
            raise where.missing(join(path, p.name), p.example)
    out: dict[str, Any] = {}
    for p in params:
        if p.name in written:
            out[p.name] = p.kind(written[p.name], where, join(path, p.name))
        elif p.default is not None:
            out[p.name] = p.kind(p.default, where, join(path, p.name))
    return out


# --------------------------------------------------------------------------- kinds


def _g(v: float) -> str:
    return f"{v:g}"


def number(*, gt: float | None = None, ge: float | None = None, le: float | None = None) -> Kind:
    """An int or float (never a boolean) in the given bounds -> float."""

    def check(value: object, where: Where, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise where.fail(path, f"must be a number, not {value!r}")
        v = float(value)
        low_ok = (gt is None or v > gt) and (ge is None or v >= ge)
        if low_ok and (le is None or v <= le):
            return v
        if gt is not None and le is not None:
            raise where.fail(path, f"must be in ({_g(gt)}, {_g(le)}], not {_g(v)}")
        if le is not None and not v <= le:
            raise where.fail(path, f"must be <= {_g(le)}, not {_g(v)}")
        bound = f"> {_g(gt)}" if gt is not None else f">= {_g(ge or 0)}"
        raise where.fail(path, f"must be {bound}, not {_g(v)}")

    return check


def choice(*options: str, refused: Mapping[str, str] | None = None) -> Kind:
    """One of `options`; a value in `refused` gets its own explanation (why it is not one)."""
    listed = options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"

    def check(value: object, where: Where, path: str) -> str:
        if isinstance(value, str) and value in options:
            return value
        if refused and isinstance(value, str) and value in refused:
            raise where.fail(path, f"is {value!r}: {refused[value]}")
        raise where.fail(path, f"must be {listed}, not {value!r}")

    return check


def parsed(parse: Callable[[object], Any]) -> Kind:
    """A value `parse` understands; its ValueError says what the value is ("is a bad ...")."""

    def check(value: object, where: Where, path: str) -> Any:
        try:
            return parse(value)
        except ValueError as e:
            raise where.fail(path, str(e)) from None

    return check
