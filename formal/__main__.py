"""``python -m formal``: run the formal proofs and write ``summary.json`` and ``summary.md``.

Examples::

    python -m formal --out reports/formal              # every proof (make formal)
    python -m formal --quick --out build/formal-quick  # the fast set
    python -m formal --list
    python -m formal --only bd_dot_b16 --out build/formal-dot
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

from tqdm import tqdm

from bd_hw.units import parse_blocks, parse_units

from .runner import run_job
from .bugs import BUGS
from .units import PROVED_BLOCK_SIZES, bug_jobs, jobs

STATUS_TEXT = {
    "proved": "proved",
    "bounded": "bounded to depth {depth}",
    "failed": "FAILED (step {depth})",
    "reached": "reached (step {depth})",
    "unreached": "UNREACHED (depth {depth})",
    "undetermined": "undetermined",
    "error": "ERROR",
    "caught": "caught (the proof fails)",
    "missed": "MISSED (the proof still passes)",
}


def status_text(row: dict) -> str:
    return STATUS_TEXT.get(row["status"], row["status"]).format(depth=row["depth"])


#: How the proofs compose into "the unit equals the spec", for summary.md.
COMPOSITION = (
    "**How the proofs compose.** `end_to_end` is the claim a user needs: every result a quantizer "
    "emits equals the plain model of SPEC 3-4 (`formal/models.py`, written apart from `bd_hw`) "
    "applied to the beat that entered `latency` transfers earlier, for every input sequence, "
    "back-pressure pattern and reset, for all time. Beside the unit the harness runs a shadow "
    "pipeline of its own (`ShadowPipelineHarness`): an in-order queue of `latency` stages under the "
    "textbook valid/ready rule, fed by the unit's input transfers, carrying each beat's model "
    "fields, each evaluated once where the unit first holds it, so its last stage holds the "
    "model's answer for the beat now at the output. With the quantizer's `ready` cut "
    "(`bd_quantizer_fast`) one shadow stage is a skid buffer written from its rule: the stage "
    "before it sees its spare bank being empty as its ready, and a beat arriving while it is held "
    "waits in a shadow spare beat. Lemmas tie every register of the unit (the spare bank's "
    "included) to the model field of the beat beside it and every valid bit to the shadow's. "
    "The proof is split "
    "into one k-induction job per stage (depth 1): job n proves stage n's lemmas (the output "
    "checks belong to the last stage) assuming the others held one cycle earlier. That is "
    "assume-guarantee over time, not a circular argument: if every lemma held at every earlier "
    "cycle, each job shows its own hold now, so by induction on time all hold always (and from "
    "reset, the base cases). Each job's step is one stage's logic against the model's fields "
    "computed from the same values, the size of the combinational `stage` proofs. `protocol` "
    "adds what the equivalence does not say: no beat is taken in reset, every owed result is "
    "offered within `capacity` cycles (`latency`, one more with a skid buffer) and held stable "
    "until taken. The range counter inside is "
    "assumed to count as the `stage_ranges` job proves it does for every input (the same "
    "generator at the same B): that composition closes stage 2 at B = 32, where the counter "
    "against the count-every-dialect model in the induction step did not. The planted bugs show "
    "the jobs are not vacuous: each fails on the stage it corrupts.\n\n"
    "**bd_dot** is proved the same way (`DotShadowHarness`), with a shadow of the accumulator "
    "between two shadow pipelines: the front stages (decode, multiply, block sum, with the cut "
    "points found from the unit's own stage registers), a term stage that moves on at once unless "
    "it holds a `last` beat and the total stage is full, a running sum that restarts after each "
    "`last`, the total stage, then the normaliser's stages, every field recomputed there from the "
    "carried total, the result by the plain round-to-nearest-even model. One job per stage again: "
    "the front stages, the term, the running sum and total, each normaliser stage; the adder tree "
    "checked is the one `bd_dot` builds (its `tree` cut included; the model adds in halves, "
    "any order giving the same integer). Two facts come from other proofs: the decoders inside "
    "are assumed to decode as SPEC 6 says, which `bd_decoder`'s equivalence proves for every "
    "input of the same generator; and the shadow adds terms in "
    "accumulator-width two's complement, which the `width` proof (k-induction at max_blocks 256) "
    "shows never wraps for groups of at most max_blocks beats with exponents of at most 30. "
    "Together: every FP32 result equals SPEC 6's exact sum of its group, rounded once.")


def _story(rows: list[dict]) -> list[str]:
    """Per unit and block size: what is proved for all time, what is only bounded and how far."""
    from bd_hw.units import UNITS
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["kind"] != "planted bug":
            groups.setdefault((r["unit"], r["B"]), []).append(r)
    lines = ["| unit | B | latency | for all time | bounded (depth reached) | failed / error |",
             "|---|---|---|---|---|---|"]
    for (unit, B), rs in groups.items():
        lat = UNITS[unit].latency(B) if unit in UNITS and B else None
        kinds: dict[str, int] = {}
        for r in rs:
            if r["status"] == "proved":
                kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
        proved = ", ".join(f"{k} {n}" for k, n in kinds.items()) or "-"
        bounded: dict[tuple, int] = {}
        for r in rs:
            if r["status"] == "bounded":
                bounded[(r["kind"], r["depth"])] = bounded.get((r["kind"], r["depth"]), 0) + 1
        btext = ", ".join(f"{k} {n} (depth {d})" for (k, d), n in bounded.items()) or "none"
        bad = sum(r["status"] in ("failed", "error", "unreached") for r in rs)
        lines.append(f"| {unit} | {B or ''} | {lat if lat is not None else '-'} | {proved} | "
                     f"{btext} | {bad or ''} |")
    return lines


#: The float parts of SPEC 6.1's rounded modes that have stage proofs (job name suffixes).
FLOAT_PARTS = {
    "conversion": "the block value's conversion (FP32: exact; FP16: `fl16(V)`, nearest even, "
                  "subnormals kept, overflow to Inf; every block sum and every 6-bit exponent sum)",
    "loop_adder": "the loop's adder step (`bd_hw.float_add._add` as the loop runs it, from the "
                  "exponent differences the loop registers, against IEEE addition written as an "
                  "exact sum rounded once; with the next step's differences and the result in the "
                  "unpacked form the next step reads, so the running sum stays an operand of the "
                  "proof; one job per range of exponent distances)",
    "widen": "the FP16 total widened to FP32 (exact, every NaN 0x7FC00000)",
}


def _float_story(rows: list[dict]) -> str:
    """What is proved of the rounded accumulation modes (SPEC 6.1), from the rows and the jobs."""
    from .units import FLOAT_NOT_PROVED
    status: dict[tuple, list] = {}
    for job in jobs():
        if job.kind == "stage" and "_stage_fp" in job.name:
            unit = job.unit
            part = job.name.split("_stage_fp", 1)[1].split("_", 1)[1]
            part = next(p for p in FLOAT_PARTS if part.startswith(p))
            status.setdefault((unit, part), []).append(job.name)
    by_job: dict[str, set] = {}
    for r in rows:
        by_job.setdefault(r["job"], set()).add(r["status"])
    parts = []
    for (unit, part), names in status.items():
        proved = [n for n in names if by_job.get(n) == {"proved"}]
        Bs = sorted({int(n.split("_b", 1)[1].split("_", 1)[0]) for n in proved})
        text = (f"`{unit}` {part.replace('_', ' ')}: {len(proved)} of {len(names)} job"
                f"{'s' if len(names) > 1 else ''} proved" + (f" (B = {', '.join(map(str, Bs))})" if proved else ""))
        other = sorted({st for n in names for st in by_job.get(n, {"not run"})} - {"proved"})
        parts.append(text + (f", the others {' / '.join(other)}" if other else ""))
    return (
        "**The rounded modes** (`bd_dot_fp32`, `bd_dot_fp16`, SPEC 6.1, and their `_fast` settings, "
        "which build the same float parts behind more front cuts). For all time: the stream "
        "protocol (k-induction) and the structural rules. Their arithmetic is proved part by part, "
        "each for every input (combinational `stage` proofs against plain models of SPEC 6.1 in "
        "`formal/models.py`, written from the text: a result's last place from its leading one, "
        "the remainder against half of it, no hardware structure): "
        + "; ".join(f"{part}: {FLOAT_PARTS[part]}" for part in FLOAT_PARTS) + ". Rows: "
        + "; ".join(parts) + ". The parts do not depend on B beyond the block sum's width, so only "
        "the conversion runs at every B. Planted bugs, each failing the stage proof it names: "
        + "; ".join(f"`{b.name}` ({b.description}: `{b.stage}`)" for b in BUGS.values()
                    if b.caught_by == "stage" and b.unit.startswith("bd_dot"))
        + ". Not proved: " + FLOAT_NOT_PROVED)


def write_summary(rows: list[dict], out: Path, total: float, args_text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(
        {"command": args_text, "total_seconds": round(total, 1), "properties": rows},
        indent=1) + "\n")
    runs = sorted({r.get("run", "earlier") for r in rows})
    lines = [
        "# Formal proofs",
        "",
        f"`{args_text}`: {len(rows)} properties; solver time of the rows "
        f"{sum(_job_seconds(rows).values()) / 60:.1f} min (wall clock per job, 2 shared cores; "
        "SymbiYosys `smtbmc yices`). The `run` column says which run produced a row "
        f"({', '.join(runs)}); `python -m formal --update` replaces only the rows of the jobs it runs.",
        "",
        "## What is proved",
        "",
        *_story(rows),
        "",
        COMPOSITION,
        "",
        _float_story(rows),
        "",
        _not_run(rows),
        "",
        "## Every property",
        "",
        "Kinds: `planted bug` = a generated copy of a generator with one mistake, on which the "
        "named proof must fail; `structural` = no combinational path on the flattened netlist; "
        "`protocol` = SPEC 9 (SPEC 11 for bd_linear) stream rules by k-induction, the upstream "
        "assumed to keep the protocol; `cover` = the case is reachable (the proofs are not "
        "vacuous); `width` = the exact accumulator equals the exact sum of a whole group of "
        "max_blocks beats (SPEC 6); `stage` = one pipeline stage's logic against the plain model, "
        "every input (combinational: one solver step is a complete proof); `end_to_end` = the "
        "unit against the plain model for all time (see above); `equivalence` = the whole unit "
        "against the plain model for every value of the first beat after reset, every other "
        "input free (bounded: a pass at depth latency + 1 covers every value of that beat; a "
        "timeout gives the depth fully checked).",
        "",
        "| unit | B | kind | property | status | seconds | detail | run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['unit']} | {r['B'] or ''} | {r['kind']} | {r['property']} | "
                     f"{status_text(r)} | {r['seconds']} | {r['detail']} | {r.get('run', 'earlier')} |")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines += ["", "Totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), ""]
    (out / "summary.md").write_text("\n".join(lines))


def _not_run(rows: list[dict]) -> str:
    """The jobs of `make formal` that have no row here (never run, or stopped before they ended)."""
    have = {r["job"] for r in rows}
    missing = [j.name for j in bug_jobs() + jobs() if j.name not in have]
    return ("Jobs of `make formal` with no row yet: " + (", ".join(f"`{n}`" for n in missing)
                                                          if missing else "none") + ".")


def _job_seconds(rows: list[dict]) -> dict[str, float]:
    """Wall-clock seconds of each job (every row of a job carries the job's time)."""
    return {r["job"]: r["seconds"] for r in rows}


def merge_summaries(out: Path, sources: list[Path]) -> int:
    """Rows of ``sources`` replace the rows of the same jobs in ``out/summary.json``."""
    target = out / "summary.json"
    base = json.loads(target.read_text()) if target.exists() else {"properties": [],
                                                                   "total_seconds": 0}
    rows, total, commands = base["properties"], base["total_seconds"], [base.get("command", "")]
    known = [j.name for j in jobs()] + [j.name for j in bug_jobs()]
    for src in sources:
        try:
            other = json.loads(src.read_text())
        except (OSError, ValueError) as exc:
            print(f"python -m formal: cannot read {src}: {exc}", file=sys.stderr)
            return 2
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(src.stat().st_mtime))
        for r in other["properties"]:
            r.setdefault("run", stamp)
        names = {r["job"] for r in other["properties"]}
        # rows of jobs that are run again, or that no longer exist, are dropped
        rows = [r for r in rows if r["job"] not in names and r["job"] in known] + \
            other["properties"]
        total += other.get("total_seconds", 0)
        commands.append(other.get("command", ""))
    order = {name: n for n, name in enumerate(known)}
    rows.sort(key=lambda r: order.get(r["job"], len(order)))
    write_summary(rows, out, total, " ; ".join(c for c in commands if c))
    print(f"{len(rows)} properties in {out}/summary.md")
    return 0


_SELECTED: list = []
_WORK = Path("build/formal")


def _run_index(n: int):
    job = _SELECTED[n]
    rows = [r.as_dict() for r in run_job(job, _WORK)]
    if job.patch is not None:                # a planted bug: one row, caught or missed
        bug = next(b for b in BUGS.values() if b.plant is job.patch)
        failed = [r["property"] for r in rows if r["status"] == "failed"]
        rows = [dict(rows[0], kind="planted bug", property=bug.name,
                     status="caught" if failed else "missed", depth=None,
                     detail=f"{bug.description}; fails: {', '.join(failed) or 'nothing'}")]
    return job.name, rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m formal", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("reports/formal"),
                    help="directory for summary.json and summary.md (default reports/formal)")
    ap.add_argument("--work", type=Path, default=Path("build/formal"),
                    help="solver work directories (default build/formal)")
    ap.add_argument("--blocks", type=parse_blocks, default=list(PROVED_BLOCK_SIZES),
                    help="block sizes, comma-separated (default 16,32)")
    ap.add_argument("--units", type=parse_units(), default=None,
                    help="units, comma-separated (default: every registered unit)")
    ap.add_argument("--quick", action="store_true", help="only the fast proofs (make test)")
    ap.add_argument("--only", action="append", default=[],
                    help="run jobs (planted bugs included) whose name contains this text "
                         "(repeatable)")
    ap.add_argument("--list", action="store_true", help="list the jobs and exit")
    ap.add_argument("--update", action="store_true",
                    help="keep the rows of OUT/summary.json and replace those of the jobs run")
    ap.add_argument("--resume", action="store_true",
                    help="like --update, but skip the jobs OUT/summary.json already has")
    ap.add_argument("--no-bugs", action="store_true",
                    help="skip the planted-bug runs (formal.bugs) that follow the proofs")
    ap.add_argument("--jobs", type=int, default=1,
                    help="solver runs at once (default 1; each is niced and has a timeout)")
    ap.add_argument("--merge-from", type=Path, action="append", default=[],
                    help="add the rows of another run's summary.json to OUT's (for runs split "
                         "over several invocations) and exit")
    args = ap.parse_args(argv)
    if args.merge_from:
        return merge_summaries(args.out, args.merge_from)

    candidates = jobs(tuple(args.blocks), args.units)
    if not args.no_bugs and not args.quick:
        candidates = bug_jobs() + candidates
    selected = [j for j in candidates
                if (not args.quick or j.quick)
                and (not args.only or any(s in j.name for s in args.only))]
    if args.resume:
        args.update = True
        previous = args.out / "summary.json"
        if previous.exists():
            done = {r["job"] for r in json.loads(previous.read_text())["properties"]
                    if r["status"] != "error"}
            selected = [j for j in selected if j.name not in done]
    if args.list:
        for j in selected:
            print(f"{j.name:45s} {j.kind:12s} {j.mode:10s} depth {j.depth:3d}  "
                  f"timeout {j.timeout:5.0f} s{'  quick' if j.quick else ''}")
        return 0
    if not selected:
        print("python -m formal: no job matches the selection", file=sys.stderr)
        return 2
    args_text = "python -m formal " + " ".join(argv if argv is not None else sys.argv[1:])
    rows: list[dict] = []
    t0 = time.monotonic()
    kept: list[dict] = []
    previous = args.out / "summary.json"
    if args.update and previous.exists():
        names = {j.name for j in selected}
        # every job that exists, whatever --units/--blocks selected, so a partial rerun keeps
        # the other units' rows
        current = {j.name for j in jobs()} | {j.name for j in bug_jobs()}
        old = json.loads(previous.read_text())
        # rows of jobs that are run again, or that no longer exist, are dropped
        kept = [r for r in old["properties"] if r["job"] not in names and r["job"] in current]
        t0 -= old.get("total_seconds", 0)
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    stamp = time.strftime("%Y-%m-%d %H:%M")
    global _SELECTED, _WORK
    _SELECTED, _WORK = selected, args.work
    order = {job.name: n for n, job in enumerate(selected)}
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool, \
            tqdm(total=len(selected), unit="job") as bar:
        for name, done in pool.imap_unordered(_run_index, range(len(selected))):
            for r in done:
                r["run"] = stamp
            bar.set_postfix_str(name)
            bar.update()
            rows += done
            rows.sort(key=lambda r: order[r["job"]])
            write_summary(kept + rows, args.out, time.monotonic() - t0, args_text.strip())
    total = time.monotonic() - t0
    rows = kept + rows
    write_summary(rows, args.out, total, args_text.strip())
    bad = [r for r in rows if r["status"] in ("failed", "error", "unreached", "missed")]
    print(f"{len(rows)} properties in {total:.0f} s; {len(bad)} failed, errors or unreached; "
          f"summary in {args.out}/summary.md")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
