"""Writes a results directory's report: one self-contained report.html, report.md and a CSV per table."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f3f3f3; } td:first-child, td:nth-child(2) { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; } pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
.scroll { overflow-x: auto; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 1em; }
"""


@dataclass
class ReportTable:
    """A table shown in the report and written as CSV (`csv` instead of the shown `frame` when given)."""

    name: str
    title: str
    frame: pd.DataFrame
    caption: str = ""
    csv: pd.DataFrame | None = None


@dataclass
class ReportContent:
    """Everything a report shows, computed from the logs beforehand."""

    title: str
    tables: list[ReportTable]
    figures: dict[str, Path]
    figure_captions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    spec_text: str = ""
    environment: dict = field(default_factory=dict)


def _format(frame: pd.DataFrame) -> pd.DataFrame:
    """Round floats for display (SSIM and LPIPS to 4 places, the rest to 2); CSVs keep full precision."""
    def rounded(column: pd.Series) -> pd.Series:
        if not pd.api.types.is_float_dtype(column):
            return column
        fine = column.name.startswith(("ssim", "lpips")) and not column.name.endswith("_db")
        return column.round(4 if fine else 2)

    return frame.apply(rounded)


def _markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (paste-ready for papers and issues)."""
    shown = _format(frame).astype(object).where(frame.notna(), "")
    rows = [[str(c) for c in shown.columns], *([str(v) for v in row] for row in shown.itertuples(index=False))]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows[1:]])


def _html_table(table: ReportTable) -> str:
    body = _format(table.frame).to_html(index=False, border=0, na_rep="", classes=f"table-{table.name}")
    caption = f"<p>{html.escape(table.caption)}</p>" if table.caption else ""
    return f'<h2 id="{table.name}">{html.escape(table.title)}</h2>\n{caption}\n<div class="scroll">{body}</div>'


def _html_figure(name: str, path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure id="figure-{name}"><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption or name)}</figcaption></figure>")


def write_report(content: ReportContent, out_dir: Path) -> dict[str, Path]:
    """Write report.html (images embedded, no network needed), report.md and tables/*.csv into out_dir."""
    tables_dir = out_dir / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for table in content.tables:
        path = tables_dir / f"{table.name}.csv"
        (table.frame if table.csv is None else table.csv).to_csv(path, index=False, float_format="%.6g")
        written[f"table:{table.name}"] = path
    notes = "".join(f'<p class="note">{html.escape(note)}</p>' for note in content.notes)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(content.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(content.title)}</h1>", notes,
        *(_html_table(table) for table in content.tables),
        '<h2 id="figures">Figures</h2>',
        *(_html_figure(name, path, content.figure_captions.get(name, "")) for name, path in content.figures.items()),
        '<h2 id="spec">Resolved spec</h2>', f"<pre>{html.escape(content.spec_text)}</pre>",
        '<h2 id="environment">Environment</h2>',
        f"<pre>{html.escape(json.dumps(content.environment, indent=2))}</pre>",
        "</body></html>",
    ]
    html_path = out_dir / "report.html"
    html_path.write_text("\n".join(parts), encoding="utf-8")
    written["report.html"] = html_path
    markdown = [f"# {content.title}", "", *(f"> {note}\n" for note in content.notes)]
    for table in content.tables:
        markdown += [f"## {table.title}", "", table.caption, "", _markdown_table(table.frame), ""]
    markdown += ["## Figures", "", *(f"![{name}](figures/{path.name})" for name, path in content.figures.items())]
    md_path = out_dir / "report.md"
    md_path.write_text("\n".join(markdown) + "\n", encoding="utf-8")
    written["report.md"] = md_path
    return written
