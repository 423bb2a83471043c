"""The one scoring: output SQNR against float, per output pooled over samples, averaged in dB."""

from __future__ import annotations

import numpy as np
import pytest

from ptq.tuning.scoring import output_score


def test_output_score_averages_outputs_in_db():
    ref = [[np.ones(4), np.full(4, 100.0)]]
    # Output 0: noise power 0.01 per element vs signal 1 -> 20 dB; output 1 exact -> capped at 200.
    test = [[np.ones(4) + 0.1, np.full(4, 100.0)]]
    assert output_score(ref, test) == pytest.approx((20.0 + 200.0) / 2)
    worse = [[np.ones(4) + 0.3, np.full(4, 100.0)]]
    assert output_score(ref, worse) < output_score(ref, test)
