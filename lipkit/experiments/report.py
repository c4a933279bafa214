"""REPORT.md from reproduce's results: verdicts first, then one section per claim with its
rule, the numbers that decided it, tables, and captioned figures."""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

VERDICT_MARK = {"supported": "✅ supported", "not supported": "❌ not supported", "mixed": "➖ mixed"}


def machine_description(device: str) -> str:
    """Where the numbers were measured, in words (CPU model and cores, GPU name, torch)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name()}"
    return text + f", device {device}"


def _pool_line(results: dict[str, Any]) -> str:
    """How the training runs were scheduled (their seconds per step depend on it)."""
    workers, reused = results.get("workers", 1), results.get("runs_reused", 0)
    line = ""
    if workers >= 2:
        line = (f"  \nThe claims' training runs ran first, {workers} processes side by side "
                f"({results.get('threads_per_worker', 1)} thread(s) each), in "
                f"{results.get('pool_seconds', 0):.0f} s; each claim's time below is what it measured afterwards "
                "(claim (c) times its steps alone).")
    if reused:
        line += (f"  \n{reused} of the {results.get('runs_planned', reused)} planned training runs were already "
                 "finished (an earlier invocation of this command) and were reused, not retrained: their training "
                 "times are in each run's summary.json.")
    return line


def write_report(out: Path, results: dict[str, Any]) -> Path:
    claims: dict[str, dict[str, Any]] = results["claims"]
    lines = ["# lipkit reproduce: the seed's claims, measured", "",
             f"Command: `{results['command']}`  ",
             f"Profile: {results['profile']}; machine: {results['machine']}  ",
             f"Started {results['started']}; total {results.get('seconds', 0):.0f} s.{_pool_line(results)}", "",
             "Every number below was measured by this command in this run; each verdict was decided by the "
             "rule printed under it, written in lipkit/experiments/ before the run. Training runs are under "
             "`runs/` (config.json, metrics.jsonl, samples), all numbers also in `results.json`.", "",
             "| claim | verdict | decided by |", "|---|---|---|"]
    for claim in claims.values():
        lines.append(f"| {claim['title']} | {VERDICT_MARK[claim['verdict']]} | {claim['decided_by']} |")
    for key, err in results.get("errors", {}).items():
        lines.append(f"| ({key}) | error | {err['error']} |")
    for key, claim in claims.items():
        lines += ["", f"## {claim['title']}", "",
                  f"**Verdict: {VERDICT_MARK[claim['verdict']]}.** {claim['decided_by'].rstrip('.')}.", "",
                  f"*Rule:* {claim['rule']}", ""]
        lines += [f"- {note}" for note in claim.get("notes", [])]
        for table in claim.get("tables", []):
            lines += ["", table.rstrip()]
        for fig in claim.get("figures", []):
            lines += ["", f"![{Path(fig['path']).stem}]({fig['path']})", "", f"*{fig['caption']}*"]
        settings = ", ".join(f"{k}={v}" for k, v in claim.get("settings", {}).items())
        lines += ["", f"<sub>Settings ({results['profile']}): {settings}. Took {claim.get('seconds', 0):.0f} s; "
                  f"{len(claim.get('runs', []))} training run(s) under runs/{key}/.</sub>"]
    for key, err in results.get("errors", {}).items():
        lines += ["", f"## Claim {key}: failed", "", "```", err["traceback"].rstrip(), "```"]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines) + "\n")
    return path
