"""Experiment specs: TOML files validated into dataclasses, with errors that point at the key."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from testbed.codecs.framing import MAX_TAU
from testbed.codecs.probe import PROBE_HEADER_BYTES
from testbed.emulator.cross_traffic import MAX_CROSS_FLOWS, PERIODS, CrossTrafficParams
from testbed.emulator.link import (
    BernoulliParams,
    ConstantRateParams,
    DeliveryTraceParams,
    IntervalTraceParams,
    LinkParams,
    LossParams,
    PacketTraceParams,
    RateParams,
    RateScheduleParams,
)
from testbed.emulator.loss import GilbertElliottParams
from testbed.emulator.netem import needs_netem_qdisc, unsupported_by_netem
from testbed.spec_table import SpecError, SpecTable
from testbed.traces.errors import TraceError
from testbed.traces.loss_trace import read_loss_intervals, read_packet_outcomes
from testbed.traces.mahimahi import read_mahimahi_trace
from testbed.traces.rate_schedule import read_rate_schedule

SCHEME_KINDS = ("probe", "vp9", "vp8")
FEC_KINDS = ("streaming", "block", "none")
SHAPERS = ("auto", "netem", "userspace")
CROSS_TRAFFIC_KINDS = ("probe", "on-off")
NO_VIDEO = "none"
# The largest UDP payload; `mtu` leaves 128 bytes of it for headers (media header + streaming FEC extension
# at MAX_TAU = 22 + 17 + 4 * 16 = 103 bytes).
MAX_UDP_PAYLOAD = 65507


@dataclass(frozen=True)
class ExperimentSpec:
    """Global settings of an experiment."""

    name: str
    duration_s: float
    fps: float
    seeds: tuple[int, ...]
    drain_s: float


@dataclass(frozen=True)
class VideoSpec:
    """A video source, cropped/resized to `size`."""

    name: str
    source: str
    size: tuple[int, int]
    loop: str = "loop"


@dataclass(frozen=True)
class ProbeSchemeSpec:
    """A constant-bitrate datagram source and an arrival recorder."""

    name: str
    rate_kbps: float
    packet_bytes: int
    kind: str = "probe"
    uses_video: bool = False


@dataclass(frozen=True)
class VpxSchemeSpec:
    """VP8/VP9 through libvpx in real-time CBR, protected by FEC (Ringmaster/Tambur baseline)."""

    name: str
    kind: str
    target_kbps: float
    fec: str = "streaming"
    tau: int = 3
    redundancy: float | str = "adaptive"  # parity/data ratio, or "adaptive" from receiver reports
    mtu: int = 1200
    keyframe_interval: int | None = None
    keyframe_request: str = "tambur"
    deadline_frames: int = 3
    ssim: bool = True
    lpips: bool = False
    retransmissions: bool = False
    uses_video: bool = True


SchemeSpec = ProbeSchemeSpec | VpxSchemeSpec


@dataclass(frozen=True)
class NetworkSpec:
    """Both directions of the bottleneck: forward carries media (and cross traffic), reverse carries feedback."""

    name: str
    forward: LinkParams
    reverse: LinkParams
    cross_traffic: tuple[CrossTrafficParams, ...] = ()


@dataclass(frozen=True)
class MininetSpec:
    """Settings used only by the `mininet` backend."""

    shaper: str = "auto"  # "auto" | "netem" | "userspace"


@dataclass(frozen=True)
class Run:
    """One (scheme, network, video, seed) combination."""

    experiment: ExperimentSpec
    scheme: SchemeSpec
    network: NetworkSpec
    video: VideoSpec | None
    seed: int

    @property
    def video_name(self) -> str:
        """Name logged in the `video` column ("none" for schemes without video)."""
        return self.video.name if self.video else NO_VIDEO


@dataclass(frozen=True)
class Spec:
    """A validated experiment spec."""

    source: Path
    experiment: ExperimentSpec
    videos: tuple[VideoSpec, ...]
    schemes: tuple[SchemeSpec, ...]
    networks: tuple[NetworkSpec, ...]
    resolved: dict[str, Any] = field(compare=False, repr=False)
    input_files: tuple[Path, ...] = ()
    mininet: MininetSpec = MininetSpec()

    def runs(self) -> list[Run]:
        """Every scheme x network x video x seed combination, in spec order."""
        runs = []
        for scheme in self.schemes:
            videos: tuple[VideoSpec | None, ...] = self.videos if scheme.uses_video else (None,)
            for network in self.networks:
                for video in videos:
                    for seed in self.experiment.seeds:
                        runs.append(Run(self.experiment, scheme, network, video, seed))
        return runs

    def to_toml(self) -> str:
        """The resolved spec (defaults filled in, paths absolute) as TOML."""
        return tomli_w.dumps(self.resolved)


def load_spec(path: str | Path, seed_override: int | None = None) -> Spec:
    """Read and validate a spec file; raise SpecError naming the file, table and key."""
    source = Path(path)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{source}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{source}: cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{source}: invalid TOML: {error}") from None
    return parse_spec(data, source, seed_override)


def parse_spec(data: dict[str, Any], source: Path, seed_override: int | None = None) -> Spec:
    """Validate an already-parsed TOML document."""
    root = SpecTable(data, source, "")
    for key in ("experiment", "scheme", "video", "network", "mininet"):
        root.raw(key, None)
    root.finish()  # unknown top-level tables first: "[[networks]]" should not read as "no network"
    experiment_table = SpecTable(root.raw("experiment"), source, "[experiment]")
    root.resolved["experiment"] = experiment_table.resolved
    experiment = _experiment(experiment_table, seed_override)
    inputs: list[Path] = []
    schemes = tuple(_scheme(t) for t in _array(root, "scheme", required=True))
    videos = tuple(_video(t, inputs) for t in _array(root, "video"))
    networks = tuple(_network(t, experiment, inputs) for t in _array(root, "network", required=True))
    for kind, items in (("scheme", schemes), ("video", videos), ("network", networks)):
        _unique(root, kind, [item.name for item in items])
    if any(s.uses_video for s in schemes) and not videos:
        root.fail("", "needs at least one [[video]] for its video schemes")
    if any(s.uses_video for s in schemes) and round(experiment.duration_s * experiment.fps) < 2:
        experiment_table.fail("duration_s", f"gives {round(experiment.duration_s * experiment.fps)} frames at "
                                            f"{experiment.fps:g} fps; video schemes need at least 2")
    mininet = _mininet(root, networks)
    return Spec(source, experiment, videos, schemes, networks, root.resolved, tuple(inputs), mininet)


def _mininet(root: SpecTable, networks: tuple[NetworkSpec, ...]) -> MininetSpec:
    table = root.table("mininet")
    if table is None:
        return MininetSpec()
    shaper = table.string("shaper", "auto", choices=SHAPERS)
    if shaper == "netem":
        for network in networks:
            problems = netem_problems(network)
            if problems:
                table.fail("shaper", f'is "netem", but netem cannot express network "{network.name}" '
                                     f'{"; ".join(problems)}')
    table.finish()
    return MininetSpec(shaper)


def netem_problems(network: NetworkSpec) -> list[str]:
    """Why the tc shaper cannot reproduce `network` (each reason names the direction and key); empty if it can."""
    problems = [f"({direction}) {problem}"
                for direction, params in (("forward", network.forward), ("reverse", network.reverse))
                for problem in unsupported_by_netem(params)]
    if network.cross_traffic and needs_netem_qdisc(network.forward):
        problems.append("cross_traffic with loss, delay or jitter: the netem qdisc sits on the sender's egress, "
                        "so cross traffic would bypass it (only htb and the FIFO are shared); "
                        "use the userspace shaper")
    return problems


def _array(root: SpecTable, key: str, required: bool = False) -> list[SpecTable]:
    """An array of tables such as [[network]], each named by its `name` key in errors."""
    items = root.raw(key, [] if not required else None)
    if items is None:
        root.fail("", f"needs at least one [[{key}]] table")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        root.fail(key, f"must be an array of tables ([[{key}]])")
    tables = []
    for index, item in enumerate(items):
        name = item.get("name")
        where = f'{key} "{name}"' if isinstance(name, str) else f"[[{key}]] #{index + 1}"
        tables.append(SpecTable(item, root.source, where))
    if tables:
        root.resolved[key] = [t.resolved for t in tables]
    return tables


def _unique(root: SpecTable, kind: str, names: list[str]) -> None:
    seen = set()
    for name in names:
        if name in seen:
            root.fail("", f'{kind} name "{name}" is used twice')
        seen.add(name)


def _experiment(table: SpecTable, seed_override: int | None) -> ExperimentSpec:
    name = table.string("name")
    duration_s = table.number("duration_s", above=0)
    fps = table.number("fps", 30, above=0, maximum=240)
    seeds = table.integer_list("seeds", [1], minimum=0)
    if seed_override is not None:
        if seed_override < 0:
            raise SpecError(f"--seed must be >= 0, got {seed_override}")
        seeds = [seed_override]
        table.resolved["seeds"] = seeds
    if len(set(seeds)) != len(seeds):
        table.fail("seeds", f"must not repeat a seed, got {seeds!r}")
    drain_s = table.number("drain_s", 2.0, minimum=0)
    table.finish()
    return ExperimentSpec(name, float(duration_s), float(fps), tuple(seeds), float(drain_s))


def _video(table: SpecTable, inputs: list[Path]) -> VideoSpec:
    name = table.string("name")
    source = table.string("source")
    if not source.startswith(("sample:", "synthetic:")):
        inputs.append(table.path("source"))
        source = table.resolved["source"]
    width, height = table.integer_list("size", [256, 256], length=2, minimum=16)
    if width % 2 or height % 2:
        table.fail("size", f"must be even (4:2:0 video), got {[width, height]!r}")
    loop = table.string("loop", "loop", choices=("loop", "pingpong"))
    table.finish()
    return VideoSpec(name, source, (width, height), loop)


def _scheme(table: SpecTable) -> SchemeSpec:
    name = table.string("name")
    kind = table.string("kind", choices=SCHEME_KINDS)
    if kind == "probe":
        rate_kbps = table.number("rate_kbps", above=0)
        packet_bytes = int(table.number("packet_bytes", 1200, minimum=PROBE_HEADER_BYTES, maximum=MAX_UDP_PAYLOAD,
                                        integer=True))
        table.finish()
        return ProbeSchemeSpec(name, float(rate_kbps), packet_bytes)
    return _vpx_scheme(table, name, kind)


def _vpx_scheme(table: SpecTable, name: str, kind: str) -> VpxSchemeSpec:
    target_kbps = float(table.number("target_kbps", above=0))
    fec = table.string("fec", "streaming", choices=FEC_KINDS)
    tau = int(table.number("tau", 3, minimum=1, maximum=MAX_TAU, integer=True))
    redundancy: float | str = 0.0
    if fec != "none":
        value = table.raw("redundancy", "adaptive")
        if value == "adaptive":
            redundancy = table.string("redundancy", "adaptive")
        else:
            # The streaming code has at most one parity stripe per data stripe; a block code may have more.
            redundancy = float(table.number("redundancy", minimum=0, maximum=1 if fec == "streaming" else 4))
    elif table.has("redundancy"):
        table.fail("redundancy", 'has no effect with fec = "none"; remove it')
    scheme = VpxSchemeSpec(
        name, kind, target_kbps, fec, tau, redundancy,
        mtu=int(table.number("mtu", 1200, minimum=256, maximum=MAX_UDP_PAYLOAD - 128, integer=True)),
        keyframe_interval=(int(table.number("keyframe_interval", minimum=1, integer=True))
                           if table.has("keyframe_interval") else None),
        keyframe_request=table.string("keyframe_request", "tambur", choices=("tambur", "pli")),
        deadline_frames=int(table.number("deadline_frames", tau, minimum=0, integer=True)),
        ssim=table.boolean("ssim", True),
        lpips=table.boolean("lpips", False),
        retransmissions=table.boolean("retransmissions", False),
    )
    table.finish()
    return scheme


def _network(table: SpecTable, experiment: ExperimentSpec, inputs: list[Path]) -> NetworkSpec:
    name = table.string("name")
    delay_s = table.number("delay_ms", 0, minimum=0) / 1000
    jitter_s = table.number("jitter_ms", 0, minimum=0) / 1000
    reorder = table.boolean("reorder", False)
    forward = _link(table, experiment, inputs, delay_s, jitter_s, reorder)
    reverse_table = table.table("reverse")
    if reverse_table is None:
        reverse = LinkParams(delay_s=delay_s, jitter_s=jitter_s, reorder=reorder)
    else:
        reverse = _link(reverse_table, experiment, inputs, delay_s, jitter_s, reorder)
        reverse_table.finish()
    cross_traffic = _cross_traffic(table)
    table.finish()
    return NetworkSpec(name, forward, reverse, cross_traffic)


def _cross_traffic(table: SpecTable) -> tuple[CrossTrafficParams, ...]:
    """`cross_traffic`: one inline table or an array of them, each a flow sharing the forward bottleneck."""
    value = table.raw("cross_traffic", None)
    if value is None:
        return ()
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
        table.fail("cross_traffic", "must be a table or a non-empty array of tables")
    if len(items) > MAX_CROSS_FLOWS:
        table.fail("cross_traffic", f"has {len(items)} flows; at most {MAX_CROSS_FLOWS} are supported")
    flows, resolved = [], []
    for index, item in enumerate(items):
        key = "cross_traffic." if isinstance(value, dict) else f"cross_traffic[{index}]."
        flow_table = SpecTable(item, table.source, table.where, table.prefix + key)
        flows.append(_cross_flow(flow_table))
        resolved.append(flow_table.resolved)
    table.resolved["cross_traffic"] = resolved[0] if isinstance(value, dict) else resolved
    return tuple(flows)


def _cross_flow(table: SpecTable) -> CrossTrafficParams:
    kind = table.string("kind", "probe", choices=CROSS_TRAFFIC_KINDS)
    rate_kbps = float(table.number("rate_kbps", above=0))
    # One byte beyond the probe header carries the flow's tag: flows on one schedule send distinct payloads.
    packet_bytes = int(table.number("packet_bytes", 1200, minimum=PROBE_HEADER_BYTES + 1, maximum=MAX_UDP_PAYLOAD,
                                    integer=True))
    start_s = float(table.number("start_s", 0, minimum=0))
    on_s, off_s, periods = None, 0.0, "fixed"
    if kind == "on-off":
        on_s = float(table.number("on_s", above=0))
        off_s = float(table.number("off_s", above=0))
        periods = table.string("periods", "fixed", choices=PERIODS)
    table.finish()
    return CrossTrafficParams(rate_kbps, packet_bytes, start_s, on_s, off_s, periods)


def _link(table: SpecTable, experiment: ExperimentSpec, inputs: list[Path], delay_s: float,
          jitter_s: float, reorder: bool) -> LinkParams:
    loss_table = table.table("loss")
    rate_table = table.table("rate")
    queue_table = table.table("queue")
    queue_bytes = queue_packets = None
    if queue_table is not None:
        if not (queue_table.has("bytes") or queue_table.has("packets")):
            queue_table.fail("", "needs bytes and/or packets")
        if queue_table.has("bytes"):
            queue_bytes = int(queue_table.number("bytes", minimum=1, integer=True))
        if queue_table.has("packets"):
            queue_packets = int(queue_table.number("packets", minimum=1, integer=True))
        queue_table.finish()
    return LinkParams(
        delay_s=delay_s,
        jitter_s=jitter_s,
        reorder=reorder,
        loss=_loss(loss_table, experiment, inputs) if loss_table else None,
        rate=_rate(rate_table, inputs) if rate_table else None,
        queue_bytes=queue_bytes,
        queue_packets=queue_packets,
    )


def _loss(table: SpecTable, experiment: ExperimentSpec, inputs: list[Path]) -> LossParams:
    model = table.string("model", choices=("gilbert-elliott", "bernoulli", "trace"))
    params: LossParams
    if model == "gilbert-elliott":
        p = table.number("p", minimum=0, maximum=1)
        params = GilbertElliottParams(
            p=p,
            r=table.number("r", 1 - p, minimum=0, maximum=1),  # netem's default
            loss_bad=table.number("loss_bad", 1.0, minimum=0, maximum=1),
            loss_good=table.number("loss_good", 0.0, minimum=0, maximum=1),
            clock=table.string("clock", "packet", choices=("packet", "frame")),
            slot_s=1 / experiment.fps,
        )
    elif model == "bernoulli":
        params = BernoulliParams(table.number("rate", minimum=0, maximum=1))
    else:
        path = table.path("path")
        inputs.append(path)
        file_format = table.string("format", "packets", choices=("packets", "intervals"))
        try:
            if file_format == "packets":
                params = PacketTraceParams(read_packet_outcomes(path), table.boolean("loop", True))
            else:
                params = IntervalTraceParams(read_loss_intervals(path))
        except TraceError as error:
            table.fail("path", f"is not a valid loss trace: {error}")
    table.finish()
    return params


def _rate(table: SpecTable, inputs: list[Path]) -> RateParams:
    if table.has("kbps") == table.has("trace"):
        table.fail("", "needs exactly one of kbps or trace")
    params: RateParams
    if table.has("kbps"):
        params = ConstantRateParams(table.number("kbps", above=0))
    else:
        path = table.path("trace")
        inputs.append(path)
        default_format = "csv" if path.suffix.lower() == ".csv" else "mahimahi"
        file_format = table.string("format", default_format, choices=("mahimahi", "csv"))
        try:
            if file_format == "mahimahi":
                params = DeliveryTraceParams(read_mahimahi_trace(path), not table.boolean("once", False))
            else:
                times_s, kbps = read_rate_schedule(path)
                params = RateScheduleParams(times_s, kbps)
        except TraceError as error:
            table.fail("trace", f"is not a valid {file_format} trace: {error}")
    table.finish()
    return params
