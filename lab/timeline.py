"""When steps fire: `at: S` (seconds after time 0), or `after:` a step, `discovered` or an
event (plus `delay`). The language (parse_trigger, check_cycles) and its meaning during a run
(Timeline) are kept together here; what a step does is lab.verbs', who runs it lab.runner's.

Time 0 is the moment every initially started node is listening. A trigger is looked at every
tick; the first tick it holds fixes the step's time (that moment + delay), so a trigger that
holds once and not later (an event that scrolls by) still fires its step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from lab.checks import Context, join
from lab.scenario import EVENTS, EventSpec, Step, Trigger

# --------------------------------------------------------------------------- the language


def parse_trigger(
    item: dict[str, Any], p: str, ids: dict[str, int], i: int, ctx: Context
) -> Trigger:
    """The `at` / `after` / `delay` keys of step i (at path p); `ids`: step id -> index."""
    if "at" in item and "after" in item:
        raise ctx.fail(p, "has both `at` and `after`: use one")
    if "delay" in item and "after" not in item:
        raise ctx.fail(join(p, "delay"), "only with `after` (use `at` for absolute times)")
    if "after" not in item:
        return Trigger("at", at=ctx.number(item.get("at", 0), join(p, "at")))
    trigger = _after(item["after"], join(p, "after"), ids, i, ctx)
    delay = ctx.number(item.get("delay", 0), join(p, "delay"))
    return Trigger(trigger.kind, step=trigger.step, event=trigger.event, delay=delay)


def _after(v: object, p: str, ids: dict[str, int], i: int, ctx: Context) -> Trigger:
    if v == "discovered":
        return Trigger("discovered")
    if isinstance(v, str):
        if v not in ids:
            known = ", ".join(sorted(ids)) or "none have an `id`"
            raise ctx.fail(p, f"no step with id {v!r} (step ids: {known})")
        if ids[v] == i:
            raise ctx.fail(p, "a step cannot wait for itself")
        return Trigger("step", step=v)
    return Trigger("event", event=parse_event_spec(v, p, ctx))


def parse_event_spec(v: object, p: str, ctx: Context) -> EventSpec:
    """`{event: E, node: N}` or `{event: E, group: G}`, with the filters file, peer, code and
    progress (transfer_progress only)."""
    keys = ("event", "node", "group", "file", "peer", "code", "progress")
    m = ctx.mapping(v, p, keys, ("event",))
    ev = ctx.string(m["event"], join(p, "event"))
    if ev not in EVENTS:
        raise ctx.fail(
            join(p, "event"), f"unknown event {ev!r} (events: {', '.join(sorted(EVENTS))})"
        )
    if ("node" in m) == ("group" in m):
        raise ctx.fail(p, "needs exactly one of `node` or `group`")
    key = "node" if "node" in m else "group"
    ref = ctx.string(m[key], join(p, key))
    nodes = ctx.refs.resolve(ref, join(p, key), kind=key)
    file = ctx.string(m["file"], join(p, "file")) if "file" in m else None
    peer = None
    if "peer" in m:
        peer = ctx.string(m["peer"], join(p, "peer"))
        ctx.refs.hostile_ok = True  # the peer an event is about may be a hostile one
        try:
            ctx.refs.resolve(peer, join(p, "peer"), kind="node")
        finally:
            ctx.refs.hostile_ok = False
    code = ctx.string(m["code"], join(p, "code")) if "code" in m else None
    progress = None
    if "progress" in m:
        if ev != "transfer_progress":
            raise ctx.fail(join(p, "progress"), "only for event: transfer_progress")
        progress = ctx.fraction(m["progress"], join(p, "progress"))
    return EventSpec(
        event=ev, ref=ref, nodes=nodes, file=file, peer=peer, code=code, progress=progress
    )


def check_cycles(steps: Sequence[Step], ids: dict[str, int], ctx: Context) -> None:
    """Steps that wait for each other in a circle would never run: refused at load time."""
    deps = {
        s.index: ids[s.trigger.step] for s in steps if s.trigger.kind == "step" and s.trigger.step
    }
    for start in deps:
        chain = [start]
        cur = start
        while cur in deps:
            cur = deps[cur]
            if cur in chain:
                cycle = [*chain[chain.index(cur) :], cur]
                names = " -> ".join(steps[k].id for k in cycle)
                raise ctx.fail(
                    f"steps[{start}].after", f"steps wait for each other in a cycle: {names}"
                )
            chain.append(cur)


# --------------------------------------------------------------------------- during a run


class TriggerFacts(Protocol):
    """What the run knows that triggers ask about."""

    def step_done(self, step_id: str) -> bool:
        """That step's action has returned (even if it failed)."""
        ...

    def discovered(self) -> bool:
        """Every pair `after: discovered` waits for has seen each other."""
        ...

    def event_seen(self, spec: EventSpec) -> bool:
        """Every node of spec emitted a matching event since it started."""
        ...


class Timeline:
    """The steps that have not fired yet, and when each will."""

    def __init__(self, steps: Sequence[Step], t0: float) -> None:
        self.t0 = t0  # monotonic time 0
        self.pending = list(steps)
        self._held: dict[str, float] = {}  # step id -> when its trigger first held

    def fire_time(self, step: Step, now: float, facts: TriggerFacts) -> float | None:
        """When the step fires, None while its trigger has never held."""
        trig = step.trigger
        if trig.kind == "at":
            return self.t0 + trig.at
        if step.id in self._held:
            return self._held[step.id] + trig.delay
        if trig.kind == "step":
            ready = trig.step is not None and facts.step_done(trig.step)
        elif trig.kind == "discovered":
            ready = facts.discovered()
        else:
            ready = trig.event is not None and facts.event_seen(trig.event)
        if not ready:
            return None
        self._held[step.id] = now
        return now + trig.delay

    def due(self, now: float, facts: TriggerFacts) -> list[Step]:
        """The steps whose time has come (in file order); they are no longer pending."""
        out = []
        for step in list(self.pending):
            at = self.fire_time(step, now, facts)
            if at is not None and now >= at:
                self.pending.remove(step)
                out.append(step)
        return out
