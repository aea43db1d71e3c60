"""Noise bands of the perplexities, and which differences are ties.

Two measures, both from the report's own runs:
- perturbation band (the noise floor): a scheme run again with every quantized linear input scaled by
  1 + 2^-20 and by 1 - 2^-20 before its quantizer (golden.report.perplexity.noise_scheme). The change
  means nothing, yet it flips FP16 roundings and codes; the band is [min, max] of the three
  perplexities. Measured on a few schemes (each costs two runs); every other run is given the largest
  relative half-width measured (its scope's, else any), marked "floor".
- window spread: the perplexity's standard error over the evaluation windows, exp(L +- s / sqrt(n))
  with L the mean NLL per token and s the standard deviation of the windows' own means. It says how far
  the figure would move on other text; every format sees the same windows, so it does not decide ties.
Two perplexities are a tie when their log ratio is within the sum of their perturbation half-widths.
"""
from __future__ import annotations

import math

from golden.report.perplexity import NOISE_SUFFIXES


def window_band(run: dict) -> list[float] | None:
    """[low, high] of exp(L -+ standard error over windows), None with fewer than two windows."""
    nll, tokens = run.get("window_nll") or [], run.get("window_tokens") or []
    if len(nll) < 2:
        return None
    means = [n / t for n, t in zip(nll, tokens)]
    centre = sum(nll) / sum(tokens)
    spread = math.sqrt(sum((m - sum(means) / len(means)) ** 2 for m in means) / (len(means) - 1))
    error = spread / math.sqrt(len(means))
    return [math.exp(centre - error), math.exp(centre + error)]


def perturbation_band(central: float, perturbed: list[float]) -> tuple[list[float], float]:
    """[min, max] over the central and perturbed perplexities, and the largest |log ratio| to the
    central one (the relative half-width)."""
    values = [central, *perturbed]
    return [min(values), max(values)], max(abs(math.log(v / central)) for v in values)


def section(runs: dict[str, dict], noise_suffixes=tuple(NOISE_SUFFIXES.values())) -> dict:
    """Per central run (every run that is not a noise run): its perturbation band (measured or the
    floor), its window band; and the floors used."""
    central = {k: r for k, r in runs.items() if not any(k.endswith(s) for s in noise_suffixes)}
    measured = {}
    for key, run in central.items():
        perturbed = [runs[key + s]["perplexity"] for s in noise_suffixes if key + s in runs]
        if perturbed:
            band, half = perturbation_band(run["perplexity"], perturbed)
            measured[key] = {"band": band, "rel_half_width": half, "perturbed": perturbed, "source": "measured"}
    floors = {}
    for scope in ("linear", "full"):
        own = [m["rel_half_width"] for k, m in measured.items() if central[k]["scope"] == scope]
        anyone = [m["rel_half_width"] for m in measured.values()]
        if own or anyone:
            floors[scope] = {"rel_half_width": max(own or anyone),
                             "from": "measured in this scope" if own else "measured in the other scope"}
    bands = {}
    for key, run in central.items():
        if run["scope"] == "baseline":
            continue
        entry = measured.get(key)
        if entry is None and run["scope"] in floors:
            half = floors[run["scope"]]["rel_half_width"]
            entry = {"band": [run["perplexity"] * math.exp(-half), run["perplexity"] * math.exp(half)],
                     "rel_half_width": half, "source": "floor"}
        bands[key] = dict(entry or {"band": None, "rel_half_width": None, "source": None},
                          window_band=window_band(run))
    return {"exponent_runs": sorted(measured), "floors": floors, "bands": bands}


def half_width(noise: dict, key: str) -> float:
    """The relative perturbation half-width of run `key` (0 when none is known)."""
    entry = noise.get("bands", {}).get(key) or {}
    return entry.get("rel_half_width") or 0.0


def tie(noise: dict, runs: dict, a: str, b: str) -> bool:
    """Whether runs a and b differ by no more than their noise bands."""
    return abs(math.log(runs[a]["perplexity"] / runs[b]["perplexity"])) <= half_width(noise, a) + half_width(noise, b)


def ties(noise: dict, runs: dict, keys: list[str]) -> list[tuple[str, str]]:
    """Every pair of `keys` (present in runs) that ties."""
    present = [k for k in keys if k in runs]
    return [(a, b) for i, a in enumerate(present) for b in present[i + 1:] if tie(noise, runs, a, b)]
