"""The compression-claim benchmark's core at tiny size (2 gloo ranks, one seed, 300 steps).

Two-way 8-bit quantization must reach the uncompressed loss (within 0.01) at under 40% of the
bytes; EF-SignSGD must send under 5% of the bytes (its first steps are an uncompressed warm-up)
and end within 0.1 of the uncompressed loss. The full benchmark,
``benchmarks/compression_claim.py``, reports medians over seeds and world sizes.
"""

from __future__ import annotations

from benchmarks import compression_claim


def test_compressed_training_reaches_the_uncompressed_loss_with_fewer_bytes() -> None:
    steps = 300
    plain = compression_claim.run(2, "none", 0, steps)
    two_way = compression_claim.run(2, "two_way", 0, steps)
    sign = compression_claim.run(2, "sign", 0, steps)
    assert plain["ratio"] == 1.0
    assert abs(two_way["loss"] - plain["loss"]) < 0.01, (two_way, plain)
    assert 1.0 / two_way["ratio"] < 0.40, two_way
    assert 1.0 / sign["ratio"] < 0.05, sign
    assert sign["loss"] - plain["loss"] < 0.1, (sign, plain)
