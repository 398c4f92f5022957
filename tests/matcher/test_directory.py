"""The directory: names and contacts are sealed at rest, shown only to the
person, an administrator or a counselor with a session with them, and
every read is audited."""

from __future__ import annotations

import grpc
from cryptography.fernet import Fernet
from sqlalchemy import text

from eap.matcher.v1 import matcher_pb2 as mpb
from services.matcher.registry.directory import Directory, load_keys
from tests.access import Secured
from tests.quota.test_rpcs import refused
from tests.runtime.test_access import _book, submit_own

LIN = mpb.Contact(name="林美華", phone="08-7320415", email="mei-hua.lin@example.tw")


async def test_contacts_are_sealed_and_shown_only_to_who_needs_them(
    secured_suite: Secured,
) -> None:
    suite = secured_suite
    matcher = suite.matcher
    e1, e2 = suite.as_("employee", "E1"), suite.as_("employee", "E2")
    await matcher.SetContact(mpb.SetContactRequest(employee_id="E1", contact=LIN), metadata=e1)
    mine = await matcher.GetContact(mpb.GetContactRequest(employee_id="E1"), metadata=e1)
    assert mine.contact == LIN

    # Another employee: refused to write, and cannot tell E1 from no one.
    error = await refused(
        matcher.SetContact(mpb.SetContactRequest(employee_id="E1", contact=LIN), metadata=e2)
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    other = await refused(matcher.GetContact(mpb.GetContactRequest(employee_id="E1"), metadata=e2))
    nobody = await refused(
        matcher.GetContact(mpb.GetContactRequest(employee_id="E404"), metadata=e2)
    )
    assert (other.code(), other.details()) == (nobody.code(), nobody.details())

    # A counselor sees the contact only once they hold a session with E1.
    lead = suite.as_("counselor", "C001")
    request = mpb.GetContactRequest(employee_id="E1")
    assert (await refused(matcher.GetContact(request, metadata=lead))).code() == (
        grpc.StatusCode.NOT_FOUND
    )
    booking = await _book(suite, await submit_own(suite, "K1", "E1"), "E1")
    holder = suite.as_("counselor", booking.counselor_id)
    assert (await matcher.GetContact(request, metadata=holder)).contact.phone == LIN.phone

    # At rest: ciphertext only.
    (service,) = [s for s in suite.server.services if s.name == "matcher"]
    async with service.engine.connect() as connection:
        stored = (await connection.execute(text("SELECT sealed FROM matcher_people"))).scalar()
    assert isinstance(stored, bytes)
    for clear in (LIN.name, LIN.phone, LIN.email):
        assert clear.encode() not in stored
    # Every read is in the audit trail (the refused ones read nothing).
    assert service.audit is not None
    reads = [e for e in await service.audit.entries(0, 1000) if e.record == "contact/E1"]
    assert [(e.actor, e.role) for e in reads] == [
        ("E1", "employee"),
        (booking.counselor_id, "counselor"),
    ]


async def test_a_new_data_key_comes_first_and_old_rows_still_open(
    secured_suite: Secured,
) -> None:
    suite = secured_suite
    e1 = suite.as_("employee", "E1")
    await suite.matcher.SetContact(
        mpb.SetContactRequest(employee_id="E1", contact=LIN), metadata=e1
    )
    (service,) = [s for s in suite.server.services if s.name == "matcher"]
    old = suite.made.data.read_text()
    suite.made.data.write_text(Fernet.generate_key().decode() + "\n" + old)
    rotated = Directory(service.engine, load_keys(str(suite.made.data), False), None)
    assert await rotated.reseal() == 1
    suite.made.data.write_text(suite.made.data.read_text().splitlines()[0] + "\n")
    newest_only = Directory(service.engine, load_keys(str(suite.made.data), False), None)
    assert (await newest_only.contact("E1")).email == LIN.email
