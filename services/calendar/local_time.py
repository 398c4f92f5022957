"""The calendar plans in naive Asia/Taipei wall-clock time (no daylight
saving there); these turn it into and out of aware times and protobuf
Timestamps at the service's edges."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from services.rules.office_time import OFFICE_ZONE
from services.runtime.fields import timestamp

TIMEZONE = OFFICE_ZONE


def aware(moment: datetime) -> datetime:
    """A naive local time as an aware one; an aware one as it is."""
    return moment if moment.tzinfo else moment.replace(tzinfo=TIMEZONE)


def naive(moment: datetime) -> datetime:
    """An aware time as naive local wall-clock time."""
    return moment.astimezone(TIMEZONE).replace(tzinfo=None)


def to_stamp(moment: datetime) -> Timestamp:
    return timestamp(aware(moment))


def from_stamp(stamp: Timestamp) -> datetime:
    """A Timestamp as naive local wall-clock time."""
    return stamp.ToDatetime(tzinfo=TIMEZONE).replace(tzinfo=None)
