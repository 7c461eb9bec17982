"""Plans that keep their leading part between calls, so a model can reuse its KV cache.

A model that keeps the key/value cache of its last prompt only has to prefill what comes after the
first item that changed. A fresh plan per call changes early items often: the budget squeeze moves
the oldest pages of a tier down one tier, and spare budget goes to the newest pages, so almost every
call changes some page near the front and everything after it is prefilled again.

`extend` is the other half of a simple hysteresis: a memory plans afresh under the budget minus some
slack (`slack_tokens`), and on the following calls keeps that plan's segments exactly as they were,
with every turn added since as raw text after them, for as long as that fits the real budget. Only
when it no longer fits (or age forbids a page it shows) is the next fresh plan made, again with the
slack: tier changes come in one batch every few turns instead of a few on every turn.

Pure functions over `Plan` and `Planner`; nothing here knows a model.
"""

from __future__ import annotations

import dataclasses

from .plan import Plan, Planner, Segment


def slack_tokens(budget: int, reserve: int, fraction: float) -> int:
    """The headroom a fresh plan leaves for the turns that follow it (whole tokens)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the slack fraction must be within [0, 1), not {fraction!r}")
    return max(int(fraction * max(budget - reserve, 0)), 0)


def extend(prev: Plan, planner: Planner, budget: int, reserve: int, fresh: Plan) -> Plan | None:
    """`prev`'s segments unchanged, then every turn added since as raw text; None when that does not fit
    `budget - reserve`, when a turn `prev` showed as a page or dropped is now pinned, or when `fresh`
    (this call's plan, whose age floors count) forbids a page `prev` shows: dropped by age, or (strict
    decay, `fill_budget=False`) sharper than its age floor.

    The result holds every turn exactly once (the old segments hold the old turns, the new text run
    the new ones), keeps older pages never sharper than newer ones (nothing new is a page), and keeps
    the newest turn and every turn not yet on a sealed page as text (all new turns are)."""
    n, n0 = len(planner.turns), prev._turns
    if n0 <= 0 or n0 > n or prev.budget != budget:
        return None
    per_turn = planner.overhead.per_turn
    turns = planner.turns
    added = sum(turns[i].tokens for i in range(n0, n))
    cost = added + per_turn * (n - n0)
    total = prev.total_tokens + cost
    if total > budget - reserve:
        return None
    lad = planner.ladder
    floors = fresh.floors()
    for a, b, tier in prev.tier_runs:
        if tier == "dropped":
            continue
        for p in range(a, b):
            f = floors.get(p)
            if f is None:
                continue
            if f == "dropped":
                return None
            if not planner.policy.fill_budget and lad.index(f) > lad.index(tier):
                return None
    if any(turns[t].pinned for s in prev.segments if s.kind != "text" for t in s.turns):
        return None
    segments = list(prev.segments)
    if n > n0:
        last = segments[-1] if segments else None
        if last is not None and last.kind == "text" and last.turns.stop == n0 and getattr(last, "tail_from", None) is None:
            reasons = sorted(set(last.reason.split(", ")) | {"recent"}) if last.reason else ["recent"]
            segments[-1] = Segment("text", None, last.tokens + cost, range(last.turns.start, n),
                                   reason=", ".join(r for r in reasons if r))
        else:
            segments.append(Segment("text", None, cost, range(n0, n), reason="recent"))
    return dataclasses.replace(prev, segments=tuple(segments), available=budget - reserve - planner.overhead.fixed,
                               total_tokens=total, text_tokens_represented=prev.text_tokens_represented + added,
                               age_runs=fresh.age_runs, _firsts=planner._firsts, _lasts=planner._lasts, _turns=n)


__all__ = ["extend", "slack_tokens"]
