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


def write_summary(rows: list[dict], out: Path, total: float, args_text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(
        {"command": args_text, "total_seconds": round(total, 1), "properties": rows},
        indent=1) + "\n")
    lines = [
        "# Formal proofs",
        "",
        f"`{args_text}`: {len(rows)} properties in {total / 60:.1f} min "
        "(wall clock, 2 shared cores; SymbiYosys `smtbmc yices`).",
        "",
        "Kinds: `planted bug` = a generated copy of a generator with one mistake, on which the "
        "named proof must fail; `structural` = no combinational path on the flattened netlist; "
        "`protocol` = SPEC 9 (SPEC 11 for bd_linear) stream rules by k-induction, the upstream "
        "assumed to keep the protocol; `cover` = the case is reachable (the proofs are not "
        "vacuous); `width` = the exact accumulator equals the exact sum of a whole group of "
        "max_blocks beats (SPEC 6); `stage` = one pipeline stage's logic against the plain model, "
        "every input (combinational: one solver step is a complete proof); `equivalence` = the "
        "whole unit against the plain model for every value of the first beat after reset, every "
        "other input free (bounded: the depth is the latency, so a pass covers every value of "
        "the beat; a timeout gives the depth fully checked).",
        "",
        "| unit | B | kind | property | status | seconds | detail |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['unit']} | {r['B'] or ''} | {r['kind']} | {r['property']} | "
                     f"{status_text(r)} | {r['seconds']} | {r['detail']} |")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines += ["", "Totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), ""]
    (out / "summary.md").write_text("\n".join(lines))


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
        names = {r["job"] for r in other["properties"]}
        rows = [r for r in rows if r["job"] not in names] + other["properties"]
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
                    help="run jobs whose name contains this text (repeatable)")
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

    selected = [j for j in jobs(tuple(args.blocks), args.units)
                if (not args.quick or j.quick)
                and (not args.only or any(s in j.name for s in args.only))]
    if not args.no_bugs and not args.only and not args.quick:
        selected = bug_jobs() + selected
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
    global _SELECTED, _WORK
    _SELECTED, _WORK = selected, args.work
    order = {job.name: n for n, job in enumerate(selected)}
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool, \
            tqdm(total=len(selected), unit="job") as bar:
        for name, done in pool.imap_unordered(_run_index, range(len(selected))):
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
