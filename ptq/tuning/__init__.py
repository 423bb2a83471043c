"""Scored choices: what ptq decides by measuring candidates with onnxruntime on held-out
validation samples (``tuning.validation``), around one ``Scoring`` (``tuning.scoring``): the
calibration method (``method``), the weight range (``weight_range``), hybrid and float-fallback
groups (``groups``), bias correction (``bias_correction``: means from the fitting samples, kept
where it scores better), the accuracy placement (``sensitivity``, ``targets``, ``collapse``); and
the latency-aware placement (``latency``, measured times on this CPU rather than scores).
"""
