"""The matcher's messages both ways: protobuf to the domain (checking
every field, INVALID_ARGUMENT naming those wrong) and the domain to protobuf."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from eap.matcher.v1 import matcher_pb2 as pb
from services.matcher.booking.cases import UPDATABLE, Case, TimeOff, TimeRange
from services.matcher.booking.offers import SlotFilter
from services.matcher.booking.places import place_of
from services.matcher.booking.slots import Offer
from services.matcher.booking.store import BookingView
from services.matcher.optimization.booked import WORDS as MOVE_WORDS
from services.matcher.optimization.instance import CaseKind
from services.matcher.optimization.jobs import Proposed, ProposedMove
from services.matcher.optimization.snapshot import DEFAULT_MOVE_COST, Existing, JobRequest
from services.matcher.orm import JobRow
from services.matcher.registry.counselors import (
    LANGUAGE_TAG,
    MAX_LANGUAGES,
    AvailabilityException,
    Category,
    Counselor,
    ExceptionKind,
    Modality,
    WeeklyWindow,
)
from services.rules.attendance import Attendance
from services.runtime.fields import FieldChecker, timestamp
from services.runtime.i18n import explanation, tr

CATEGORIES = {
    pb.CATEGORY_PSYCHOLOGICAL: Category.PSYCHOLOGICAL,
    pb.CATEGORY_LEGAL: Category.LEGAL,
    pb.CATEGORY_FINANCIAL: Category.FINANCIAL,
    pb.CATEGORY_FAMILY: Category.FAMILY,
    pb.CATEGORY_HEALTH: Category.HEALTH,
    pb.CATEGORY_MANAGEMENT: Category.MANAGEMENT,
}
MODALITIES = {
    pb.MODALITY_IN_PERSON: Modality.IN_PERSON,
    pb.MODALITY_VIDEO: Modality.VIDEO,
    pb.MODALITY_PHONE: Modality.PHONE,
}
_CATEGORY_PB = {v: k for k, v in CATEGORIES.items()}
MODALITY_PB = {v: k for k, v in MODALITIES.items()}
EXCEPTION_KINDS = {
    pb.EXCEPTION_KIND_LEAVE: ExceptionKind.LEAVE,
    pb.EXCEPTION_KIND_EXTRA: ExceptionKind.EXTRA,
}
_EXCEPTION_KIND_PB = {v: k for k, v in EXCEPTION_KINDS.items()}
KINDS = {
    pb.CASE_KIND_GENERAL: CaseKind.GENERAL,
    pb.CASE_KIND_CRISIS: CaseKind.CRISIS,
    pb.CASE_KIND_INVOLUNTARY: CaseKind.INVOLUNTARY,
}
TIME_OFF = {pb.TIME_OFF_LEAVE: TimeOff.LEAVE, pb.TIME_OFF_OFFICIAL_LEAVE: TimeOff.OFFICIAL_LEAVE}
_KIND_PB = {v: k for k, v in KINDS.items()}
_TIME_OFF_PB = {v: k for k, v in TIME_OFF.items()}
_STATE_PB = {
    "held": pb.BOOKING_STATE_HELD,
    "booked": pb.BOOKING_STATE_BOOKED,
    "completed": pb.BOOKING_STATE_COMPLETED,
    "cancelled": pb.BOOKING_STATE_CANCELLED,
    "released": pb.BOOKING_STATE_RELEASED,
}
_ATTENDANCE_PB = {
    "": pb.ATTENDANCE_UNSPECIFIED,
    Attendance.ATTENDED.value: pb.ATTENDANCE_ATTENDED,
    Attendance.NO_SHOW.value: pb.ATTENDANCE_NO_SHOW,
    Attendance.LATE_CANCELLATION.value: pb.ATTENDANCE_LATE_CANCELLATION,
    Attendance.COUNSELOR_CANCELLED.value: pb.ATTENDANCE_COUNSELOR_CANCELLED,
}
MAX_SLOTS = 200


def required_moment(checker: FieldChecker, message: Any, name: str, field: str) -> datetime:
    if not message.HasField(name):
        checker.require(False, field, "required")
        return datetime.min.replace(tzinfo=UTC)
    return checker.moment(getattr(message, name), field)


def _clock(checker: FieldChecker, value: str, field: str) -> time:
    try:
        if len(value) != 5:
            raise ValueError
        return time.fromisoformat(value)
    except ValueError:
        checker.require(False, field, "a time of day, HH:MM")
        return time(0)


def counselor_from_pb(message: pb.Counselor) -> Counselor:
    """The domain counselor, or INVALID_ARGUMENT naming every bad field."""
    checker = FieldChecker()
    for n, category in enumerate(message.specialties):
        checker.require(category in CATEGORIES, f"counselor.specialties[{n}]", "a known category")
    for n, modality in enumerate(message.modalities):
        checker.require(modality in MODALITIES, f"counselor.modalities[{n}]", "a known modality")
    windows = tuple(
        WeeklyWindow(
            w.weekday,
            _clock(checker, w.start_time, f"counselor.weekly_availability[{n}].start_time"),
            _clock(checker, w.end_time, f"counselor.weekly_availability[{n}].end_time"),
        )
        for n, w in enumerate(message.weekly_availability)
    )
    exceptions = []
    for n, e in enumerate(message.exceptions):
        field = f"counselor.exceptions[{n}]"
        checker.require(e.kind in EXCEPTION_KINDS, f"{field}.kind", "leave or extra")
        exceptions.append(
            AvailabilityException(
                EXCEPTION_KINDS.get(e.kind, ExceptionKind.LEAVE),
                required_moment(checker, e.range, "start", f"{field}.range.start"),
                required_moment(checker, e.range, "end", f"{field}.range.end"),
                e.note,
            )
        )
    checker.raise_if_any()
    return Counselor(
        counselor_id=message.counselor_id,
        provider_id=message.provider_id,
        display_name=message.display_name,
        specialties=tuple(dict.fromkeys(CATEGORIES[s] for s in message.specialties)),
        modalities=tuple(dict.fromkeys(MODALITIES[m] for m in message.modalities)),
        location=message.location,
        max_sessions_per_day=message.max_sessions_per_day,
        weekly_availability=windows,
        exceptions=tuple(exceptions),
        languages=tuple(dict.fromkeys(message.languages)),
        video_link=message.video_link,
    )


def counselor_pb(counselor: Counselor) -> pb.Counselor:
    return pb.Counselor(
        counselor_id=counselor.counselor_id,
        provider_id=counselor.provider_id,
        display_name=counselor.display_name,
        specialties=[_CATEGORY_PB[s] for s in counselor.specialties],
        modalities=[MODALITY_PB[m] for m in counselor.modalities],
        location=counselor.location,
        max_sessions_per_day=counselor.max_sessions_per_day,
        weekly_availability=[
            pb.WeeklyWindow(
                weekday=w.weekday,
                start_time=w.start.strftime("%H:%M"),
                end_time=w.end.strftime("%H:%M"),
            )
            for w in counselor.weekly_availability
        ],
        exceptions=[
            pb.AvailabilityException(
                kind=_EXCEPTION_KIND_PB[e.kind],
                range=pb.TimeRange(start=timestamp(e.start), end=timestamp(e.end)),
                note=e.note,
            )
            for e in counselor.exceptions
        ],
        languages=list(counselor.languages),
        video_link=counselor.video_link,
    )


def case_from_pb(message: pb.Case) -> Case:
    """The domain case, or INVALID_ARGUMENT naming every bad field (the
    rest of the checks are the domain's, in `cases.validate`)."""
    checker = FieldChecker()
    checker.require(message.category in CATEGORIES, "case.category", "a known category")
    checker.require(message.kind in KINDS, "case.kind", "general, crisis or involuntary")
    checker.require(message.time_off in TIME_OFF, "case.time_off", "leave or official leave")
    for n, modality in enumerate(message.modalities):
        checker.require(modality in MODALITIES, f"case.modalities[{n}]", "a known modality")
    ranges = tuple(
        TimeRange(
            required_moment(checker, r, "start", f"case.availability[{n}].start"),
            required_moment(checker, r, "end", f"case.availability[{n}].end"),
        )
        for n, r in enumerate(message.availability)
    )
    checker.raise_if_any()
    return Case(
        case_id=message.case_id,
        employee_id=message.employee_id,
        agency_id=message.agency_id,
        staff_category=message.staff_category,
        category=CATEGORIES[message.category],
        kind=KINDS[message.kind],
        referral_reference=message.referral_reference,
        sessions_wanted=message.sessions_wanted,
        minutes=message.minutes,
        modalities=tuple(dict.fromkeys(MODALITIES[m] for m in message.modalities)),
        availability=ranges,
        preferred_counselor_id=message.preferred_counselor_id,
        excluded_counselor_ids=tuple(dict.fromkeys(message.excluded_counselor_ids)),
        time_off=TIME_OFF[message.time_off],
        submitted_at=datetime.min.replace(tzinfo=UTC),
        accepts_group=message.accepts_group,
    )


def case_changes_from_pb(request: pb.UpdateCaseRequest) -> dict[str, object]:
    """The fields the update mask names, with their new values as the
    domain has them, or INVALID_ARGUMENT naming every bad path and field
    (the rest of the checks are the domain's, in `cases.validate`)."""
    checker = FieldChecker()
    paths = list(request.update_mask.paths)
    checker.require(bool(paths), "update_mask", "at least one field to change")
    for n, path in enumerate(paths):
        checker.require(
            path in UPDATABLE, f"update_mask.paths[{n}]", f"one of {', '.join(UPDATABLE)}"
        )
        checker.require(path not in paths[:n], f"update_mask.paths[{n}]", "named twice")
    given = request.case
    changes: dict[str, object] = {}
    for path in dict.fromkeys(p for p in paths if p in UPDATABLE):
        if path == "modalities":
            for n, modality in enumerate(given.modalities):
                checker.require(modality in MODALITIES, f"case.modalities[{n}]", "a known modality")
            changes[path] = tuple(dict.fromkeys(MODALITIES.get(m) for m in given.modalities))
        elif path == "availability":
            changes[path] = tuple(
                TimeRange(
                    required_moment(checker, r, "start", f"case.availability[{n}].start"),
                    required_moment(checker, r, "end", f"case.availability[{n}].end"),
                )
                for n, r in enumerate(given.availability)
            )
        elif path == "time_off":
            checker.require(given.time_off in TIME_OFF, "case.time_off", "leave or official leave")
            changes[path] = TIME_OFF.get(given.time_off)
        elif path == "excluded_counselor_ids":
            changes[path] = tuple(dict.fromkeys(given.excluded_counselor_ids))
        else:
            changes[path] = getattr(given, path)
    checker.raise_if_any()
    return changes


def case_pb(case: Case) -> pb.Case:
    return pb.Case(
        case_id=case.case_id,
        employee_id=case.employee_id,
        agency_id=case.agency_id,
        staff_category=case.staff_category,
        category=_CATEGORY_PB[case.category],
        kind=_KIND_PB[case.kind],
        referral_reference=case.referral_reference,
        sessions_wanted=case.sessions_wanted,
        minutes=case.minutes,
        modalities=[MODALITY_PB[m] for m in case.modalities],
        availability=[
            pb.TimeRange(start=timestamp(r.start), end=timestamp(r.end)) for r in case.availability
        ],
        preferred_counselor_id=case.preferred_counselor_id,
        excluded_counselor_ids=list(case.excluded_counselor_ids),
        time_off=_TIME_OFF_PB[case.time_off],
        submitted_at=timestamp(case.submitted_at),
        accepts_group=case.accepts_group,
        withdrawn_at=timestamp(case.withdrawn_at) if case.withdrawn_at else None,
    )


def booking_pb(booking: BookingView) -> pb.Booking:
    message = pb.Booking(
        booking_id=booking.booking_id,
        case_id=booking.case_id,
        counselor_id=booking.counselor_id,
        start=timestamp(booking.start),
        minutes=booking.minutes,
        modality=MODALITY_PB[booking.modality],
        state=_STATE_PB[booking.state],
        group_id=booking.group_id,
        location=booking.location,
        video_link=booking.video_link,
        attendance=_ATTENDANCE_PB[booking.attendance],
    )
    if booking.hold_expires_at is not None:
        message.hold_expires_at.CopyFrom(timestamp(booking.hold_expires_at))
    return message


def slot_filter_from_pb(request: pb.FindSlotsRequest | pb.WaitlistWishes) -> SlotFilter:
    """FindSlots' filters, or INVALID_ARGUMENT naming every bad field."""
    checker = FieldChecker()
    for n, modality in enumerate(request.modalities):
        checker.require(modality in MODALITIES, f"modalities[{n}]", "a known modality")
    bounds = [
        _clock(checker, text, field) if text else None
        for text, field in (
            (request.earliest_start_time, "earliest_start_time"),
            (request.latest_start_time, "latest_start_time"),
        )
    ]
    earliest, latest = bounds
    checker.require(
        earliest is None or latest is None or earliest <= latest,
        "latest_start_time",
        "at or after earliest_start_time",
    )
    few = len(request.languages) <= MAX_LANGUAGES
    checker.require(few, "languages", f"at most {MAX_LANGUAGES}")
    for n, language in enumerate(request.languages):
        checker.require(
            LANGUAGE_TAG.fullmatch(language) is not None, f"languages[{n}]", "a language tag"
        )
    checker.raise_if_any()
    return SlotFilter(
        modalities=tuple(dict.fromkeys(MODALITIES[m] for m in request.modalities)),
        earliest=earliest,
        latest=latest,
        languages=tuple(dict.fromkeys(request.languages)),
    )


def no_slot_reason_pb(rule: str) -> pb.NoSlotReason:
    """The rule, and what it means in the call's language (i18n.py)."""
    return pb.NoSlotReason(rule=rule, explanation=explanation(rule) or "")


def slot_pb(offer: Offer) -> pb.Slot:
    place = place_of(offer.counselor, offer.modality)
    return pb.Slot(
        counselor_id=offer.counselor.counselor_id,
        counselor_name=offer.counselor.display_name,
        start=timestamp(offer.start),
        minutes=offer.minutes,
        modality=MODALITY_PB[offer.modality],
        preferred=offer.preferred,
        within_crisis_deadline=offer.within_deadline,
        languages=list(offer.counselor.languages),
        location=place.location,
        video_link=place.video_link,
    )


_JOB_STATE_PB = {
    "queued": pb.MATCH_JOB_STATE_QUEUED,
    "running": pb.MATCH_JOB_STATE_RUNNING,
    "done": pb.MATCH_JOB_STATE_DONE,
    "failed": pb.MATCH_JOB_STATE_FAILED,
}
WEIGHT_NAMES = ("crisis_session", "session", "continuity", "wait_day", "cost_per_kntd")


def job_pb(job: JobRow) -> pb.MatchJob:
    gap = max(job.bound - job.best_score, 0.0) / max(abs(job.best_score), 1.0)
    return pb.MatchJob(
        job_id=job.job_id,
        state=_JOB_STATE_PB[job.state],
        best_score=job.best_score,
        bound=job.bound,
        gap=gap if job.best_score else 0.0,
        elapsed_seconds=job.elapsed_seconds,
        time_limit_seconds=job.time_limit_seconds,
        attempts=job.attempts,
        error=job.error,
    )


def proposed_pb(session: Proposed) -> pb.ProposedSession:
    return pb.ProposedSession(
        case_id=session.case_id,
        counselor_id=session.counselor_id,
        start=timestamp(session.start),
        minutes=session.minutes,
        modality=MODALITY_PB[Modality(session.modality)],
    )


def job_request_from_pb(request: pb.SubmitMatchJobRequest) -> JobRequest:
    checker = FieldChecker()
    start = required_moment(checker, request, "horizon_start", "horizon_start")
    what_if: dict[str, int] = {}
    for n, change in enumerate(request.what_if):
        checker.require(change.agency_id not in what_if, f"what_if[{n}].agency_id", "named twice")
        what_if[change.agency_id] = change.extra_ntd
    checker.require(request.existing_bookings in EXISTING, "existing_bookings", "FIXED or MOVABLE")
    checker.raise_if_any()
    weights = {
        name: getattr(request.weights, name)
        for name in WEIGHT_NAMES
        if request.weights.HasField(name)  # type: ignore[arg-type]
    }
    return JobRequest(
        horizon_start=start,
        weeks=request.weeks,
        case_ids=list(dict.fromkeys(request.case_ids)),
        time_limit_seconds=request.time_limit_seconds or 30,
        weights=weights,
        what_if=what_if,
        existing=EXISTING[request.existing_bookings],
        move_cost=request.move_cost if request.HasField("move_cost") else DEFAULT_MOVE_COST,
    )


EXISTING: dict[int, Existing] = {
    pb.EXISTING_BOOKINGS_UNSPECIFIED: Existing.FIXED,
    pb.EXISTING_BOOKINGS_FIXED: Existing.FIXED,
    pb.EXISTING_BOOKINGS_MOVABLE: Existing.MOVABLE,
}


def move_pb(move: ProposedMove) -> pb.ProposedMove:
    return pb.ProposedMove(
        booking_id=move.booking_id,
        case_id=move.case_id,
        to=proposed_pb(move.target),
        reason=move.reason.value,
        for_case_id=move.for_case_id,
        explanation=tr(MOVE_WORDS[move.reason], case=move.for_case_id),
        **{"from": proposed_pb(move.source)},  # a Python keyword
    )
