"""The demo's steps 2 and 3: counselors register and a frontend books
online (find, hold, confirm); then HR matches the open cases in one
optimized job, watched as it runs, and applies it."""

from __future__ import annotations

from typing import Any

import grpc

from eap.matcher.v1 import matcher_pb2 as mpb
from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2 as pb
from eap.quota.v1 import quota_pb2_grpc
from services.cli.demo_common import (
    CATEGORIES,
    MODALITIES,
    categories,
    local,
    refusal,
    say,
    submit_case,
    when,
)
from services.matcher.optimization.jobs_cli import state_words
from services.runtime.i18n import tr


async def online_booking(
    county: dict[str, Any],
    matcher: matcher_pb2_grpc.MatcherServiceAsyncStub,
    quota: quota_pb2_grpc.QuotaServiceAsyncStub,
) -> None:
    print(
        "\n"
        + tr(
            "2. Counselors register, and a frontend books online (FindSlots -> HoldSlot -> Confirm)"
        )
    )
    for k in county["counselors"]:
        await matcher.UpsertCounselor(
            mpb.UpsertCounselorRequest(
                counselor=mpb.Counselor(
                    counselor_id=k["id"],
                    provider_id=k["provider"],
                    display_name=k["name"],
                    specialties=[CATEGORIES[f"category_{s}"] for s in k["specialties"]],
                    modalities=[MODALITIES[f"modality_{m}"] for m in k["modalities"]],
                    location=k["location"],
                    max_sessions_per_day=k["max_sessions_per_day"],
                    weekly_availability=[
                        mpb.WeeklyWindow(weekday=d, start_time=a, end_time=b)
                        for d, a, b in k["weekly"]
                    ],
                )
            )
        )
        line = tr(
            "counselor {id} ({provider}): {specialties}",
            id=f"{k['id']:<7}",
            provider=k["provider"],
            specialties=categories(k["specialties"]),
        )
        say(line)
    for c in county["cases"]:
        await submit_case(matcher, c)
    window: dict[str, Any] = {
        "window_start": local("2027-03-08T00:00"),
        "window_end": local("2027-03-22T00:00"),
    }
    first, second, legal = (c["id"] for c in county["cases"])
    found = (
        await matcher.FindSlots(mpb.FindSlotsRequest(case_id=first, max_slots=3, **window))
    ).slots
    say(tr("{case} asks for slots; the best three:", case=first))
    for slot in found:
        print(f"     {when(slot.start)}  {slot.counselor_name} ({slot.counselor_id})")
    held = (
        await matcher.HoldSlot(
            mpb.HoldSlotRequest(
                case_id=first, counselor_id=found[0].counselor_id, start=found[0].start
            )
        )
    ).booking
    say(tr("{case} holds {time} while filling in the form", case=first, time=when(held.start)))
    try:
        await matcher.HoldSlot(
            mpb.HoldSlotRequest(
                case_id=second, counselor_id=found[0].counselor_id, start=found[0].start
            )
        )
    except grpc.aio.AioRpcError as error:
        say(tr("{case} tries the same slot: {refusal}", case=second, refusal=refusal(error)))
    booked = (
        await matcher.ConfirmBooking(mpb.ConfirmBookingRequest(booking_id=held.booking_id))
    ).booking
    confirmed = tr(
        "{case} confirms: booked {time}, quota spent in the same step",
        case=first,
        time=when(booked.start),
    )
    say(confirmed)
    for case_id in (second, legal):
        slot = (
            await matcher.FindSlots(mpb.FindSlotsRequest(case_id=case_id, max_slots=1, **window))
        ).slots[0]
        hold = (
            await matcher.HoldSlot(
                mpb.HoldSlotRequest(
                    case_id=case_id, counselor_id=slot.counselor_id, start=slot.start
                )
            )
        ).booking
        await matcher.ConfirmBooking(mpb.ConfirmBookingRequest(booking_id=hold.booking_id))
        line = tr(
            "{case} books {time} with {counselor}",
            case=case_id,
            time=when(slot.start),
            counselor=slot.counselor_name,
        )
        say(line)
    education = (
        await quota.GetBalance(
            pb.GetBalanceRequest(
                account=pb.AccountRef(
                    kind=pb.ACCOUNT_KIND_AGENCY,
                    id="PT-EDUCATION",
                    fiscal_year=county["fiscal_year"],
                )
            )
        )
    ).balance
    spent = tr(
        "{agency} has spent NT${amount} on these bookings",
        agency="PT-EDUCATION",
        amount=f"{education.spent:,}",
    )
    say(spent)


async def optimized_job(
    county: dict[str, Any], matcher: matcher_pb2_grpc.MatcherServiceAsyncStub
) -> str:
    """Step 3; returns the job's id."""
    print("\n" + tr("3. HR matches the open cases in one optimized job (CP-SAT), with progress"))
    for c in county["open_cases"]:
        await submit_case(matcher, c)
    more = tr(
        "{count} more cases come in; {case} still wants its second",
        count=len(county["open_cases"]),
        case="K-1001",
    )
    say(more)
    job = (
        await matcher.SubmitMatchJob(
            mpb.SubmitMatchJobRequest(
                horizon_start=local("2027-03-15T00:00"), weeks=2, time_limit_seconds=3
            )
        )
    ).job
    async for update in matcher.WatchMatchJob(mpb.WatchMatchJobRequest(job_id=job.job_id)):
        j = update.job
        state = state_words(j.state)
        figures = tr(
            "best {best}  bound {bound}", best=f"{j.best_score:,.2f}", bound=f"{j.bound:,.2f}"
        )
        say(tr("job {id}", id=j.job_id[:8]) + f" {state:<7} {j.elapsed_seconds:4.1f} s  {figures}")
    result = await matcher.GetMatchResult(mpb.GetMatchResultRequest(job_id=job.job_id))
    for s in result.sessions:
        line = tr(
            "proposed: {case} with {counselor} {time}",
            case=s.case_id,
            counselor=s.counselor_id,
            time=when(s.start),
        )
        say(line)
    for u in result.unserved:
        # The matcher's explanation is a message id of the catalogs (reasons.WORDS).
        line = tr(
            "not served: {case} ({reason}): {words}",
            case=u.case_id,
            reason=u.reason,
            words=tr(u.explanation),
        )
        say(line)
    applied = await matcher.ApplyMatchResult(mpb.ApplyMatchResultRequest(job_id=job.job_id))
    made = tr(
        "HR applies it: {count} bookings made, quota spent for each",
        count=len(applied.booking_ids),
    )
    say(made)
    return job.job_id
