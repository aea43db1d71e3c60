"""Generator parameters as values: one frozen, validated object per unit (SPEC 9, SPEC 11).

Each parameter class is a frozen dataclass checked once, in its constructor (a ``ValueError``
naming the argument), and everything that follows from it is a property computed without building
hardware: the cut points taken, register stages, accumulator width, latency. A unit takes the
same arguments as its parameter class, or one instance of it::

    BDDot(32, pipeline=2)            BDDot(DotParams(32, pipeline=2))
    DotParams(32, pipeline=2).latency == 8

:class:`ParametrisedComponent` checks the arguments in ``__new__``, before the component exists,
so a rejected construction leaves no half-built elaboratable behind (and Amaranth has nothing to
warn about); the component's ``params`` attribute is the checked value.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import zip_longest
from typing import Any, ClassVar

from amaranth.lib import wiring
from amaranth.utils import ceil_log2

from golden.spec import (DEFAULT_ACCUMULATE, DEFAULT_MAX_BLOCKS, FP16_BITS,
                         FP32_BITS, LINEAR_LANES, MAX_EXP_SUM, MAX_PRODUCT, block_bytes,
                         check_accumulate, check_block_size)
from golden.spec import PRODUCT_EXP_OFFSET as FRAC_BITS   # SPEC 6: A is in units of 2^-36

from .selection import STAGE1_RULES, Selection, check_stage1

__all__ = ["Params", "ParametrisedComponent", "DecoderParams", "QuantizerParams", "DotParams",
           "LinearParams", "PRODUCTS", "LINEAR_PRODUCTS", "SHARED_PRODUCTS", "DECODES", "block_sum_bits",
           "accumulator_bits", "check_count", "check_max_blocks", "check_lanes"]

# How a dot unit builds its 4x4 magnitude products: from LUTs (the default: the products are tiny
# and DSP blocks are few; bd_hw.dot.MultiplierArray) or one DSP block each.
PRODUCTS = ("lut", "dsp")
# A dot unit's products may also come in through ports (SHARED_PRODUCTS): the engine's
# "dsp_packed" builds them for two lanes at once, the lanes sharing the activation element, one
# DSP block per two rows' products (bd_hw.dot.PackedMultiplierArray).
SHARED_PRODUCTS = "shared"
LINEAR_PRODUCTS = PRODUCTS + ("dsp_packed",)
# How the decoder is built (bd_hw.decoder.BDDecoder): "mux", the default, the dialect's formatbook
# row chosen once and an 8:1 selection per lane; "anf", the dialect's index 5-7 magnitudes as three
# XOR coefficients once and a 2:1 choice per lane. The same function; which is smaller depends on
# what surrounds it (reports/synth/report.md, "The decoder inside bd_dot").
DECODES = ("mux", "anf")


def _check_decode(decode) -> str:
    if decode not in DECODES:
        raise ValueError(f"decode must be one of {DECODES}, not {decode!r}")
    return decode


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_count(value, name: str, minimum: int = 1) -> int:
    """An integer parameter of at least ``minimum`` (``ValueError`` naming it otherwise)."""
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return value


def check_max_blocks(max_blocks) -> int:
    """SPEC 6: ``max_blocks``, the most blocks summed into one result, an integer >= 1."""
    return check_count(max_blocks, "max_blocks")


def check_lanes(lanes, name: str = "N") -> int:
    """SPEC 11 [revised]: the number of output lanes of the engine."""
    if not _is_int(lanes) or lanes not in LINEAR_LANES:
        raise ValueError(f"{name} must be one of {LINEAR_LANES}, not {lanes!r}")
    return lanes


def _check_pipeline(pipeline, cut_points) -> int:
    if not _is_int(pipeline) or not 0 <= pipeline <= len(cut_points):
        raise ValueError(f"pipeline must be an integer from 0 to {len(cut_points)}, not {pipeline!r}")
    return pipeline


def _check_accumulate(accumulate) -> str:
    """SPEC 6.1: one of ``ACCUMULATE_MODES`` (every one has hardware)."""
    return check_accumulate(accumulate)


def _check_products(products, choices=PRODUCTS + (SHARED_PRODUCTS,)) -> str:
    if products not in choices:
        raise ValueError(f"products must be one of {choices}, not {products!r}")
    return products


def block_sum_bits(B: int) -> int:
    """Signed width of an exact block sum: ``ceil(log2(225 B)) + 1`` (14 at B = 32)."""
    return ceil_log2(MAX_PRODUCT * B) + 1


def accumulator_bits(B: int, max_blocks: int) -> int:
    """SPEC 6: ``ceil(log2(225 B)) + 1 + 60 + ceil(log2(max_blocks))`` (82 at B = 32, 256)."""
    return block_sum_bits(B) + MAX_EXP_SUM + ceil_log2(max_blocks)


class Params:
    """Base of the parameter classes (frozen dataclasses)."""

    #: Clock edges from a beat to its result; None for a combinational unit.
    latency: ClassVar[int | None] = None

    @classmethod
    def of(cls, *args, **kwargs):
        """``cls(*args, **kwargs)``, or the one argument itself when it already is a ``cls``."""
        if len(args) == 1 and not kwargs and isinstance(args[0], cls):
            return args[0]
        return cls(*args, **kwargs)


class ParametrisedComponent(wiring.Component):
    """A component built from one parameter value of class :attr:`Params`.

    The constructor takes the arguments of :attr:`Params` (or one instance of it); they are
    checked in ``__new__``, before the component exists, and kept as :attr:`params`. A unit's
    ``__init__`` takes them through :meth:`settle`.
    """

    Params: ClassVar[type[Params]]
    params: Params

    def __new__(cls, *args, **kwargs):
        params = cls.Params.of(*args, **kwargs)       # ValueError here: no component was made
        self = super().__new__(cls, src_loc_at=1)
        self.params = params
        self._arguments = (args, kwargs)
        return self

    def settle(self, *args, **kwargs) -> Params:
        """The parameters of this construction, given the arguments ``__init__`` received: those
        checked in ``__new__``, unless a subclass hands its base other arguments (the bench's MSE
        quantizers add a ``selection``), which are then checked here."""
        if (args, kwargs) != self._arguments:
            self.params = self.Params.of(*args, **kwargs)
        return self.params

    @property
    def latency(self):
        return self.params.latency


@dataclass(frozen=True)
class DecoderParams(Params):
    """``bd_decoder``: block size ``B`` (SPEC 3) and how it is built, ``decode`` (:data:`DECODES`).
    Combinational."""

    B: int = 32
    decode: str = "mux"

    def __post_init__(self):
        check_block_size(self.B, "B")
        _check_decode(self.decode)


@dataclass(frozen=True)
class QuantizerParams(Params):
    """``bd_quantizer``: block size ``B``, the SPEC 4.2 rule ``stage1`` (``"round"`` or
    ``"trunc"``), or a whole dialect ``selection`` instead (a ``bd_hw.quantizer.Selection``, given
    without ``stage1``), and ``pipeline`` extra register stages at the first cut points of
    :data:`CUT_POINTS` (see :class:`bd_hw.quantizer.BDQuantizer`)."""

    B: int = 32
    stage1: str = "round"
    selection: Any = None
    pipeline: int = 0

    #: ``"ready"`` adds no stage: the stage after the first half of the selection (``s1``, the
    #: first without the FP16 elements) becomes a skid buffer, so the enables of the stages before
    #: it follow a register instead of the ready chain through the stages after it. ``"exp16"``
    #: then cuts the shared exponent's maximum tree after its first level.
    CUT_POINTS: ClassVar[tuple[str, ...]] = ("select", "shift", "qmax", "exp", "exp8",
                                             "count", "qmax8", "pair_rule", "ready", "exp16")
    #: Every register stage in frame order, named as the unit registers it: the four base stages
    #: ``s0``-``s3`` and the cut points that add a stage; ``SKID_STAGE`` is the one ``"ready"``
    #: makes a skid buffer.
    FRAME: ClassVar[tuple[str, ...]] = ("exp16", "exp8", "exp", "s0", "shift", "qmax8", "qmax",
                                        "pair_rule", "s1", "count", "select", "s2", "s3")
    SKID_STAGE: ClassVar[str] = "s1"
    BASE_LATENCY: ClassVar[int] = 4          # register stages without optional cuts

    def __post_init__(self):
        check_block_size(self.B, "B")
        check_stage1(self.stage1)
        if self.selection is not None and (self.stage1 != "round"
                                           or not isinstance(self.selection, Selection)):
            raise ValueError("selection must be a Selection, given without stage1")
        _check_pipeline(self.pipeline, self.CUT_POINTS)

    @property
    def method(self) -> str:
        """The ``golden.bd.quantize`` method the unit reproduces (SPEC 10)."""
        return self.selection.method if self.selection is not None else STAGE1_RULES[self.stage1]

    @property
    def cuts(self) -> frozenset:
        return frozenset(self.CUT_POINTS[:self.pipeline])

    @property
    def stages(self) -> tuple[str, ...]:
        """The register stages, in pipeline order (named as :class:`bd_hw.quantizer.BDQuantizer`
        registers them)."""
        return tuple(s for s in self.FRAME if s not in self.CUT_POINTS or s in self.cuts)

    @property
    def skid(self) -> bool:
        """The ``"ready"`` cut: stage ``s1`` is a skid buffer."""
        return "ready" in self.cuts

    @property
    def skid_stage(self) -> int | None:
        """The index of the skid-buffer stage (None without the ``"ready"`` cut)."""
        return self.stages.index(self.SKID_STAGE) if self.skid else None

    @property
    def capacity(self) -> int:
        """Most beats held at once: one per register stage, and one more in the skid buffer's
        spare bank."""
        return self.latency + self.skid

    @property
    def latency(self) -> int:
        """``4 + pipeline``, less one from ``pipeline = 9`` on (the ``"ready"`` cut adds no
        stage): 12 at 8 and 9, 13 at 10."""
        return self.BASE_LATENCY + len(self.cuts - {"ready"})


@dataclass(frozen=True)
class DotParams(Params):
    """``bd_dot``: block size ``B``, ``max_blocks`` beats per result, ``pipeline`` extra register
    stages at the first cut points of :attr:`cut_points` (see :class:`bd_hw.dot.BDDot`), the
    SPEC 6.1 ``accumulate`` mode, and how the 4x4 ``products`` are built (:data:`PRODUCTS`, or
    :data:`SHARED_PRODUCTS`: they come in through the ``mul_*`` ports, built outside). The
    rounded modes ("fp32", "fp16") have no normaliser, so their cut points are
    :data:`FLOAT_CUT_POINTS`, and no wide accumulator, so ``max_blocks`` does not limit them.
    ``stall_free``: the unit's output is never held (``bd_linear``'s dot units, whose results
    have reserved room): ``o.ready`` is ignored and every internal ready is tied high, so the
    stages' enables are their input's valid bit and no valid/ready chain is built (the parts'
    readies are otherwise gated by the reset, which keeps a chain through every stage).
    ``decode``: how its two decoders are built (:data:`DECODES`)."""

    B: int = 32
    max_blocks: int = DEFAULT_MAX_BLOCKS
    pipeline: int = 0
    accumulate: str = DEFAULT_ACCUMULATE
    products: str = "lut"
    stall_free: bool = False
    decode: str = "mux"

    #: ``"ready"`` adds no stage: the last front stage (the block sum) becomes a skid buffer, so
    #: the front's enables follow a register instead of the ready chain through the accumulator
    #: and the normaliser (bd_hw.pipeline).
    #: ``"negatives"`` adds no stage either: the product stage registers per-run counts of the
    #: negative products, which the block-sum stage adds. It comes before ``"ready"``: in
    #: ``bd_linear``'s stall-free dot units, which have no ready chain to cut, the count is the
    #: longest path after the first four cuts (a standalone unit's is the ready chain; bd_dot_fast
    #: takes both).
    CUT_POINTS: ClassVar[tuple[str, ...]] = ("abs", "lzc", "tree", "decode", "negatives", "ready")
    #: SPEC 6.1 "fp32" / "fp16": the float adder is a loop that no register can cut at one beat per
    #: clock, so only the front's cut points remain.
    FLOAT_CUT_POINTS: ClassVar[tuple[str, ...]] = ("tree", "decode")
    NORMALISER_CUT_POINTS: ClassVar[tuple[str, ...]] = ("abs", "lzc")
    TREE_GROUP: ClassVar[int] = 8             # products summed before the "tree" cut
    ACCUMULATOR_LATENCY: ClassVar[int] = 2
    #: "fp32" / "fp16": the block value's conversion in two stages, then the adder loop
    FLOAT_ACCUMULATOR_LATENCY: ClassVar[int] = 3
    NORMALISER_LATENCY: ClassVar[int] = 2     # without cuts
    WIDEN_LATENCY: ClassVar[int] = 1          # "fp16": the FP16 total widened to FP32, registered

    def __post_init__(self):
        check_block_size(self.B, "B")
        check_max_blocks(self.max_blocks)
        _check_accumulate(self.accumulate)
        _check_products(self.products)
        _check_decode(self.decode)
        _check_pipeline(self.pipeline, self.cut_points_of(self.accumulate))
        if not isinstance(self.stall_free, bool):
            raise ValueError(f"stall_free must be True or False, not {self.stall_free!r}")
        if self.accumulate == "exact" and self.acc_bits - 1 - FRAC_BITS + 127 > 254:
            raise ValueError(f"max_blocks={self.max_blocks} is too large: sums could overflow FP32")

    @classmethod
    def cut_points_of(cls, accumulate: str) -> tuple[str, ...]:
        """The cut points of ``pipeline`` in accumulation mode ``accumulate``."""
        return cls.CUT_POINTS if accumulate == "exact" else cls.FLOAT_CUT_POINTS

    @property
    def cut_points(self) -> tuple[str, ...]:
        return self.cut_points_of(self.accumulate)

    @property
    def cuts(self) -> frozenset:
        return frozenset(self.cut_points[:self.pipeline])

    @property
    def norm_cuts(self) -> frozenset:
        return self.cuts & set(self.NORMALISER_CUT_POINTS)

    @property
    def front_stages(self) -> int:
        """Register stages before the accumulator: products, block sum, and the front cuts."""
        return 2 + len(self.cuts & {"decode", "tree"})

    @property
    def acc_bits(self) -> int:
        return accumulator_bits(self.B, self.max_blocks)

    @property
    def skid(self) -> bool:
        """The ``"ready"`` cut: the front's last stage is a skid buffer."""
        return "ready" in self.cuts

    @property
    def capacity(self) -> int:
        """Most results owed at once (accepted ``last`` beats not yet delivered): one per
        register stage, and one more in the skid buffer's spare bank."""
        return self.latency + self.skid

    @property
    def latency(self) -> int:
        """Cycles from accepting a ``last`` beat to presenting its result: ``6 + pipeline`` exact
        (``10`` at ``pipeline`` 5 and 6: the ``"ready"`` and ``"negatives"`` cuts add no stage), ``5 + pipeline`` "fp32",
        ``6 + pipeline`` "fp16"."""
        if self.accumulate == "exact":
            back = self.ACCUMULATOR_LATENCY + self.NORMALISER_LATENCY + len(self.norm_cuts)
        else:
            back = self.FLOAT_ACCUMULATOR_LATENCY + (self.WIDEN_LATENCY if self.accumulate == "fp16" else 0)
        return self.front_stages + back


@dataclass(frozen=True)
class LinearParams(Params):
    """``bd_linear``: block size ``B``, ``N`` lanes, vectors of up to ``max_blocks`` blocks,
    ``pipeline`` (the first ``pipeline`` cut points of the quantizer and of every dot unit, paired
    in :data:`CUT_POINTS`), the dot units' ``accumulate`` mode (SPEC 11) and how the products are
    built (:data:`LINEAR_PRODUCTS`: each dot unit's own, ``"lut"`` or ``"dsp"``, or
    ``"dsp_packed"``, one DSP block for two lanes' products of an element), and how many copies of
    the activation buffer the lanes read (``activation_copies``, a power of two up to ``N``: a
    group of ``N / activation_copies`` lanes per copy)."""

    B: int = 32
    N: int = 4
    max_blocks: int = DEFAULT_MAX_BLOCKS
    pipeline: int = 0
    accumulate: str = DEFAULT_ACCUMULATE
    products: str = "lut"
    activation_copies: int = 1

    #: The dot units' cut points that the engine takes: all but ``"ready"``. The engine never holds
    #: its dot units (every result has a reserved slot in the collector, see :attr:`capacity`;
    #: they are built ``stall_free``), so a skid buffer there would be dead logic.
    DOT_CUT_POINTS: ClassVar[tuple[str, ...]] = tuple(c for c in DotParams.CUT_POINTS if c != "ready")
    #: Step ``p`` of ``pipeline``: (quantizer cut point, dot-unit cut point), None where a part has
    #: no more. The engine takes every cut point of both parts (ENGINE_DEPTH steps, the longer
    #: part's count): all the quantizer's (``exp8`` to ``pair_rule`` and ``exp16`` cut its exponent
    #: and q maximum trees; its ``ready`` skid buffer, which ``exp16`` follows, never fills there,
    #: as the engine's quantizer output is always ready, and folds away) and the dot units'
    #: :data:`DOT_CUT_POINTS`.
    ENGINE_DEPTH: ClassVar[int] = max(len(QuantizerParams.CUT_POINTS), len(DOT_CUT_POINTS))
    CUT_POINTS: ClassVar[tuple] = tuple(zip_longest(QuantizerParams.CUT_POINTS, DOT_CUT_POINTS))
    READ_STAGES: ClassVar[int] = 1           # the beat and its activation block (read ahead), registered
    COLLECTOR_LATENCY: ClassVar[int] = 1     # the collector's output register

    def __post_init__(self):
        check_block_size(self.B, "B")
        check_lanes(self.N)
        check_max_blocks(self.max_blocks)
        _check_pipeline(self.pipeline, self.CUT_POINTS)
        _check_accumulate(self.accumulate)
        _check_products(self.products, LINEAR_PRODUCTS)
        copies = [c for c in LINEAR_LANES if c <= self.N]
        if not _is_int(self.activation_copies) or self.activation_copies not in copies:
            raise ValueError(f"activation_copies must be one of {copies} (at most N = {self.N}), "
                             f"not {self.activation_copies!r}")
        self.dot            # the dot units' own checks (the FP32 range of max_blocks)

    @classmethod
    def fastest(cls, B: int = 32, N: int = 4, **kwargs) -> "LinearParams":
        """The engine's fastest build (the ``_fast`` units): every cut point of both parts
        (:data:`ENGINE_DEPTH`) and one copy of the activation buffer per lane, so that no register
        feeds the dot units of several lanes (``reports/synth/timing.md``)."""
        return cls(B, N, pipeline=cls.ENGINE_DEPTH, activation_copies=N, **kwargs)

    @property
    def quantizer(self) -> QuantizerParams:
        """The quantizer's parameters: this block size and pipeline setting."""
        return QuantizerParams(self.B, pipeline=min(self.pipeline, len(QuantizerParams.CUT_POINTS)))

    @property
    def dot(self) -> DotParams:
        """Every dot unit's parameters."""
        cut_points = [c for c in DotParams.cut_points_of(self.accumulate) if c in self.DOT_CUT_POINTS]
        products = SHARED_PRODUCTS if self.products == "dsp_packed" else self.products
        return DotParams(self.B, self.max_blocks, min(self.pipeline, len(cut_points)),
                         self.accumulate, products, stall_free=True)

    @property
    def latency(self) -> int:
        """Edges from accepting a row group's ``tlast`` weight beat to transferring its result
        (``8 + min(pipeline, 4)`` exact, ``7 + min(pipeline, 2)`` "fp32", ``8 + min(pipeline, 2)``
        "fp16"): the read stage, the dot units, the collector's output register."""
        return self.READ_STAGES + self.dot.latency + self.COLLECTOR_LATENCY

    @property
    def vector_latency(self) -> int:
        """Edges from accepting a vector's final activation beat to the first weight beat it can
        take (``5 + pipeline``, ``4 + pipeline`` from 9, 14 at the deepest setting): the quantizer's
        latency, then one edge to write the buffer."""
        return self.quantizer.latency + 1

    @property
    def capacity(self) -> int:
        """Row groups the engine may owe at once (``tlast`` beats accepted, results not yet
        transferred): :attr:`latency` + 1 (13 at the deepest setting), the slots of the collector.
        The engine takes a weight beat only while fewer are owed, so no result ever waits for
        room. At full rate with one-block groups and ``m_axis_y_tready`` high, :attr:`latency`
        groups are owed at once: the one slot more keeps ``s_axis_w_tready`` high, because a
        result leaving at an edge frees its slot only for the next."""
        return self.latency + 1

    @property
    def x_bits(self) -> int:
        return FP16_BITS * self.B

    @property
    def w_bits(self) -> int:
        return 8 * block_bytes(self.B) * self.N

    @property
    def y_bits(self) -> int:
        return FP32_BITS * self.N
