"""`validate` on big JSON Lines files: wall time and peak memory, one bad line each.

    python bench/validate_big.py [--rows 300000 1000000 3000000] [--keep]

For each size it writes a file of Alpaca rows (about 300 bytes each, every one different;
~90 MB per 300,000 rows) into a temporary folder, breaks one line in the middle, runs
``python -m finetune_gui validate FILE`` in a fresh process and prints its wall time, peak
RSS (the child's own, from wait4) and whether the output names the broken line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("drone river kettle lantern harbor meadow copper violet signal orchard compass "
         "granite willow saffron beacon thistle").split()


def write_file(path: Path, rows: int) -> int:
    """``rows`` distinct Alpaca rows; the middle one is not JSON. Returns its line."""
    bad = rows // 2 + 1
    with path.open("w", encoding="utf-8") as out:
        for i in range(1, rows + 1):
            if i == bad:
                out.write('{"instruction": "broken row", "output": \n')
                continue
            words = " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 13))
            out.write(json.dumps({
                "instruction": f"Question {i}: what links {words}?",
                "input": "",
                "output": f"Answer {i}: the {words} all appear in row {i} of this file, "
                          f"which exists to measure how fast a big file is checked."}) + "\n")
    return bad


def measure(path: Path) -> tuple[float, float, str]:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "finetune_gui", "validate", str(path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    output = proc.stdout.read()
    _, _, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    return seconds, usage.ru_maxrss / 1024, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[300_000, 1_000_000, 3_000_000])
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="validate-big-"))
    for rows in args.rows:
        path = folder / f"rows-{rows}.jsonl"
        bad = write_file(path, rows)
        seconds, peak_mib, output = measure(path)
        named = f"line {bad}: invalid JSON" in output
        print(json.dumps({"rows": rows, "megabytes": round(path.stat().st_size / 1e6, 1),
                          "seconds": round(seconds, 1), "peak_rss_mib": round(peak_mib),
                          "names_the_bad_line": named,
                          "summary": output.strip().splitlines()[0]}), flush=True)
        if not args.keep:
            path.unlink()
    if not args.keep:
        folder.rmdir()


if __name__ == "__main__":
    main()
