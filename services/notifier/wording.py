"""What a notification says, in the reader's language.

Generic on purpose: an e-mail or a phone's lock screen may be read over
someone's shoulder, so no subject or first line (the preview) names the
kind of help, a counselor's specialty, or the words counseling, 諮商 or
輔導: only "an appointment", its time, and how it is held. The details
are behind the booking page, after signing in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from services.matcher.notices.writer import NoticeKind as Kind
from services.rules.explanations import N_
from services.rules.office_time import OFFICE_ZONE
from services.runtime.dates import day_and_time, short_date
from services.runtime.i18n import speaking, tr

# Words a subject or a preview line must never hold (a test reads every
# message against them, in every language).
NEVER_SHOWN = ("諮商", "輔導", "counsel", "therap", "心理")


SUBJECTS = {
    Kind.CONFIRMED: N_("Your appointment is confirmed"),
    Kind.CHANGED: N_("Your appointment has a new time"),
    Kind.CANCELLED: N_("Your appointment is cancelled"),
    Kind.REMINDER: N_("Reminder: your appointment on {when}"),
    Kind.OFFER: N_("A time is free for you until {until}"),
    Kind.SURVEY: N_("A short question about your appointment on {when}"),
}
OPENINGS = {
    Kind.CONFIRMED: N_("Your appointment is booked for {when}."),
    Kind.CHANGED: N_("Your appointment now takes place on {when}."),
    Kind.CANCELLED: N_("Your appointment on {when} will not take place."),
    Kind.REMINDER: N_("This is a reminder of your appointment on {when}."),
    Kind.OFFER: N_("A time you asked for is free: {when}. It is held for you until {until}."),
    Kind.SURVEY: N_("Thank you for your appointment on {when}. How did it go for you?"),
}
MODALITIES = {
    "in_person": N_("In person"),
    "video": N_("By video"),
    "phone": N_("By phone"),
}
SUMMARY = N_("Appointment")  # the calendar entry's title
PLACE = N_("Where: {place}")
VIDEO_LINK = N_("Video link: {link}")
HOW = N_("How: {how}")
CLOSING = N_("To change or cancel it, sign in to the booking page: {page}")
NO_REPLY = N_("This message was sent automatically; replies are not read.")
SURVEY_ASK = N_(
    "A few questions, a minute or two. Your answers are anonymous: they are kept "
    "without your name or your appointment, and read only in totals of five people or more."
)
SURVEY_LINK = N_("Answer here (the link works once, until {until}): {link}")
SURVEY_PAGE = "survey.html"  # beside the booking page (services/edge/page)


@dataclass(frozen=True)
class Notice:
    """What a notification is about: no name, no category, no case."""

    kind: Kind
    start: datetime
    modality: str  # services.matcher's Modality value
    place: str = ""  # for a session in person
    video_link: str = ""  # for a video session
    hold_until: datetime | None = None  # for an offer; for a survey, when its link closes
    page: str = ""  # the booking page's address
    survey_token: str = ""  # for a survey: its link's token


@dataclass(frozen=True)
class Words:
    subject: str
    text: str  # plain text; its first line is the preview

    @property
    def preview(self) -> str:
        return self.text.split("\n", 1)[0]


def compose(notice: Notice, language: str) -> Words:
    with speaking(language):
        when = day_and_time(notice.start.astimezone(OFFICE_ZONE))
        until = day_and_time(notice.hold_until.astimezone(OFFICE_ZONE)) if notice.hold_until else ""
        lines = [tr(OPENINGS[notice.kind], when=when, until=until), ""]
        if notice.kind is Kind.SURVEY:
            link = f"{notice.page.rstrip('/')}/{SURVEY_PAGE}#token={notice.survey_token}"
            lines += [tr(SURVEY_ASK), "", tr(SURVEY_LINK, until=until, link=link), "", tr(NO_REPLY)]
            subject = tr(
                SUBJECTS[notice.kind], when=short_date(notice.start.astimezone(OFFICE_ZONE).date())
            )
            return Words(subject, "\n".join(lines) + "\n")
        lines.append(tr(HOW, how=tr(MODALITIES.get(notice.modality, MODALITIES["in_person"]))))
        if notice.place and notice.modality == "in_person":
            lines.append(tr(PLACE, place=notice.place))
        if notice.video_link and notice.modality == "video":
            lines.append(tr(VIDEO_LINK, link=notice.video_link))
        if notice.page and notice.kind is not Kind.CANCELLED:
            lines += ["", tr(CLOSING, page=notice.page)]
        lines += ["", tr(NO_REPLY)]
        return Words(tr(SUBJECTS[notice.kind], when=when, until=until), "\n".join(lines) + "\n")


DAY_SUBJECT = N_("Your appointments on {day}")
DAY_OPENING = N_("You have {count} appointments on {day}:")
DAY_CLOSING = N_("The details are on the booking page: {page}")


@dataclass(frozen=True)
class DayItem:
    """One session of a counselor's day: its time and how it is held."""

    start: datetime
    minutes: int
    modality: str
    place: str = ""


def compose_day(items: list[DayItem], page: str, language: str) -> Words:
    """A counselor's day: the times and how each is held, nobody's name."""
    with speaking(language):
        first = items[0].start.astimezone(OFFICE_ZONE)
        day = short_date(first.date())
        lines = [tr(DAY_OPENING, count=len(items), day=day), ""]
        for item in items:
            start = item.start.astimezone(OFFICE_ZONE)
            end = start + timedelta(minutes=item.minutes)
            how = tr(MODALITIES.get(item.modality, MODALITIES["in_person"]))
            # Times and a translated word: no sentence to translate.
            lines.append(f"{start:%H:%M}-{end:%H:%M} {how} {item.place}".rstrip())
        if page:
            lines += ["", tr(DAY_CLOSING, page=page)]
        lines += ["", tr(NO_REPLY)]
        return Words(tr(DAY_SUBJECT, day=day), "\n".join(lines) + "\n")


def calendar_title(language: str) -> str:
    """A calendar entry's title: one generic word, whatever the session."""
    with speaking(language):
        return tr(SUMMARY)
