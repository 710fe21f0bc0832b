"""One valid payload per event type, for round-trip tests: test support's catalogue
(`cdap_testing.fuzz.VALID_DATA`, which the fuzz tests start from too) as the events' models."""

from __future__ import annotations

from cdap_shared import events as ev
from cdap_testing import fuzz

SAMPLES: dict[str, ev.EventData] = {
    event_type: ev.EVENT_DATA[event_type].model_validate(data) for event_type, data in fuzz.VALID_DATA.items()
}
