"""Spec validation: good specs parse into the expected dataclasses; bad ones name file, table and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.emulator.link import ConstantRateParams, DeliveryTraceParams, RateScheduleParams
from testbed.emulator.loss import GilbertElliottParams
from testbed.spec import load_spec
from testbed.spec_table import SpecError

BASE = """
[experiment]
name = "t"
duration_s = 10

[[scheme]]
name = "probe"
kind = "probe"
rate_kbps = 400

[[network]]
name = "ge-medium"
delay_ms = 50
loss = { model = "gilbert-elliott", p = 0.068, r = 0.852, loss_good = 0.04, loss_bad = 0.5 }
"""


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    return str(info.value)


def test_probe_only_spec_needs_no_video_and_fills_defaults(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE))
    assert spec.experiment.fps == 30 and spec.experiment.seeds == (1,)
    assert spec.videos == ()
    (network,) = spec.networks
    assert network.forward.delay_s == pytest.approx(0.05)
    assert network.forward.loss == GilbertElliottParams(0.068, 0.852, 0.5, 0.04, "packet", 1 / 30)
    # The reverse path has the same delay and is lossless and unshaped unless configured.
    assert network.reverse.delay_s == pytest.approx(0.05)
    assert network.reverse.loss is None and network.reverse.rate is None
    assert [r.video_name for r in spec.runs()] == ["none"]
    assert spec.schemes[0].packet_bytes == 1200
    resolved = spec.to_toml()
    assert 'clock = "packet"' in resolved and "packet_bytes = 1200" in resolved


def test_resolved_spec_loads_back_to_the_same_spec(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE))
    again = load_spec(write(tmp_path, spec.to_toml(), "resolved.toml"))
    assert again.networks == spec.networks and again.schemes == spec.schemes
    assert again.experiment == spec.experiment


def test_netem_default_r_is_one_minus_p(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE.replace("r = 0.852, ", "")))
    assert spec.networks[0].forward.loss.r == pytest.approx(1 - 0.068)


def test_runs_cover_every_combination_in_spec_order(tmp_path: Path) -> None:
    text = BASE.replace("duration_s = 10", "duration_s = 10\nseeds = [3, 1]") + """
[[scheme]]
name = "probe2"
kind = "probe"
rate_kbps = 100

[[network]]
name = "fifo"
rate = { kbps = 320 }
queue = { bytes = 6000, packets = 10 }
"""
    spec = load_spec(write(tmp_path, text))
    keys = [(r.scheme.name, r.network.name, r.seed) for r in spec.runs()]
    assert keys == [
        ("probe", "ge-medium", 3), ("probe", "ge-medium", 1), ("probe", "fifo", 3), ("probe", "fifo", 1),
        ("probe2", "ge-medium", 3), ("probe2", "ge-medium", 1), ("probe2", "fifo", 3), ("probe2", "fifo", 1),
    ]
    fifo = spec.networks[1].forward
    assert fifo.rate == ConstantRateParams(320) and (fifo.queue_bytes, fifo.queue_packets) == (6000, 10)
    assert load_spec(spec.source, seed_override=7).experiment.seeds == (7,)


def test_rate_traces_are_loaded_relative_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "link.trace").write_text("0\n5\n10\n")
    (tmp_path / "traces" / "schedule.csv").write_text("time_s,kbps\n0,320\n10,100\n")
    text = BASE + """
[[network]]
name = "mahimahi"
rate = { trace = "traces/link.trace", once = true }

[[network]]
name = "schedule"
rate = { trace = "traces/schedule.csv" }
"""
    spec = load_spec(write(tmp_path, text))
    mahimahi, schedule = spec.networks[1].forward.rate, spec.networks[2].forward.rate
    assert isinstance(mahimahi, DeliveryTraceParams) and not mahimahi.loop
    assert list(mahimahi.opportunities_ms) == [0, 5, 10]
    assert isinstance(schedule, RateScheduleParams) and list(schedule.kbps) == [320, 100]
    assert str(tmp_path / "traces" / "link.trace") in spec.to_toml()
    assert len(spec.input_files) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("loss_bad = 0.5", "loss_bad = 1.7"), 'network "ge-medium": loss.loss_bad must be within [0, 1], got 1.7'),
        (("p = 0.068", "p = 1.7"), 'network "ge-medium": loss.p must be within [0, 1], got 1.7'),
        (("delay_ms = 50", "dealy_ms = 50"), 'network "ge-medium": has unknown key "dealy_ms" (did you mean "delay_ms"?)'),
        (("loss_good = 0.04", "los_good = 0.04"), 'has unknown key "loss.los_good" (did you mean "loss.loss_good"?)'),
        (('model = "gilbert-elliott"', 'model = "gilbert"'), 'loss.model must be one of "gilbert-elliott", "bernoulli", "trace", got "gilbert" (did you mean "gilbert-elliott"?)'),
        (('kind = "probe"', 'kind = "vp10"'), 'scheme "probe": kind must be one of "probe", "vp9", "vp8", got "vp10"'),
        (("rate_kbps = 400", "rate_kbps = -1"), 'scheme "probe": rate_kbps must be > 0, got -1'),
        (("rate_kbps = 400", 'rate_kbps = "fast"'), "rate_kbps must be a number, got str 'fast'"),
        (("duration_s = 10", "duration_s = 0"), "[experiment]: duration_s must be > 0, got 0"),
        (('name = "t"', ""), "[experiment]: name is required"),
        (("delay_ms = 50", "delay_ms = 50\nqueue = { byte = 6000 }"), 'queue needs bytes and/or packets'),
        (("delay_ms = 50", "delay_ms = 50\nrate = { kbps = 1, trace = 'x' }"), "rate needs exactly one of kbps or trace"),
        (("delay_ms = 50", "delay_ms = 50\nrate = { trace = 'missing.trace' }"), "rate.trace file not found"),
    ],
)
def test_bad_specs_name_the_file_table_and_key(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in BASE
    text = BASE.replace(old, new, 1)
    error = error_of(tmp_path, text)
    assert error.startswith(str(tmp_path / "spec.toml") + ": ")
    assert message in error


def test_duplicate_names_and_missing_tables_are_rejected(tmp_path: Path) -> None:
    twice = BASE + BASE[BASE.index("[[network]]"):]
    assert 'network name "ge-medium" is used twice' in error_of(tmp_path, twice)
    no_network = BASE[: BASE.index("[[network]]")]
    assert "needs at least one [[network]] table" in error_of(tmp_path, no_network)
    assert 'unknown key "networks"' in error_of(tmp_path, BASE.replace("[[network]]", "[[networks]]"))


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    assert "invalid TOML" in error_of(tmp_path, "[experiment\nname = 1")
    with pytest.raises(SpecError, match="file not found"):
        load_spec(tmp_path / "nope.toml")


def test_bad_trace_file_error_names_key_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "bad.trace").write_text("0\n7\n5\n")
    text = BASE.replace("delay_ms = 50", "delay_ms = 50\nrate = { trace = 'bad.trace' }")
    error = error_of(tmp_path, text)
    assert 'network "ge-medium": rate.trace is not a valid mahimahi trace' in error
    assert f"{tmp_path / 'bad.trace'}:3:" in error


VIDEO_SCHEME = """
[[video]]
name = "v"
source = "synthetic:talking-head"

[[scheme]]
name = "vp9"
kind = "vp9"
target_kbps = 100
"""


def test_video_runs_need_frames_and_streaming_parity_stays_within_one(tmp_path: Path) -> None:
    short = BASE.replace("duration_s = 10", "duration_s = 0.01") + VIDEO_SCHEME
    assert "[experiment]: duration_s gives 0 frames at 30 fps; video schemes need at least 2" in error_of(tmp_path,
                                                                                                        short)
    too_much = BASE + VIDEO_SCHEME + 'fec = "streaming"\nredundancy = 2\n'
    assert 'scheme "vp9": redundancy must be within [0, 1], got 2' in error_of(tmp_path, too_much)
    block = BASE + VIDEO_SCHEME + 'fec = "block"\nredundancy = 2\n'
    assert load_spec(write(tmp_path, block)).schemes[1].redundancy == 2


def test_negative_seed_override_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="--seed must be >= 0, got -1"):
        load_spec(write(tmp_path, BASE), seed_override=-1)


def test_mininet_shaper_defaults_to_auto_and_checks_netem_at_load_time(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path, BASE)).mininet.shaper == "auto"
    spec = load_spec(write(tmp_path, BASE + '\n[mininet]\nshaper = "netem"\n'))
    assert spec.mininet.shaper == "netem"  # a packet-clocked GE channel is netem's own gemodel
    assert load_spec(write(tmp_path, spec.to_toml(), "resolved.toml")).mininet == spec.mininet
    frame_clock = BASE.replace("loss_bad = 0.5 }", 'loss_bad = 0.5, clock = "frame" }')
    message = error_of(tmp_path, frame_clock + '\n[mininet]\nshaper = "netem"\n')
    assert 'mininet.shaper' in message and 'network "ge-medium" (forward)' in message and "frame" in message
    assert load_spec(write(tmp_path, frame_clock + '\n[mininet]\nshaper = "userspace"\n')).mininet.shaper == "userspace"
    assert 'mininet.shaper' in error_of(tmp_path, BASE + '\n[mininet]\nshaper = "tc"\n')
    assert 'did you mean "mininet.shaper"' in error_of(tmp_path, BASE + '\n[mininet]\nshapper = "auto"\n')
