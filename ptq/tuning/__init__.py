"""Scored choices: what ptq decides by measuring candidates with onnxruntime on the calibration
samples, around one ``Scoring`` (``tuning.scoring``): the calibration method (``method``), the
weight range (``weight_range``), hybrid and float-fallback groups (``groups``), and bias
correction (``bias_correction``, measured means rather than scores); and the latency-aware
placement (``latency``, measured times on this CPU rather than scores).
"""
