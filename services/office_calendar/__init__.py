"""The Taiwan government office calendar: which days offices open.

Read from the Directorate-General of Personnel Administration's CSV layout
(open-data dataset 14718): one file a year, columns 西元日期 (YYYYMMDD),
星期 (weekday), 是否放假 (2 closed, 0 open; a Saturday with 0 is a make-up
workday) and 備註 (the holiday's name). The matcher and the calendar service
both plan on it. The shipped years live in `data/`; a new year is a new file
there or an import through the calendar service, never a code change.
"""

from services.office_calendar.calendar import OfficeCalendar, OfficeDay
from services.office_calendar.dgpa_csv import CalendarFileError, parse_dgpa_csv
from services.office_calendar.shipped import load_shipped, shipped_years

__all__ = [
    "CalendarFileError",
    "OfficeCalendar",
    "OfficeDay",
    "load_shipped",
    "parse_dgpa_csv",
    "shipped_years",
]
