"""Regenerate the generated pages docs/options.md and docs/tables.md from the code they document.

    .venv/bin/python scripts/make_docs.py           # write both pages
    .venv/bin/python scripts/make_docs.py --check   # exit 1 if either page differs from what would be written

docs/options.md is ``entrainment.config.markdown()`` (every Config field: TOML key, CLI flag, default, the stages
that read it, its description); docs/tables.md is ``entrainment.store.schema.markdown()`` (every table, column by
column).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from entrainment import config  # noqa: E402
from entrainment.store import schema  # noqa: E402

OPTIONS_HEADER = """# Options

Every option of every command and every key of a `--config file.toml`, generated from the field descriptions in
`entrainment/config.py` (`.venv/bin/python -m entrainment.config` prints the same table; regenerate this page with
`.venv/bin/python scripts/make_docs.py`). In TOML, keys use the first column (`max_pairs = 200`, `lambda` may stand
for `lam`, a list may also be one comma-separated string); on the command line, the second (`--max-pairs 200`,
lists comma-separated: `--seeds 0,1,2`). Precedence: defaults < `--config` file < flags. A stage command takes the
options its stage reads ("read by") plus `--out`, `--config`, `--refresh`; `entrainment run` and `entrainment plan`
take all of them. `entrainment discover` calls `discover_batch_size` `--batch-size` and `entrainment scan` calls
`scan_k` `--k`. Values are type-checked strictly and unknown keys are refused, each with one line naming the key and
the file. Back to the [README](../README.md); what the options do is in [method.md](method.md).

`entrainment run --quick` (and `plan --quick`) loads [configs/quick.toml](../configs/quick.toml): every stage at its
smallest, about 2-3 minutes on a 2-core CPU, labelled a smoke run in the console and the report. `--max-pairs` alone
does not make a run small: it sizes only the shift statistics' items (see its row below).

"""

TABLES_HEADER = """# Tables

Every Parquet table the pipeline writes, column by column, generated from `entrainment/store/schema.py`
(`.venv/bin/python -m entrainment.store.schema` prints the same; regenerate this page with
`.venv/bin/python scripts/make_docs.py`). Which stage writes which table, and from which inputs, is in
[pipeline.md](pipeline.md); how to query them is in [pipeline.md](pipeline.md#inspecting-the-tables) and
[api.md](api.md). Back to the [README](../README.md).

"""


def escaped(markdown: str, columns: int) -> str:
    """A Markdown table whose last column may contain ` | ` (e.g. "zero | mean | resample"): escape those pipes so
    the row keeps its `columns` cells (the cells before the last never contain one)."""
    out = []
    for line in markdown.splitlines():
        if line.startswith("| ") and line.endswith(" |") and not line.startswith("|---"):
            cells = line[2:-2].split(" | ", columns - 1)
            cells[-1] = cells[-1].replace("|", "\\|")
            line = "| " + " | ".join(cells) + " |"
        out.append(line)
    return "\n".join(out)


def pages() -> dict[Path, str]:
    """Each generated page and its content."""
    return {
        ROOT / "docs" / "options.md": OPTIONS_HEADER + escaped(config.markdown(), 5) + "\n",
        ROOT / "docs" / "tables.md": TABLES_HEADER + escaped(schema.markdown(), 3).rstrip() + "\n",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that the pages are current")
    args = ap.parse_args()
    stale = []
    for path, text in pages().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path.relative_to(ROOT))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date: {', '.join(map(str, stale))} (run .venv/bin/python scripts/make_docs.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
