"""HR's side of match jobs, over gRPC: submit, watch with a progress bar,
read the result, apply it.

    eapctl match submit --start 2027-03-08 --weeks 2 [--time-limit 30] [--watch]
    eapctl match watch JOB_ID
    eapctl match result JOB_ID [-o RESULT.json]
    eapctl match apply JOB_ID [--dry-run]

The server is EAP_GRPC_ADDRESS (or --address); with EAP_AUTH_MODE=jwt on
the server, pass a token in EAP_TOKEN. Lines for people are in --lang's
language (else the locale's), and the server's refusals too; `submit`
prints the job's id alone, for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from eap.matcher.v1 import matcher_pb2 as pb
from eap.matcher.v1 import matcher_pb2_grpc
from services.matcher.optimization.snapshot import DEFAULT_MOVE_COST
from services.rules.office_time import OFFICE_ZONE
from services.runtime import i18n
from services.runtime.client_language import call_metadata, refusal_words
from services.runtime.fields import timestamp
from services.runtime.i18n import N_, tr
from services.runtime.tls import client_channel

BAR = 30
STATES = {v: k.removeprefix("MATCH_JOB_STATE_").lower() for k, v in pb.MatchJobState.items()}
STATE_WORDS = {
    "queued": N_("queued"),
    "running": N_("running"),
    "done": N_("done"),
    "failed": N_("failed"),
}


def state_words(state: pb.MatchJobState.ValueType) -> str:
    """A job's state as a person reads it: `running`, `執行中`."""
    name = STATES.get(state, "unspecified")
    return tr(STATE_WORDS[name]) if name in STATE_WORDS else name


def _stub(address: str) -> tuple[grpc.aio.Channel, matcher_pb2_grpc.MatcherServiceAsyncStub]:
    channel = client_channel(address)
    return channel, matcher_pb2_grpc.MatcherServiceStub(channel)


def _line(job: pb.MatchJob) -> str:
    limit = max(job.time_limit_seconds, 1)
    done = BAR if job.state == pb.MATCH_JOB_STATE_DONE else int(BAR * job.elapsed_seconds / limit)
    bar = "#" * min(done, BAR) + "." * (BAR - min(done, BAR))
    figures = tr(
        "best {best}  bound {bound}  gap {gap}",
        best=f"{job.best_score:,.2f}",
        bound=f"{job.bound:,.2f}",
        gap=f"{job.gap:.2%}",
    )
    return f"[{bar}] {state_words(job.state):<7} {job.elapsed_seconds:5.1f}/{limit} s  {figures}"


async def _watch(stub: matcher_pb2_grpc.MatcherServiceAsyncStub, job_id: str) -> int:
    last = None
    async for update in stub.WatchMatchJob(
        pb.WatchMatchJobRequest(job_id=job_id), metadata=call_metadata()
    ):
        last = update.job
        end = "\n" if not sys.stderr.isatty() else "\r"
        print(_line(last), end=end, file=sys.stderr, flush=True)
    print(file=sys.stderr)
    if last is not None and last.state == pb.MATCH_JOB_STATE_FAILED:
        print(tr("job failed: {error}", error=last.error), file=sys.stderr)
        return 1
    return 0


def _time(stamp: Timestamp) -> str:
    return stamp.ToDatetime(tzinfo=dt.UTC).astimezone(OFFICE_ZONE).strftime("%Y-%m-%d %H:%M")


def _move_line(move: pb.ProposedMove) -> str:
    before, after = getattr(move, "from"), move.to  # `from` is a Python keyword
    return (
        f"{move.booking_id} ({move.case_id}) {before.counselor_id} {_time(before.start)}"
        f" -> {after.counselor_id} {_time(after.start)}"
    )


async def _run(args: argparse.Namespace) -> int:
    channel, stub = _stub(args.address)
    try:
        if args.command == "submit":
            start = dt.datetime.combine(dt.date.fromisoformat(args.start), dt.time(), OFFICE_ZONE)
            stamp = timestamp(start)
            what_if = [
                pb.BudgetChange(agency_id=a, extra_ntd=int(n))
                for a, n in (item.split("=", 1) for item in args.what_if)
            ]
            job = (
                await stub.SubmitMatchJob(
                    pb.SubmitMatchJobRequest(
                        horizon_start=stamp,
                        weeks=args.weeks,
                        case_ids=args.case,
                        time_limit_seconds=args.time_limit,
                        what_if=what_if,
                        existing_bookings=(
                            pb.EXISTING_BOOKINGS_MOVABLE
                            if args.existing == "movable"
                            else pb.EXISTING_BOOKINGS_FIXED
                        ),
                        move_cost=args.move_cost,
                    ),
                    metadata=call_metadata(),
                )
            ).job
            print(job.job_id)
            return await _watch(stub, job.job_id) if args.watch else 0
        if args.command == "watch":
            return await _watch(stub, args.job_id)
        if args.command == "apply":
            applied = await stub.ApplyMatchResult(
                pb.ApplyMatchResultRequest(job_id=args.job_id, dry_run=args.dry_run),
                metadata=call_metadata(),
            )
            counts = {"booked": len(applied.booked), "refused": len(applied.not_booked)}
            if args.dry_run:
                print(tr("would book {booked} sessions; {refused} refused", **counts))
            else:
                print(tr("booked {booked} sessions; {refused} refused", **counts))
            for refused in applied.not_booked:
                s = refused.session
                print(f"  {s.case_id} {s.counselor_id} {_time(s.start)}: {refused.rule}")
            if applied.moved or applied.not_moved:
                moved = {"moved": len(applied.moved), "refused": len(applied.not_moved)}
                if args.dry_run:
                    print(tr("would move {moved} booked sessions; {refused} refused", **moved))
                else:
                    print(tr("moved {moved} booked sessions; {refused} refused", **moved))
            for stuck in applied.not_moved:
                print(f"  {_move_line(stuck.move)}: {stuck.rule}")
            return 0
        result = await stub.GetMatchResult(
            pb.GetMatchResultRequest(job_id=args.job_id), metadata=call_metadata()
        )
        cases = len({s.case_id for s in result.sessions})
        print(
            tr(
                "{sessions} sessions for {cases} cases ({crisis} for crisis cases); "
                "score {score}, bound {bound}",
                sessions=len(result.sessions),
                cases=cases,
                crisis=result.crisis_sessions,
                score=f"{result.job.best_score:,.2f}",
                bound=f"{result.job.bound:,.2f}",
            )
        )
        if result.sessions_without_what_if:
            print(
                tr(
                    "without the what-if budgets: {sessions} sessions",
                    sessions=result.sessions_without_what_if,
                )
            )
        if result.moves:
            print(tr("{count} booked sessions to move:", count=len(result.moves)))
            for move in result.moves:
                print(f"  {_move_line(move)}: {move.explanation}")
        # The reasons' words are the catalogs' message ids (reasons.WORDS).
        reasons = Counter(u.reason for u in result.unserved)
        for reason, count in reasons.most_common():
            print("  " + tr("{count} cases short: {reason}", count=count, reason=tr(reason)))
        if args.output:
            text = json.dumps(MessageToDict(result), ensure_ascii=False, indent=1)
            await asyncio.to_thread(Path(args.output).write_text, text + "\n", "utf-8")
        return 0
    except grpc.aio.AioRpcError as error:
        print(f"{error.code().name}: {refusal_words(error)}", file=sys.stderr)
        return 1
    finally:
        await channel.close(None)


def main(command: str, argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"eapctl match {command}")
    parser.add_argument("--address", default=os.environ.get("EAP_GRPC_ADDRESS", "127.0.0.1:50051"))
    i18n.add_language_option(parser)
    if command == "submit":
        parser.add_argument("--start", required=True, help="first day, YYYY-MM-DD (Taipei)")
        parser.add_argument("--weeks", type=int, default=4)
        parser.add_argument("--time-limit", type=int, default=30, help="seconds")
        parser.add_argument("--case", action="append", default=[], help="a case id (repeat)")
        parser.add_argument(
            "--what-if", action="append", default=[], help="AGENCY=NTD: extra budget (repeat)"
        )
        parser.add_argument(
            "--existing",
            choices=("fixed", "movable"),
            default="fixed",
            help="the horizon's bookings: fixed (default), or movable within their week",
        )
        parser.add_argument(
            "--move-cost",
            type=float,
            default=DEFAULT_MOVE_COST,
            help=f"score points one move costs (default {DEFAULT_MOVE_COST:g})",
        )
        parser.add_argument("--watch", action="store_true", help="show progress until done")
    else:
        parser.add_argument("job_id")
    if command == "result":
        parser.add_argument("-o", "--output", help="write the whole result as JSON")
    if command == "apply":
        parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    i18n.choose_cli_language(args.lang)
    args.command = command
    return asyncio.run(_run(args))
