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

from dataclasses import dataclass
from fractions import Fraction


def session_cost_ntd(hourly_rate_ntd: int | Fraction, minutes: int) -> int:
    exact = Fraction(hourly_rate_ntd) * minutes / 60
    return -(-exact.numerator // exact.denominator)


@dataclass(frozen=True)
class Share:
    """A participant's part of a group session's provider hours and cost.

    A group session is one session of the counselor's time, however many
    attend: the provider's hours and the money are spent once and shared out
    among the participants' holds (so each agency pays for its own staff),
    while each participant spends a whole session of their own entitlement
    and their week's one session. Shares are whole minutes and whole NT$:
    the first `total % size` participants carry one unit more, so the parts
    always add up to the total. An individual session is the share 0 of 1.
    """

    size: int = 1
    index: int = 0

    def of(self, total: int) -> int:
        return total // self.size + (1 if self.index < total % self.size else 0)
