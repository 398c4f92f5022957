"""Where a session takes place: in person at the counselor's location, by
video in the counselor's room, by phone nowhere a frontend shows. A
booking keeps what held when it was booked, as an appointment letter does.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.matcher.registry.counselors import Counselor, Modality


@dataclass(frozen=True)
class Place:
    location: str = ""  # in person
    video_link: str = ""  # by video


def place_of(counselor: Counselor, modality: Modality) -> Place:
    if modality is Modality.IN_PERSON:
        return Place(location=counselor.location)
    if modality is Modality.VIDEO:
        return Place(video_link=counselor.video_link)
    return Place()
