"""The programme's disclosure threshold (DOMAIN.md, "Confidentiality": HR
reporting sees aggregates only): no figure released about use of the
programme (sessions, money, satisfaction) may stand for fewer than this
many distinct people. The quota's suppression (services/quota/disclosure.py)
and every report apply this one number."""

MIN_CELL_PEOPLE = 5
"""A group of fewer distinct people than this is never shown."""
