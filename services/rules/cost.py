"""What a session costs the public purse, in whole NT$.

The contract states an hourly rate; a session of `minutes` costs
rate x minutes / 60, and that is rounded **up** to the whole NT$ the
ledger counts in. Up, because the budget must cover what is paid: a
schedule whose rounded costs fit a budget also fits it at the exact ones
(FORMAT.md's rule 6), and nothing the optimizer plans is refused by the
quota for a fraction of a dollar. The quota's charge, the optimizer's
model, the baseline, the verifier and the reports all call this.
"""

from __future__ import annotations

from fractions import Fraction


def session_cost_ntd(hourly_rate_ntd: int | Fraction, minutes: int) -> int:
    exact = Fraction(hourly_rate_ntd) * minutes / 60
    return -(-exact.numerator // exact.denominator)
