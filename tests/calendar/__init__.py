"""The calendar: planning, meeting times, group sessions, the office calendar."""
