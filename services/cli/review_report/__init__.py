"""The HR review report of a quarter or a year (issue 16, item 4)."""
