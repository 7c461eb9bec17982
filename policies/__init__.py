"""Which tier each page gets: age decay, token budgets, pins. Pure functions over small records (stdlib only).

    from optimem.policies import Ladder, PageInfo, TierCost, TurnInfo, plan
    ladder = Ladder((TierCost("sharp", 400, 0.99), TierCost("blurred", 64, 0.86)))  # a backend's, e.g.
    p = plan(turns, pages, budget=8192, ladder=ladder)                               # optimem.ladders
    print(p.explain())
"""

from .exact import detect_exact
from .ladder import Ladder, PolicyError, TierCost
from .plan import Location, Overhead, PageInfo, Plan, Planner, Policy, Schedule, Segment, TailInfo, TurnInfo, plan

__all__ = [
    "Ladder", "Location", "Overhead", "PageInfo", "Plan", "Planner", "Policy", "PolicyError", "Schedule",
    "Segment", "TailInfo", "TierCost", "TurnInfo", "detect_exact", "plan",
]
