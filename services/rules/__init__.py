"""The programme's rules, each stated once: what the seeds say a session is,
how often a person may have one, when a crisis must be seen, what a session
costs, which week and day a moment falls in, and the codes every refusal
and every unserved reason is named by.

Sources: the Miaoli County plan, section 5 (one session per person per week,
one to two hours, total-volume control, provider hour caps, special approval
beyond them), the Pingtung County plan (crisis cases first), and the Budget
Act art. 12 (the fiscal year is the calendar year).

Nothing here knows of gRPC, SQLAlchemy or generated code (the import-linter
contract in pyproject.toml holds it to that), so every part of the suite,
the optimizer's model as much as the quota ledger, can import it.
"""
