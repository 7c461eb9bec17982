"""Which tier each page gets: age decay, token budgets, pins. Pure functions over small records (stdlib only).

    from policies import DEEPSEEK_OCR_V1, PageInfo, TurnInfo, plan
    p = plan(turns, pages, budget=8192, ladder=DEEPSEEK_OCR_V1)
    print(p.explain())
"""

from policies.exact import detect_exact
from policies.ladder import DEEPSEEK_OCR_V1, Ladder, PolicyError, TierCost
from policies.plan import PageInfo, Plan, Planner, Policy, Schedule, Segment, TurnInfo, plan

__all__ = [
    "DEEPSEEK_OCR_V1", "Ladder", "PageInfo", "Plan", "Planner", "Policy", "PolicyError", "Schedule",
    "Segment", "TierCost", "TurnInfo", "detect_exact", "plan",
]
