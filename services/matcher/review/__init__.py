"""The programme's review (issue 16, item 4): the matcher's aggregates for a
quarter or a year, through the disclosure rules (disclosure.py)."""
