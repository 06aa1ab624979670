"""Forward error correction: GF(256) arithmetic, a per-frame block code and a Tambur-style streaming code."""
