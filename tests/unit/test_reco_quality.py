"""The blend beats popularity and trending by 2x on HR@10 on a JD slice, measured prequentially."""

import pytest

from personalization.tools.reco_quality import measure, ratio
from personalization.replay.datasets import locate_datasets

pytestmark = pytest.mark.skipif(bool(locate_datasets().missing), reason="shared datasets not present")


def test_blend_beats_popularity_and_trending_on_jd() -> None:
    quality = measure("jd", limit=20_000)
    assert quality.tested > 5_000
    assert ratio(quality, "popularity") >= 2.0, quality.hits
    assert ratio(quality, "trending") >= 2.0, quality.hits
