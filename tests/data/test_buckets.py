"""Aspect-ratio buckets: multiples of 64, about the target area, nearest aspect wins."""

from __future__ import annotations

from kolora_core.data.buckets import STEP, bucket_histogram, bucket_sizes, nearest_bucket


def test_buckets_are_multiples_of_64_near_the_area_between_1_2_and_2_1() -> None:
    sizes = bucket_sizes(1024)
    assert (1024, 1024) in sizes and (768, 1344) in sizes and (1408, 704) in sizes and (704, 1408) in sizes
    for width, height in sizes:
        assert width % STEP == 0 and height % STEP == 0
        assert 0.5 <= width / height <= 2.0
        assert 0.8 * 1024 * 1024 <= width * height <= 1024 * 1024
        assert (height, width) in sizes
    assert bucket_sizes(192) == [(128, 256), (192, 192), (256, 128)]
    assert sizes == sorted(sizes, key=lambda wh: wh[0] / wh[1])


def test_nearest_bucket_and_histogram() -> None:
    sizes = bucket_sizes(1024)
    assert nearest_bucket(3000, 3000, sizes) == (1024, 1024)
    assert nearest_bucket(1600, 900, sizes) == (1344, 768)  # 16:9
    assert nearest_bucket(900, 1600, sizes) == (768, 1344)
    assert bucket_histogram([(1600, 900), (1000, 1000), (1920, 1080)], 1024) == {"1024x1024": 1, "1344x768": 2}
