"""LinkParams <-> JSON for the userspace shaper's config: every loss and rate kind survives the round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from testbed.emulator.link import (
    BernoulliParams,
    ConstantRateParams,
    DeliveryTraceParams,
    IntervalTraceParams,
    LinkParams,
    PacketTraceParams,
    RateScheduleParams,
)
from testbed.emulator.link_config import link_params_from_dict, link_params_to_dict
from testbed.emulator.loss import GilbertElliottParams

CASES = [
    LinkParams(),
    LinkParams(delay_s=0.05, jitter_s=0.002, reorder=True, queue_bytes=6000, queue_packets=10,
               loss=GilbertElliottParams(0.068, 0.852, 0.5, 0.04, "frame", 1 / 30), rate=ConstantRateParams(320)),
    LinkParams(loss=BernoulliParams(0.1), rate=RateScheduleParams(np.array([0.0, 1.5]), np.array([300.0, 100.0]))),
    LinkParams(loss=PacketTraceParams(np.array([0, 1, 1, 0], dtype=np.int8), loop=False),
               rate=DeliveryTraceParams(np.array([1.0, 1.0, 3.0]), loop=True)),
    LinkParams(loss=IntervalTraceParams(np.array([[0.5, 1.0], [2.0, 2.25]]))),
]


def _arrays(params: LinkParams) -> list[np.ndarray]:
    parts = [params.loss, params.rate]
    return [value for part in parts if part is not None for value in vars(part).values()
            if isinstance(value, np.ndarray)]


@pytest.mark.parametrize("params", CASES)
def test_round_trip_through_json(params: LinkParams) -> None:
    back = link_params_from_dict(json.loads(json.dumps(link_params_to_dict(params))))
    assert back == params  # arrays are excluded from equality: compare them one by one
    for ours, theirs in zip(_arrays(params), _arrays(back), strict=True):
        np.testing.assert_array_equal(ours, theirs)
