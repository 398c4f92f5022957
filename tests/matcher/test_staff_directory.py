"""Who pays for a case is the people directory's to say, or the employee's
signed token's, never the caller's word (issue 14, acceptance 1)."""

from __future__ import annotations

import grpc

from eap.matcher.v1 import matcher_pb2 as mpb
from eap.quota.v1 import quota_pb2 as qpb
from services.matcher.registry import people_csv
from services.runtime import i18n
from tests.access import Secured, bearer
from tests.conftest import Suite
from tests.county import RATE, account, enrol
from tests.matcher.test_booking import case
from tests.quota.test_rpcs import details, refused
from tests.runtime.test_access import _book


async def _spent(suite: Secured, agency: str) -> int:
    admin = suite.as_("admin", "eap-admin")
    request = qpb.GetBalanceRequest(account=account(qpb.ACCOUNT_KIND_AGENCY, agency))
    return (await suite.quota.GetBalance(request, metadata=admin)).balance.spent


async def test_a_case_is_paid_by_the_directorys_agency_never_the_callers(
    secured_suite: Secured,
) -> None:
    suite = secured_suite
    await enrol(
        suite.matcher,
        ["E30"],
        agency="PT-EDU",
        category="teacher",
        metadata=suite.as_("hr", "hr-1"),
    )
    me = suite.as_("employee", "E30")
    for field, changes in (
        ("case.agency_id", {"agency_id": "PT-HR", "staff_category": "teacher"}),  # another pool
        ("case.staff_category", {"agency_id": "PT-EDU", "staff_category": "official"}),
    ):
        error = await refused(
            suite.matcher.SubmitCase(
                mpb.SubmitCaseRequest(case=case("", "E30", **changes), request_id="K1"),
                metadata=me,
            )
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert (error.details() or "").startswith(field)
    # Left empty, they are the directory's; so they are when stated rightly.
    stated = {"agency_id": "PT-EDU", "staff_category": "teacher"}
    for changes in ({"agency_id": "", "staff_category": ""}, stated):
        answer = await suite.matcher.SubmitCase(
            mpb.SubmitCaseRequest(case=case("", "E30", **changes), request_id="K1"), metadata=me
        )
        assert (answer.case.agency_id, answer.case.staff_category) == ("PT-EDU", "teacher")
    edu, hr = await _spent(suite, "PT-EDU"), await _spent(suite, "PT-HR")
    await _book(suite, answer.case.case_id, "E30")
    assert (await _spent(suite, "PT-EDU"), await _spent(suite, "PT-HR")) == (edu + RATE, hr)


async def test_a_token_may_say_where_the_directory_is_silent(secured_suite: Secured) -> None:
    suite = secured_suite
    made = suite.made
    claimed = bearer(made.token("employee", "E900", agency="PT-EDU", staff_category="teacher"))
    answer = await suite.matcher.SubmitCase(
        mpb.SubmitCaseRequest(
            case=case("", "E900", agency_id="", staff_category=""), request_id="a"
        ),
        metadata=claimed,
    )
    assert (answer.case.agency_id, answer.case.staff_category) == ("PT-EDU", "teacher")
    # The directory, where it knows the person, wins over the token.
    await enrol(suite.matcher, ["E901"], metadata=suite.as_("hr", "hr-1"))
    token = bearer(made.token("employee", "E901", agency="PT-EDU", staff_category="teacher"))
    answer = await suite.matcher.SubmitCase(
        mpb.SubmitCaseRequest(
            case=case("", "E901", agency_id="", staff_category=""), request_id="a"
        ),
        metadata=token,
    )
    assert answer.case.agency_id == "PT-HR"
    # Neither knows them: refused, naming the rule.
    unknown = await refused(
        suite.matcher.SubmitCase(
            mpb.SubmitCaseRequest(case=case("", "E902"), request_id="a"),
            metadata=suite.as_("employee", "E902"),
        )
    )
    assert unknown.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(unknown)["ErrorInfo"].reason == "NOT_IN_DIRECTORY"  # type: ignore[attr-defined]


async def test_request_ids_are_the_callers_own(secured_suite: Secured) -> None:
    """The same key from two employees is two cases; a retry is the same
    one; nothing tells one employee that another used the key."""
    suite = secured_suite
    ids = {}
    for employee in ("E1", "E2", "E1"):
        answer = await suite.matcher.SubmitCase(
            mpb.SubmitCaseRequest(case=case("", employee), request_id="my-first-case"),
            metadata=suite.as_("employee", employee),
        )
        assert answer.created == (employee not in ids)
        ids.setdefault(employee, answer.case.case_id)
        assert answer.case.case_id == ids[employee]
    assert ids["E1"] != ids["E2"]
    # Other content under one's own key: ALREADY_EXISTS, about one's own.
    clash = await refused(
        suite.matcher.SubmitCase(
            mpb.SubmitCaseRequest(case=case("", "E2", minutes=90), request_id="my-first-case"),
            metadata=suite.as_("employee", "E2"),
        )
    )
    assert clash.code() == grpc.StatusCode.ALREADY_EXISTS


def _people(*rows: tuple[str, str, str]) -> list[mpb.Person]:
    return [mpb.Person(employee_id=e, agency_id=a, staff_category=c) for e, a, c in rows]


async def test_an_import_is_all_rows_or_none(suite: Suite) -> None:
    matcher = suite.matcher
    bad = _people(("N1", "PT-HR", "official"), ("N2", "", "official"), ("N1", "PT-EDU", "teacher"))
    error = await refused(matcher.ImportPeople(mpb.ImportPeopleRequest(people=bad)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in details(error)["BadRequest"].field_violations]  # type: ignore[attr-defined]
    assert fields == ["people[1].agency_id", "people[2].employee_id"]
    # Nothing of it was kept: N1 is still new.
    one = _people(("N1", "PT-HR", "official"))
    check = await matcher.ImportPeople(mpb.ImportPeopleRequest(people=one, dry_run=True))
    assert (check.added, check.changed) == (1, 0)
    loaded = await matcher.ImportPeople(mpb.ImportPeopleRequest(people=one))
    assert loaded.added == 1
    moved = _people(("N1", "PT-EDU", "teacher"), ("N2", "PT-HR", "official"))
    whole = await matcher.ImportPeople(mpb.ImportPeopleRequest(people=moved, replace_all=True))
    # The fixture's E0-E200 and N1 were there; the file names N1 and N2.
    assert (whole.added, whole.changed, whole.removed, whole.unchanged) == (1, 1, 201, 0)
    gone = await refused(matcher.SubmitCase(mpb.SubmitCaseRequest(case=case("K1", "E1"))))
    assert details(gone)["ErrorInfo"].reason == "NOT_IN_DIRECTORY"  # type: ignore[attr-defined]


def test_the_directory_file_reads_as_hr_exports_it() -> None:
    """Big5 as Excel saves it in Taiwan, with columns the import ignores
    (names stay in the file); every bad row named by its line."""
    text = (
        "姓名,employee_id,agency_id,staff_category\n"
        "王小明,E1,PT-HR,official\n"
        "林美玲,E2,PT-EDU,teacher\n"
    )
    people, problems = people_csv.parse(text.encode("big5"))
    assert problems == []
    assert [(p.employee_id, p.agency_id, p.staff_category) for p in people] == [
        ("E1", "PT-HR", "official"),
        ("E2", "PT-EDU", "teacher"),
    ]
    assert "王小明" not in str(people)
    broken = (
        "\ufeffemployee_id,agency_id,staff_category\nE1,PT-HR,official\nE 2,,teacher\nE1,PT-HR,x\n"
    )
    with i18n.speaking("en"):
        people, problems = people_csv.parse(broken.encode("utf-8"))
        _, missing = people_csv.parse(b"employee_id,agency\nE1,PT-HR\n")
    assert [p.split(":")[0] for p in problems] == ["line 3", "line 3", "line 4"]
    assert "the same employee as line 2" in problems[-1]
    assert missing == ["line 1: missing columns: agency_id (機關代碼), staff_category (人員類別)"]
    with i18n.speaking("zh_TW"):
        _, chinese = people_csv.parse(broken.encode("utf-8"))
    assert chinese[0].startswith("第3行：employee_id：")
    assert chinese[-1].startswith("第4行：") and "line 2" in chinese[-1]


async def test_a_retry_after_the_directory_moved_someone_is_the_same_case(suite: Suite) -> None:
    first = await suite.matcher.SubmitCase(
        mpb.SubmitCaseRequest(case=case("", "E7", agency_id="", staff_category=""), request_id="r")
    )
    await enrol(suite.matcher, ["E7"], agency="PT-EDU", category="teacher")
    again = await suite.matcher.SubmitCase(
        mpb.SubmitCaseRequest(case=case("", "E7", agency_id="", staff_category=""), request_id="r")
    )
    assert not again.created and again.case == first.case  # paid as it was when it came in
