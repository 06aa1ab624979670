"""VP9 + FEC end to end on the sim backend: real libvpx, real FEC, real network models."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from testbed.cli import main
from testbed.runner import run_experiment
from testbed.spec import load_spec

GE_MEDIUM = ('loss = { model = "gilbert-elliott", p = 0.068, r = 0.852, loss_good = 0.04, loss_bad = 0.50, '
             'clock = "frame" }')


def spec_text(schemes: str, network: str, duration_s: int = 10, seeds: str = "[1]", size: str = "[128, 128]") -> str:
    return f"""
[experiment]
name = "e2e"
duration_s = {duration_s}
seeds = {seeds}

[[video]]
name = "carphone"
source = "sample:carphone"
size = {size}
loop = "pingpong"
{schemes}
[[network]]
name = "net"
delay_ms = 50
{network}
"""


def scheme(name: str, fec: str, target_kbps: int, extra: str = "") -> str:
    return f"""
[[scheme]]
name = "{name}"
kind = "vp9"
target_kbps = {target_kbps}
fec = "{fec}"
{extra}
"""


def run(tmp_path: Path, text: str, name: str = "out") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    spec_path = tmp_path / f"{name}.toml"
    spec_path.write_text(text)
    out = tmp_path / name
    run_experiment(load_spec(spec_path), out)
    return (pd.read_parquet(out / "frames.parquet"), pd.read_parquet(out / "packets.parquet"),
            pd.read_csv(out / "summary.csv"))


def test_streaming_fec_beats_no_fec_under_thesis_ge_medium(tmp_path: Path) -> None:
    schemes = scheme("streaming", "streaming", 100) + scheme("nofec", "none", 150)
    frames, packets, summary = run(tmp_path, spec_text(schemes, GE_MEDIUM, duration_s=20, seeds="[1, 2]"))
    rows = summary[summary["level"] == "aggregate"].set_index("scheme")
    assert rows.loc["streaming", "non_rendered_pct"] < rows.loc["nofec", "non_rendered_pct"]
    assert rows.loc["streaming", "psnr_p10_db"] > rows.loc["nofec", "psnr_p10_db"]
    # Both schemes saw the same GE state in every frame slot (frame clock, same network and seed).
    media = packets[packets["flow"].isin(["media", "fec"])].copy()
    media["slot"] = (media["sent_ms"] * 30 / 1000).round().astype(int)  # frames go out at capture time
    states = media.groupby(["seed", "slot", "scheme"])["ge_state"].first().unstack("scheme").dropna()
    assert len(states) > 1000 and (states["streaming"] == states["nofec"]).all()
    # Adaptive FEC: parity appears once reports flag loss; overhead near Tambur's ~1/2.
    assert 30 < rows.loc["streaming", "fec_overhead_pct"] < 70 and rows.loc["nofec", "fec_overhead_pct"] == 0
    # Frames that FEC recovered late are shown late but shown: latency exceeds the path delay for some.
    streaming = frames[(frames["scheme"] == "streaming") & frames["rendered"]]
    assert (streaming["latency_ms"] > 50 + 2 * 1000 / 30).any()
    assert (frames.loc[frames["rendered"], "latency_ms"] >= 50).all()
    # The freeze column marks exactly one frame per W3C freeze, even when recovered frames share a display time.
    runs = summary[summary["level"] == "run"].astype({"seed": int}).set_index(["scheme", "seed"])["freeze_count"]
    marked = frames.groupby(["scheme", "seed"])["freeze"].sum()
    assert marked.reindex(runs.index).tolist() == runs.tolist() and runs.sum() > 0


def _lossless_frames_and_packets(tmp_path: Path, extra: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    frames, packets, _ = run(tmp_path, spec_text(scheme("nofec", "none", 150, extra), ""), "lossless")
    return frames, packets


@pytest.mark.parametrize("keyframe_request", ["pli", "tambur"])
def test_a_lost_p_frame_freezes_until_a_keyframe(tmp_path: Path, keyframe_request: str) -> None:
    extra = f'keyframe_request = "{keyframe_request}"'
    _, lossless = _lossless_frames_and_packets(tmp_path, extra)
    forward = lossless[lossless["flow"].isin(["media", "fec"])].reset_index(drop=True)
    lost_frame = 60
    lost_index = int(forward.index[forward["frame_id"] == lost_frame][0])
    outcomes = ["0"] * len(forward)
    outcomes[lost_index] = "1"
    (tmp_path / "loss.txt").write_text("\n".join(outcomes) + "\n")
    network = 'loss = { model = "trace", path = "loss.txt", format = "packets", loop = false }'
    frames, packets, _ = run(tmp_path, spec_text(scheme("nofec", "none", 150, extra), network), "lossy")
    assert (packets["drop"] == "loss").sum() == 1
    frames = frames.set_index("frame_id")
    assert frames.loc[: lost_frame - 1, "rendered"].all()
    later_keyframes = frames.index[frames["keyframe"] & (frames.index > lost_frame)]
    assert len(later_keyframes) >= 1
    recovery = int(later_keyframes[0])
    # Everything from the lost frame up to the keyframe is not rendered, and shows the last good frame.
    assert not frames.loc[lost_frame: recovery - 1, "rendered"].any()
    assert (frames.loc[lost_frame: recovery - 1, "shown_frame_id"] == lost_frame - 1).all()
    assert frames.loc[recovery:, "rendered"].all()
    assert frames.loc[lost_frame: recovery - 1, "psnr_db"].min() < frames.loc[: lost_frame - 1, "psnr_db"].min()
    requests = packets[packets["flow"] == "keyframe-request"]
    if keyframe_request == "pli":
        # The receiver's request is in the packet log, sent after the loss and before the keyframe.
        assert len(requests) >= 1
        first_request_ms = requests["sent_ms"].min()
        assert frames.loc[lost_frame, "capture_ms"] < first_request_ms < frames.loc[recovery, "capture_ms"]
    else:
        # Tambur/Ringmaster: no request datagram; the sender notices the ACK gap exceeding tau.
        assert requests.empty
        acked = packets[packets["flow"] == "ack"]["frame_id"]
        assert lost_frame not in set(acked) and {lost_frame + 4, lost_frame + 5} <= set(acked)
        assert recovery - lost_frame <= 4 + 4  # tau + 1 frames of ACKs, plus one path round trip


def test_fifo_drops_concentrate_on_keyframes(tmp_path: Path) -> None:
    network = "rate = { kbps = 320 }\nqueue = { bytes = 6000 }"
    # Fixed 1/2 parity (the thesis ran Tambur at ~50-60 % overhead) and periodic keyframes (thesis Fig. 5-10):
    # P-frames fit the 320 kbps link on average, keyframes plus their parity overflow the 6000-byte queue.
    extra = "redundancy = 0.5\nkeyframe_interval = 30"
    frames, packets, _ = run(tmp_path, spec_text(scheme("vp9", "streaming", 140, extra), network, duration_s=20,
                                                 size="[256, 256]"))
    keyframes = set(frames.loc[frames["keyframe"], "frame_id"])
    dropped = packets[packets["drop"] == "queue"]
    assert len(dropped) > 20
    keyframe_bytes = dropped.loc[dropped["frame_id"].isin(keyframes), "bytes"].sum()
    assert keyframe_bytes > 0.5 * dropped["bytes"].sum()
    # Keyframe packets are a small share of all packets, so the concentration is not an accident of volume.
    forward = packets[packets["flow"].isin(["media", "fec"])]
    assert forward.loc[forward["frame_id"].isin(keyframes), "bytes"].sum() < 0.5 * forward["bytes"].sum()


def test_video_runs_are_deterministic_and_jobs_do_not_matter(tmp_path: Path) -> None:
    text = spec_text(scheme("streaming", "streaming", 100) + scheme("block", "block", 100, "redundancy = 0.5"),
                     GE_MEDIUM, duration_s=4)
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(text)
    for name, jobs in (("a", 1), ("b", 1), ("c", 2)):
        run_experiment(load_spec(spec_path), tmp_path / name, jobs=jobs)
    for table in ("frames.parquet", "packets.parquet"):
        first = pd.read_parquet(tmp_path / "a" / table)
        for other in ("b", "c"):
            pd.testing.assert_frame_equal(first, pd.read_parquet(tmp_path / other / table))


def test_unreadable_video_fails_before_anything_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    text = spec_text(scheme("nofec", "none", 150), "").replace('"sample:carphone"', '"broken.mp4"')
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(text)
    assert main(["run", str(spec_path), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.replace("\n", "")
    assert 'video "carphone"' in error and str(broken) in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("delay_ms", "repaired"), [(50, True), (150, False)])
def test_retransmission_repairs_a_lost_packet_when_the_rtt_allows(tmp_path: Path, delay_ms: int,
                                                                   repaired: bool) -> None:
    extra = "retransmissions = true"
    text = spec_text(scheme("nofec", "none", 150, extra), "").replace("delay_ms = 50", f"delay_ms = {delay_ms}")
    _, lossless, _ = run(tmp_path, text, "lossless")
    forward = lossless[lossless["flow"].isin(["media", "fec"])].reset_index(drop=True)
    lost_frame = 60
    lost_index = int(forward.index[forward["frame_id"] == lost_frame][0])
    (tmp_path / "loss.txt").write_text("\n".join("1" if i == lost_index else "0" for i in range(len(forward))))
    network = 'loss = { model = "trace", path = "loss.txt", format = "packets", loop = false }'
    frames, packets, _ = run(tmp_path, text.replace(f"delay_ms = {delay_ms}\n",
                                                    f"delay_ms = {delay_ms}\n{network}\n"), "lossy")
    assert (packets["drop"] == "loss").sum() == 1
    nacks = packets[packets["flow"] == "nack"]
    assert len(nacks) == 1  # the receiver asks once, whatever the RTT: the sender decides
    frames = frames.set_index("frame_id")
    rtx = packets[packets["flow"] == "rtx"]
    if repaired:
        # RTT ~100 ms <= (tau + 1) frames: the copy arrives in time, nothing freezes.
        assert list(rtx["frame_id"]) == [lost_frame] and rtx["arrived_ms"].notna().all()
        assert frames["rendered"].all()
        waited = frames.loc[lost_frame, "latency_ms"] - frames.loc[lost_frame - 1, "latency_ms"]
        assert waited >= 2 * delay_ms - 1
    else:
        # RTT ~300 ms: a retransmission would come after the deadline, so the sender does not send one.
        assert rtx.empty
        assert not frames.loc[lost_frame, "rendered"]


def test_lpips_is_scored_per_frame_when_asked(tmp_path: Path) -> None:
    from testbed.analysis.lpips import lpips_available

    available, reason = lpips_available()
    if not available:
        pytest.skip(f"LPIPS cannot run here: {reason} (scripts/install.sh --for-tests installs it)")
    text = spec_text(scheme("nofec", "none", 150, "lpips = true"), GE_MEDIUM, duration_s=4, size="[64, 64]")
    frames, _, _ = run(tmp_path, text)
    lpips = frames["lpips"].to_numpy()
    assert len(lpips) == 120 and ((lpips >= 0) & (lpips < 1)).all()
    # Perceptual distance grows where PSNR falls (frozen slots).
    assert pd.Series(lpips).corr(frames["psnr_db"]) < -0.5
    environment = (tmp_path / "out" / "environment.json").read_text()
    assert '"lpips"' in environment and "sha256" in environment
