"""The calendar service: the programme's year of meetings, trainings and group sessions."""
