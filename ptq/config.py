"""Configuration of a conversion: frozen dataclasses and string enums (JSON round-trips).

The CLI builds one ``Config`` from its options and hands it to ``ptq.convert``; every stage reads
typed fields from it. Validation happens here, once, in ``__post_init__``.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path

from ptq.errors import UsageError


class WeightRange(str, enum.Enum):
    """How each weight channel's range is chosen."""

    MINMAX = "minmax"  # the channel's extremes
    MSE = "mse"  # the clipped range with the least squared weight error (qmath.mse_weight_ranges)
    AUTO = "auto"  # mse where it raises the output SQNR on the calibration samples (ptq.tuning.method), else minmax


class Scheme(str, enum.Enum):
    """How a real range maps onto integers."""

    SYMMETRIC = "symmetric"  # zero point in the middle; scale from max |x|
    ASYMMETRIC = "asymmetric"  # zero point anywhere; scale from max - min


class CalibrationMethod(str, enum.Enum):
    """How an activation's range is chosen from what calibration observed."""

    MINMAX = "minmax"  # the extremes seen
    PERCENTILE = "percentile"  # clip the tails beyond the given percentile
    ENTROPY = "entropy"  # TensorRT-style KL-divergence threshold
    MSE = "mse"  # the clipping range with the least expected quantization error
    AUTO = "auto"  # whichever of percentile/minmax/mse gives outputs closest to float (ptq.tuning.method)


DEFAULT_PERCENTILE = 99.99


@dataclass(frozen=True)
class ImageFormat:
    """How an image file becomes a model input (for calibration or eval folders of images).

    Pixels are scaled to [0, 1], then ``(x - mean) / std`` per channel, in ``channel_order``;
    ``size`` (height, width) defaults to the model input's fixed spatial dimensions; ``layout``
    "auto" takes NCHW when the model's channel axis 1 holds 1 or 3, else NHWC.
    """

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    layout: str = "auto"  # auto | nchw | nhwc
    channel_order: str = "rgb"  # rgb | bgr

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.size is not None:
            object.__setattr__(self, "size", tuple(int(v) for v in self.size))
            if len(self.size) != 2 or min(self.size) < 1:
                raise UsageError(f"--input-size must be HxW with positive sides, got {self.size}")
        if self.layout not in ("auto", "nchw", "nhwc"):
            raise UsageError(f"--layout must be nchw or nhwc, got {self.layout!r}")
        if self.channel_order not in ("rgb", "bgr"):
            raise UsageError(f"--channel-order must be rgb or bgr, got {self.channel_order!r}")
        if len(self.mean) not in (1, 3) or len(self.std) not in (1, 3):
            raise UsageError("--mean and --std take 1 or 3 comma-separated values")
        if any(v == 0 for v in self.std):
            raise UsageError("--std values must not be 0")


# The latency search is on unless a Config says otherwise (the tests of other features turn this
# off: a measured placement may differ between runs on a busy machine).
DEFAULT_LATENCY_SEARCH = True
# Seconds the latency search may spend by default: on the bench models it took 4-35 s on a busy
# 2-core EPYC (bench/LATENCY_RESULTS.md), so 60 s lets every group be tried there.
DEFAULT_LATENCY_BUDGET_S = 60.0
# Intra-op thread counts the latency placement's output must be no slower than the original float
# model at: the search decides at 1 thread; the confirmation times the others too (2: the cores
# of the machine this was built on; onnxruntime's default is one thread per physical core).
DEFAULT_LATENCY_THREADS = (1, 2)


@dataclass(frozen=True)
class Config:
    """Everything that decides the output of ``ptq.convert``.

    Attributes:
        output: path of the quantized ``.onnx``; default ``<stem>.int8.onnx`` beside the input.
        calibration_data: folder (or file) of ``.npz``/``.npy`` samples or images, or samples
            from Python: an iterable of ``{input name: array}`` dicts, a function returning one,
            or an onnxruntime ``CalibrationDataReader`` with ``rewind()``
            (``ptq.calibrate.samples``); ``None`` selects dynamic (weight-only + hybrid kernels)
            mode, as TFLite's dynamic-range quantization.
        weights: scheme of int8 weights.
        activations: scheme of activations; asymmetric means uint8 (onnxruntime's fast x86 path),
            symmetric means int8 with zero point 0.
        per_channel: one scale per output channel of Conv/MatMul/Gemm weights.
        reduce_range: 7-bit weights (the default). x86 CPUs without VNNI (AVX2 only) multiply
            u8 x s8 pairs into a saturating int16, so 8-bit weights give wrong results there;
            turn it off only for a target with VNNI or ARM (README has the measurements).
        exclude: node names or op types to keep float.
        hybrid: MatMul/Gemm node names or op types to run with hybrid kernels in static mode
            (int8 weights, activations quantized at run time).
        calibration_samples: use only the first N calibration samples.
        smoothquant: SmoothQuant migration strength alpha in [0, 1] for every MatMul input with
            constant weights (folded into a constant Mul that produces it, e.g. GELU -> feed-forward
            down-projection, or a float Mul of its own, e.g. after a LayerNormalization); None (the
            default) leaves the choice to ``auto_smoothquant``, which smooths only the groups that
            measurably pay. MiniLM on padded batches, sentence cosine mean / worst held out: alpha
            0.5 on every group 0.9885 / 0.9720 (its validation cosine 0.92 left the collapse floor
            untriggered), the scored choice 0.9932 / 0.9883 (bench/ACCURACY_RESULTS.md).
        auto_hybrid: in static mode, run a group of MatMuls (grouped by the op type feeding
            them) with hybrid kernels when that raises the output SQNR on the calibration
            samples by at least 1 dB (``ptq.tuning.groups.choose_hybrid``).
        auto_smoothquant: in static mode, without ``smoothquant``, SmoothQuant (alpha 0.5) the
            MatMul inputs of a producer op type where that raises the output SQNR on the held-out
            validation samples by at least 1 dB (``ptq.tuning.smoothing``; MiniLM: its 12
            LayerNorm-fed inputs, sentence cosine 0.9901 -> 0.9932 mean on padded batches).
        auto_fallback: in static mode, keep an op type of int8 elementwise nodes (Mul, Add,
            Sigmoid, ...) float when that raises the output SQNR on the calibration samples by at
            least 1 dB (``ptq.tuning.groups``). Off by default: the calibration samples did not
            predict the held-out effect (README).
        bias_correction: correct Conv/Gemm biases for the mean output shift their int8 weights
            cause (``ptq.tuning.bias_correction``): None (the default) keeps the correction where
            it raises the output SQNR on the held-out validation samples by
            ``bias_correction.MARGIN_DB``; True always, False never.
        weight_range: per-channel weight ranges from min/max (the default), from the
            least-squared-error clipping (mse), or (auto) whichever scores better on the
            calibration samples, min/max kept unless MSE gains ``tuning.weight_range.WEIGHT_MSE_GAIN_DB``. MSE
            measured no consistent gain (README), so min/max stays the default.
        equalize: cross-layer equalization of Conv -> [Relu] -> Conv pairs
            (``ptq.rewrites.equalize``), exact in float. Off by default (README has the measurements).
        equalize_activations: static mode, needs calibration data: equalize the per-channel
            ranges of depthwise-conv inputs behind Conv -> HardSwish blocks (``ptq.rewrites.equalize_activations``),
            exact in float, one per-channel Mul per block (int8: its constant is on the quantizer's grid). None (the default): where the
            model has such blocks, the equalized model is kept when it scores better on the
            validation samples (``ptq.tuning.equalization``); True always, False never.
        target_cosine, target_sqnr, target_top1: static mode, with calibration data: fidelity
            targets on the held-out validation samples (output cosine, SQNR in dB, top-1
            agreement; the worst output counts, as for the --min-* gates). Where the int8 model
            misses one, the most damaging regions go back to float (or hybrid) until it holds
            (``ptq.tuning.targets``).
        metric: ``module:function`` scoring float against quantized outputs, higher is better
            (``function(reference, candidate)``, each a list over samples of {output name: array});
            ``target_metric`` is its target.
        image_format: how image files in the calibration folder become inputs.
        save_ranges: write the calibrated ranges to this JSON file.
        load_ranges: take ranges from this JSON file instead of calibrating.
        write_ort: also write the ``.ort`` flatbuffer.
        fp16: without calibration data, write float16 weights that onnxruntime expands to float32
            at load instead of int8 (``ptq.quantize.fp16``): about half the size, float32 kernels
            and latency; with it, static int8 whose float layers keep float16 weights that way.
        latency_search: static mode with calibration data: time candidate placements with
            onnxruntime on this CPU and keep float the int8 convs that make the whole model
            slower (``ptq.tuning.latency``); when no int8 placement beats the original float
            model, write int8 weights dequantized at load instead. With ``load_ranges`` the
            placement saved in the file is repeated without measuring (off: the planner's
            placement). The default comes from ``DEFAULT_LATENCY_SEARCH`` (on).
        latency_budget: seconds the latency search may spend.
        latency_threads: intra-op thread counts the latency placement is confirmed at (the ones
            the model is deployed with): its output must be no slower than the original float
            model at each, else ptq writes int8 weights with float kernels. The search itself
            decides at 1 thread, which is always confirmed.
        workers: calibrate in this many shards, each in its own process, and merge the observer
            states (``ptq.calibrate.shards``); the ranges equal one process's up to histogram
            re-binning. 1 (the default) calibrates in this process.
        ray: run the calibration shards as Ray tasks on the cluster at this address ("auto" or
            host:port; needs ``.[ray]``); the model file and the calibration folder must be
            shared storage that every node sees at the same path.
        shared_dir: where the model the shard workers read is written (default: the system
            temp folder, which a multi-node Ray cluster does not share).
    """

    output: Path | None = None
    calibration_data: Path | object | None = None  # object: a ptq.calibrate.samples.DataSource
    weights: Scheme = Scheme.SYMMETRIC
    activations: Scheme = Scheme.ASYMMETRIC
    per_channel: bool = True
    reduce_range: bool = True
    exclude: tuple[str, ...] = ()
    hybrid: tuple[str, ...] = ()
    calibration_method: CalibrationMethod = CalibrationMethod.AUTO
    calibration_samples: int | None = None
    percentile: float = DEFAULT_PERCENTILE
    smoothquant: float | None = None
    auto_hybrid: bool = True
    auto_smoothquant: bool = True
    bias_correction: bool | None = None  # None: scored (kept where it pays on validation)
    auto_fallback: bool = False
    weight_range: WeightRange = WeightRange.MINMAX
    equalize: bool = False
    equalize_activations: bool | None = None  # None: a scored candidate where blocks exist
    target_cosine: float | None = None
    target_sqnr: float | None = None
    target_top1: float | None = None
    metric: str | None = None
    target_metric: float | None = None
    image_format: ImageFormat = ImageFormat()
    save_ranges: Path | None = None
    load_ranges: Path | None = None
    write_ort: bool = True
    fp16: bool = False
    latency_search: bool = field(default_factory=lambda: DEFAULT_LATENCY_SEARCH)
    latency_budget: float = DEFAULT_LATENCY_BUDGET_S
    latency_threads: tuple[int, ...] = DEFAULT_LATENCY_THREADS
    workers: int = 1
    ray: str | None = None
    shared_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", Scheme(self.weights))
        object.__setattr__(self, "activations", Scheme(self.activations))
        object.__setattr__(self, "calibration_method", CalibrationMethod(self.calibration_method))
        object.__setattr__(self, "weight_range", WeightRange(self.weight_range))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "hybrid", tuple(self.hybrid))
        if self.output is not None:
            object.__setattr__(self, "output", Path(self.output))
        for name in ("calibration_data", "save_ranges", "load_ranges"):
            # calibration_data may also be samples from Python (ptq.calibrate.samples), kept as given.
            if isinstance(getattr(self, name), (str, os.PathLike)):
                object.__setattr__(self, name, Path(getattr(self, name)))
        if not 50.0 < self.percentile <= 100.0:
            raise UsageError(f"--percentile must be in (50, 100], got {self.percentile}")
        if self.smoothquant is not None and not 0.0 <= self.smoothquant <= 1.0:
            raise UsageError(f"--smoothquant must be in [0, 1], got {self.smoothquant}")
        if self.equalize_activations is True and self.calibration_data is None and self.load_ranges is None:
            raise UsageError("--equalize-activations needs -c/--calibration-data: the scales come from the samples' channel maxima")
        if self.smoothquant is not None and self.calibration_data is None:
            raise UsageError("--smoothquant needs -c/--calibration-data: the smoothing scales come from the samples' channel maxima")
        object.__setattr__(self, "latency_threads", tuple(self.latency_threads))
        if not self.latency_threads or not all(isinstance(t, int) and t >= 1 for t in self.latency_threads):
            raise UsageError(f"--latency-threads takes thread counts >= 1, got {self.latency_threads}")
        if not self.latency_budget > 0:
            raise UsageError(f"--latency-budget must be a positive number of seconds, got {self.latency_budget}")
        if self.target_cosine is not None and not -1.0 <= self.target_cosine <= 1.0:
            raise UsageError(f"--target-cosine must be in [-1, 1], got {self.target_cosine}")
        if self.target_top1 is not None and not 0.0 <= self.target_top1 <= 1.0:
            raise UsageError(f"--target-top1 is a fraction in [0, 1], got {self.target_top1}")
        if (self.metric is None) != (self.target_metric is None):
            raise UsageError("--metric and --target-metric go together: the metric and the value it must reach")
        if self.metric is not None and (self.metric.count(":") != 1 or not all(self.metric.split(":"))):
            raise UsageError(f"--metric takes module:function, got {self.metric!r}")
        if self.has_target and self.calibration_data is None:
            raise UsageError("--target-* needs -c/--calibration-data: targets are checked on held-out calibration samples")
        if self.calibration_samples is not None and self.calibration_samples < 1:
            raise UsageError(f"--calibration-samples must be at least 1, got {self.calibration_samples}")
        if self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.shared_dir is not None:
            object.__setattr__(self, "shared_dir", Path(self.shared_dir))
        self._refuse_sample_options_without_samples()

    def _refuse_sample_options_without_samples(self) -> None:
        """One rule for options that act on calibration samples: without -c they are refused
        (exit 2), never silently ignored (as --smoothquant and --equalize-activations above)."""
        if self.calibration_data is not None:
            return
        asked = [
            option
            for option, on in (
                ("--bias-correction", self.bias_correction is True),
                ("--auto-fallback", self.auto_fallback),
                (f"--calibration-method {self.calibration_method.value}", self.calibration_method != CalibrationMethod.AUTO),
                (f"--percentile {self.percentile:g}", self.percentile != DEFAULT_PERCENTILE),
                ("--calibration-samples", self.calibration_samples is not None),
                ("--save-ranges", self.save_ranges is not None),
                # with --load-ranges, auto takes the weight ranges the file recorded
                ("--weight-range auto", self.weight_range == WeightRange.AUTO and self.load_ranges is None),
            )
            if on
        ]
        if asked:
            mode = "--load-ranges takes ranges from the file" if self.load_ranges is not None else "dynamic mode has none"
            raise UsageError(
                f"{', '.join(asked)} act{'s' if len(asked) == 1 else ''} on calibration samples and need -c/--calibration-data"
                f" ({mode}): add -c DIR or drop {'it' if len(asked) == 1 else 'them'}"
            )

    @property
    def mse_weights(self) -> bool:
        """Whether weights take MSE-clipped ranges (auto means min/max until ``tuning.weight_range`` picks)."""
        return self.weight_range == WeightRange.MSE

    @property
    def has_target(self) -> bool:
        return any(v is not None for v in (self.target_cosine, self.target_sqnr, self.target_top1, self.target_metric))

    @property
    def static(self) -> bool:
        """Static (full int8) with calibration data or saved ranges; dynamic (hybrid) otherwise."""
        return self.calibration_data is not None or self.load_ranges is not None


@dataclass(frozen=True)
class OutputPaths:
    """The files one conversion writes, all beside each other."""

    onnx: Path
    ort: Path
    ops: Path

    @classmethod
    def for_output(cls, onnx_path: Path) -> "OutputPaths":
        stem = onnx_path.name[: -len(".onnx")] if onnx_path.name.endswith(".onnx") else onnx_path.name
        return cls(onnx=onnx_path, ort=onnx_path.with_name(stem + ".ort"), ops=onnx_path.with_name(stem + ".ops.json"))

    @classmethod
    def default_for(cls, model_path: Path) -> "OutputPaths":
        stem = model_path.name[: -len(".onnx")] if model_path.name.endswith(".onnx") else model_path.stem
        return cls.for_output(model_path.with_name(stem + ".int8.onnx"))

    def all(self) -> list[Path]:
        return [self.onnx, self.ort, self.ops]

