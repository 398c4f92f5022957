"""Who may call what, and which records they may touch: the whole access
policy of the suite, in one table.

Each RPC maps each role allowed to call it to a scope:
- ANY: every record the RPC reaches;
- OWN: only the caller's own records: an employee their own cases,
  bookings and entitlement (the token's `sub` is their pseudonymous employee
  id); a counselor the cases and bookings of their own sessions (`sub` is
  their counselor id); anyone else records naming them as the person
  (enrolling themselves in a training);
- AGGREGATES: nothing about one person: agency and provider accounts, usage
  summaries, never an employee's account;
- REFERRAL: a supervisor submitting an involuntary referral, who hears back
  nothing but "received".
A role missing from an RPC's row is refused (PERMISSION_DENIED), and so is
every RPC missing from the table: deny by default. A `service` caller is
allowed only as the services named in the row.

The interceptor applies the roles before the handler runs. The scopes are
applied where the records are read: the use case calls `require_own` with
the record's owners once it has loaded it. A record outside the caller's
scope is answered as if it did not exist, so guessing ids reveals nothing.
And if a handler for a scoped call returns without having checked any
record, the interceptor refuses the answer: a forgotten check fails closed.

The rules come from the seeds (DOMAIN.md, "Confidentiality"): using the
programme must never affect a person's job, so a supervisor or line manager
has no individual-level access, and HR reporting sees aggregates only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum

from services.runtime.auth import Identity, Role, current_identity
from services.runtime.errors import PermissionDenied, ServiceError


class Scope(StrEnum):
    ANY = "any"
    OWN = "own"
    AGGREGATES = "aggregates"
    REFERRAL = "referral"


@dataclass(frozen=True)
class Access:
    """One RPC's row: the roles allowed, each with its scope, and the
    services allowed to call it as `service`."""

    scopes: Mapping[Role, Scope]
    services: frozenset[str] = field(default_factory=frozenset)


def _row(
    any_of: Iterable[Role] = (),
    own: Iterable[Role] = (),
    aggregates: Iterable[Role] = (),
    referral: Iterable[Role] = (),
    services: Iterable[str] = (),
) -> Access:
    scopes = {role: Scope.ANY for role in any_of}
    scopes |= {role: Scope.OWN for role in own}
    scopes |= {role: Scope.AGGREGATES for role in aggregates}
    scopes |= {role: Scope.REFERRAL for role in referral}
    if services:
        scopes[Role.SERVICE] = Scope.ANY
    return Access(scopes, frozenset(services))


EMPLOYEE, COUNSELOR, SUPERVISOR = Role.EMPLOYEE, Role.COUNSELOR, Role.SUPERVISOR
ADMIN, HR, AUDITOR, OPERATOR = Role.ADMIN, Role.HR, Role.AUDITOR, Role.OPERATOR
# A link's holder is nobody signed in: only its own methods (LINK_METHODS).
LINK = Role.LINK
EVERYONE = tuple(r for r in Role if r not in (Role.SERVICE, Role.LINK))
STAFF = (EMPLOYEE, COUNSELOR, ADMIN, HR)  # who may read the counselor directory

QUOTA = "eap.quota.v1.QuotaService/"
MATCHER = "eap.matcher.v1.MatcherService/"
CALENDAR = "eap.calendar.v1.CalendarService/"

POLICY: dict[str, Access] = {
    # -- quota: money and hours; the matcher spends them for bookings ----------------
    QUOTA + "Reserve": _row(any_of=[ADMIN], services=["matcher"]),
    QUOTA + "Commit": _row(any_of=[ADMIN], services=["matcher"]),
    QUOTA + "Release": _row(any_of=[ADMIN], services=["matcher"]),
    QUOTA + "Move": _row(any_of=[ADMIN], services=["matcher"]),
    QUOTA + "Grant": _row(any_of=[ADMIN]),
    # An auditor follows the public money (agencies' pools, providers' hours),
    # not a person's use of the programme: no employee's account.
    QUOTA + "GetBalance": _row(
        any_of=[ADMIN], own=[EMPLOYEE], aggregates=[HR, AUDITOR], services=["matcher"]
    ),
    QUOTA + "ListLedger": _row(any_of=[ADMIN], own=[EMPLOYEE], aggregates=[AUDITOR]),
    QUOTA + "ListCharges": _row(any_of=[ADMIN], services=["matcher"]),
    QUOTA + "GetUsageSummary": _row(any_of=[ADMIN, HR, AUDITOR]),
    QUOTA + "ListAgencies": _row(any_of=[ADMIN, HR, AUDITOR]),
    QUOTA + "UpsertAgency": _row(any_of=[ADMIN]),
    QUOTA + "SetProviderContract": _row(any_of=[ADMIN]),
    QUOTA + "GetProviderContract": _row(any_of=[ADMIN, HR], services=["matcher"]),
    QUOTA + "SetEntitlementPolicy": _row(any_of=[ADMIN]),
    QUOTA + "TopUpBudget": _row(any_of=[ADMIN]),
    QUOTA + "TransferBudget": _row(any_of=[ADMIN]),
    QUOTA + "Ping": _row(any_of=EVERYONE, services=["matcher", "calendar"]),
    # -- matcher: the registry, cases and bookings -----------------------------------
    MATCHER + "UpsertCounselor": _row(any_of=[ADMIN]),
    MATCHER + "GetCounselor": _row(any_of=STAFF),
    MATCHER + "ListCounselors": _row(any_of=STAFF),
    MATCHER + "SubmitCase": _row(any_of=[ADMIN], own=[EMPLOYEE], referral=[SUPERVISOR]),
    MATCHER + "GetCase": _row(any_of=[ADMIN], own=[EMPLOYEE, COUNSELOR]),
    MATCHER + "ListCases": _row(any_of=[ADMIN], own=[EMPLOYEE]),
    MATCHER + "UpdateCase": _row(any_of=[ADMIN], own=[EMPLOYEE]),
    MATCHER + "WithdrawCase": _row(any_of=[ADMIN], own=[EMPLOYEE]),
    MATCHER + "FindSlots": _row(any_of=[ADMIN], own=[EMPLOYEE]),
    MATCHER + "HoldSlot": _row(any_of=[ADMIN], own=[EMPLOYEE]),
    MATCHER + "ConfirmBooking": _row(any_of=[ADMIN], own=[EMPLOYEE]),
    MATCHER + "CancelBooking": _row(any_of=[ADMIN], own=[EMPLOYEE, COUNSELOR]),
    MATCHER + "RescheduleBooking": _row(any_of=[ADMIN], own=[EMPLOYEE]),
    MATCHER + "CompleteSession": _row(any_of=[ADMIN], own=[COUNSELOR]),
    # The waitlist: an employee's own cases; the whole line is the
    # programme's (administrators). A counselor sees no one's place in it.
    MATCHER + "JoinWaitlist": _row(any_of=[ADMIN], own=[EMPLOYEE]),
    MATCHER + "LeaveWaitlist": _row(any_of=[ADMIN], own=[EMPLOYEE]),
    MATCHER + "ListWaitlist": _row(any_of=[ADMIN], own=[EMPLOYEE]),
    # The booking policy is the programme's, public to those it binds.
    MATCHER + "GetBookingPolicy": _row(any_of=[ADMIN, HR, EMPLOYEE, COUNSELOR]),
    MATCHER + "SetBookingPolicy": _row(any_of=[ADMIN]),
    MATCHER + "SubmitMatchJob": _row(any_of=[ADMIN]),
    MATCHER + "WatchMatchJob": _row(any_of=[ADMIN]),
    MATCHER + "GetMatchResult": _row(any_of=[ADMIN]),
    MATCHER + "ApplyMatchResult": _row(any_of=[ADMIN]),
    MATCHER + "ListGroupCandidates": _row(any_of=[ADMIN], services=["calendar"]),
    MATCHER + "ListCounselorFreeTime": _row(any_of=[ADMIN], services=["calendar"]),
    MATCHER + "BookGroupSession": _row(any_of=[ADMIN], services=["calendar"]),
    MATCHER + "CancelGroupSession": _row(any_of=[ADMIN]),
    MATCHER + "DiscloseCase": _row(any_of=[ADMIN]),  # with a legal reference or consent
    MATCHER + "SetContact": _row(any_of=[ADMIN], own=[EMPLOYEE]),
    MATCHER + "GetContact": _row(any_of=[ADMIN], own=[EMPLOYEE, COUNSELOR]),
    MATCHER + "ListSessions": _row(any_of=[ADMIN], own=[COUNSELOR]),
    # HR keeps the people directory: who works where decides who pays.
    MATCHER + "ImportPeople": _row(any_of=[ADMIN, HR]),
    # The programme's review: aggregates through the disclosure rules, for
    # those who review it; an auditor checks the review as it checks the money.
    MATCHER + "GetProgrammeReview": _row(any_of=[ADMIN], aggregates=[HR, AUDITOR]),
    # The survey: its questions are the programme's; answering is by link
    # (LINK_METHODS), never signed in, so that no answer carries a caller.
    MATCHER + "SetSurveyQuestions": _row(any_of=[ADMIN]),
    MATCHER + "GetSurvey": _row(any_of=[LINK]),
    MATCHER + "SubmitSurvey": _row(any_of=[LINK]),
    # -- calendar: the programme's year; group sessions through the matcher ----------
    CALENDAR + "ListOfficeDays": _row(any_of=EVERYONE, services=["matcher"]),
    CALENDAR + "ImportOfficeCalendar": _row(any_of=[ADMIN]),
    CALENDAR + "PlanProgram": _row(any_of=[ADMIN, HR]),
    CALENDAR + "GetPlan": _row(any_of=[ADMIN, HR]),
    CALENDAR + "FindMeetingTime": _row(any_of=[ADMIN, HR]),
    CALENDAR + "EnrollTraining": _row(any_of=[ADMIN, HR], own=[EMPLOYEE, COUNSELOR, SUPERVISOR]),
    CALENDAR + "CancelEnrollment": _row(any_of=[ADMIN, HR], own=[EMPLOYEE, COUNSELOR, SUPERVISOR]),
    CALENDAR + "ExportCalendar": _row(any_of=[ADMIN, HR]),
    CALENDAR + "ScheduleEvent": _row(any_of=[ADMIN, HR]),
    CALENDAR + "MoveEvent": _row(any_of=[ADMIN, HR]),
    CALENDAR + "CancelEvent": _row(any_of=[ADMIN, HR]),
    CALENDAR + "RecordAttendance": _row(any_of=[ADMIN, HR]),
    CALENDAR + "GetAttendanceReport": _row(any_of=[ADMIN, HR]),
    CALENDAR + "ProposeGroupSessions": _row(any_of=[ADMIN]),
    CALENDAR + "BookGroupSessions": _row(any_of=[ADMIN]),
    # -- the audit trails: the auditor's ---------------------------------------------
    "eap.audit.v1.AuditService/ListAuditEntries": _row(any_of=[AUDITOR]),
    "eap.audit.v1.AuditService/VerifyAuditTrail": _row(any_of=[AUDITOR]),
    # -- the notifier: its operators' ------------------------------------------------
    "eap.notifier.v1.NotifierService/GetOutboxStatus": _row(any_of=[ADMIN, OPERATOR]),
    "eap.notifier.v1.NotifierService/RetryDeadNotices": _row(any_of=[ADMIN, OPERATOR]),
    # -- the gRPC server's own -------------------------------------------------------
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": _row(any_of=[ADMIN, OPERATOR]),
}

# Kubelet and load balancers probe health without credentials.
PUBLIC_SERVICES = frozenset({"grpc.health.v1.Health"})

# A one-time link's methods: the request's `token` field is the credential
# and names the tenant (auth.Authenticator.link_holder); no bearer token.
LINK_METHODS = frozenset({MATCHER + "GetSurvey", MATCHER + "SubmitSurvey"})


@dataclass
class _Call:
    scope: Scope
    checked: bool = False


_call_var: ContextVar[_Call | None] = ContextVar("access_call", default=None)


def authorize(method: str, identity: Identity) -> None:
    """Lets the call in, or refuses it: PERMISSION_DENIED naming no more
    than the role. `method` is "package.Service/Method"."""
    access = POLICY.get(method)
    scope = access.scopes.get(identity.role) if access else None
    if access is None or scope is None:
        raise PermissionDenied(f"the role {identity.role.value} may not call this method")
    if identity.role is Role.SERVICE and identity.subject not in access.services:
        raise PermissionDenied("this service may not call this method")
    _call_var.set(_Call(scope))


def scope() -> Scope:
    """The current call's scope; ANY outside an RPC (jobs, the CLI)."""
    call = _call_var.get()
    return call.scope if call else Scope.ANY


def require_own(
    refusal: ServiceError,
    *,
    employee_id: str | None = None,
    counselor_ids: Iterable[str] = (),
    person_id: str | None = None,
) -> None:
    """Raises `refusal` unless the current caller may touch a record owned
    by `employee_id` (an employee's case, booking or account), served by
    `counselor_ids`, or naming `person_id`. A record naming none of them is
    an aggregate. Pass the error a missing record would get."""
    call = _call_var.get()
    if call is None:
        return
    call.checked = True
    if call.scope is Scope.ANY:
        return
    counselors = set(counselor_ids)
    individual = employee_id is not None or bool(counselors) or person_id is not None
    if call.scope is Scope.AGGREGATES and not individual:
        return
    if call.scope is Scope.OWN:
        me = current_identity()
        if me.role is Role.EMPLOYEE and employee_id is not None and employee_id == me.subject:
            return
        if me.role is Role.COUNSELOR and me.subject in counselors:
            return
        if person_id is not None and person_id == me.subject:
            return
    raise refusal


def mark_checked() -> None:
    """For a handler that applied its scope itself (a referral)."""
    call = _call_var.get()
    if call is not None:
        call.checked = True


def unchecked() -> bool:
    """True when the call is scoped and its handler checked no record."""
    call = _call_var.get()
    return call is not None and call.scope is not Scope.ANY and not call.checked
