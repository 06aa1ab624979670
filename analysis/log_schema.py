"""Columns of the log tables every backend writes and every analysis reads (per DESIGN.md)."""

import pyarrow as pa

RUN_COLUMNS = [
    pa.field("scheme", pa.string()),
    pa.field("network", pa.string()),
    pa.field("video", pa.string()),
    pa.field("seed", pa.int64()),
]

PACKETS_SCHEMA = pa.schema(RUN_COLUMNS + [
    pa.field("flow", pa.string()),
    pa.field("seq", pa.int64()),
    pa.field("frame_id", pa.int64()),
    pa.field("bytes", pa.int64()),
    pa.field("sent_ms", pa.float64()),
    pa.field("arrived_ms", pa.float64()),
    pa.field("drop", pa.string()),
    pa.field("ge_state", pa.string()),
])

FRAMES_SCHEMA = pa.schema(RUN_COLUMNS + [
    pa.field("frame_id", pa.int64()),
    pa.field("capture_ms", pa.float64()),
    pa.field("sent_bytes", pa.int64()),
    pa.field("keyframe", pa.bool_()),
    pa.field("resolution", pa.string()),
    pa.field("decodable", pa.bool_()),
    pa.field("rendered", pa.bool_()),
    pa.field("shown_frame_id", pa.int64()),
    pa.field("display_ms", pa.float64()),
    pa.field("latency_ms", pa.float64()),
    pa.field("psnr_db", pa.float64()),
    pa.field("ssim", pa.float64()),
    pa.field("lpips", pa.float64()),
    pa.field("freeze", pa.bool_()),
])

# Flows carried by the forward path; every other flow is feedback on the reverse path, except cross traffic.
FORWARD_FLOWS = ("media", "fec", "rtx")
# Cross-traffic flows ("cross-1", "cross-2", ...) share the forward bottleneck but are not the scheme's.
CROSS_FLOW_PREFIX = "cross-"

# The encoded frames each receiver decoded and rendered, so reports can re-decode exactly what was shown.
BITSTREAMS_SCHEMA = pa.schema(RUN_COLUMNS + [
    pa.field("frame_id", pa.int64()),
    pa.field("codec", pa.string()),
    pa.field("data", pa.binary()),
])
