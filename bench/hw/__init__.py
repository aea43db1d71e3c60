"""Hardware that exists only for comparisons in the benchmarks and synthesis report: baseline block
MACs (:mod:`bench.hw.baseline_macs`), the exhaustive MSE selection and quantizer
(:mod:`bench.hw.mse_selector`) and the stand-alone dialect selectors (:mod:`bench.hw.selectors`),
registered in :mod:`bench.hw.units` the way :mod:`bd_hw.units` registers the product's units."""
