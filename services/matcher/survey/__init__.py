"""The satisfaction survey (issue 16, item 4; Miaoli 9): after an attended
session the employee gets a one-time link, answers a few questions
without signing in, and the answers are kept apart from the person and
the session, and reported only in aggregate (results.py).

What an answer keeps: a random id, the ISO week of its session, the
provider, the case's category, the question and a score (1-5) or a text.
No employee, booking or case id, and no moment finer than the week.
"""
