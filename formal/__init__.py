"""Formal proofs of the BlockDialect hardware units (``python -m formal``, ``make formal``).

What is proved, for every unit of the registry :data:`bd_hw.units.UNITS`:

- **Stream protocol** (SPEC 9), one set of properties (:data:`formal.harness.PROTOCOL_PROPERTIES`)
  applied to every clocked unit and proved unbounded by k-induction, assuming only that the
  upstream side keeps a beat valid and stable until it is taken: an output beat stays valid with
  a stable payload until taken; the count of accepted minus delivered beats stays within the
  pipeline's capacity, the unit never offers a beat it does not owe, and an owed beat is offered
  within ``capacity`` cycles (it drains); reset clears every pending beat and takes nothing.
- **No combinational path** from ``i.valid``/``i.payload`` to ``i.ready`` nor from ``o.ready`` to
  ``o.valid``: a structural check of the flattened netlist (a path that is absent cannot carry a
  dependence), which is the exact form of the SPEC 9 promise.
- **End-to-end equivalence for all time** (``end_to_end``): every result a quantizer emits equals
  the plain, unpipelined model of SPEC 3-4 (:mod:`formal.models`, with the unit's stage-1 rule)
  applied to the beat that entered ``latency`` transfers earlier, for every input sequence,
  back-pressure pattern and reset (:class:`formal.harness.ShadowPipelineHarness`: a shadow
  pipeline carries each beat's model fields beside the unit; lemmas tie every register to them;
  one k-induction job per stage, each assuming the other stages' lemmas one cycle back).
- **Equivalence of the parts**: each quantizer stage, the dot unit's products and adder tree
  against the plain models (combinational, complete), the decoder against the formatbook; the
  dot unit's block sum and FP32 result for every value of the first beat after reset, every
  other input free (a bounded run whose depth is the unit's latency).
- **Cover traces** showing the interesting cases are reachable, so that no proof holds vacuously.
- **Planted bugs** (:mod:`formal.bugs`): generated copies of the generators with one mistake each,
  on which the proofs fail.

Why Amaranth ``Assert``/``Assume``/``Cover`` in a harness rather than SystemVerilog assertions in a
wrapper of ``rtl/*.v``: Yosys without the commercial Verific front end reads only immediate
assertions and a small subset of SVA, so a property like "stable until taken" would have to be
spelled out with hand-written history registers either way; in Amaranth those registers are a few
lines of the same language as the design, the harness builds the unit from the registry with the
same parameters as ``make verilog`` (so proofs follow generator changes without a second copy of
port widths), the plain models read the formatbook from :mod:`golden.formatbook` instead of
retyping it, and the planted bugs are generator variants, which only a harness around the
generator can elaborate. The harness drives the unit only through its public stream signature;
the one exception is the induction lemma tying the owed-beat count to the unit's valid registers
(found by name, failing loudly if renamed), without which no k-induction over a pipeline closes.
The emitted RTLIL goes to SymbiYosys (``yowasp-sby``, ``smtbmc`` with ``yices``).
"""
