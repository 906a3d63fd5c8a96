"""``mtlutils report RUN_DIR``: one static HTML page of a run (what a workshop teacher shows).

``RUN_DIR/report.html`` holds the run's mode and parameters, each notebook's status and time, the key
figures (:data:`KEY_FIGURES`, from ``RUN_DIR/figures/*.png``; all of them when none of those exist), the
recorded numbers of ``results.json`` as one table per notebook, and links to the executed notebooks
rendered as HTML into ``RUN_DIR/html/NN_name.html`` (with nbconvert; without it, links to the
``.ipynb`` files). All links are relative, so the folder can be copied or zipped as it is; every text
is escaped and every file is written atomically.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mtlutils.core.io import atomic_write_text, ensure_writable_dir
from mtlutils.core.summary import flatten, load_results

__all__ = ["KEY_FIGURES", "REPORT_FILE", "render_notebook", "report_html", "write_report"]

REPORT_FILE = "report.html"
HTML_DIR = "html"
#: the figures the page shows first, in this order (stems of ``RUN_DIR/figures/*.png``)
KEY_FIGURES = (
    "01_thumbnails",
    "01_card",
    "02_segmentation_overlays",
    "02_gt_spearman",
    "03_table2_auc",
    "04_cd_plot",
    "05_probe_r2",
    "05_gradcam",
)

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       color: #1b1b1b; background: #fff; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0 1rem 1.5rem 0; max-width: 100%; }
figure img { max-width: 100%; border: 1px solid #ddd; }
.failed { color: #b2182b; font-weight: bold; }
.skipped { color: #555; }
"""


def _e(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def _href(*parts: str) -> str:
    """A relative, URL-quoted and attribute-escaped link."""
    return _e("/".join(quote(p) for p in parts))


def _format(value: Any) -> str:
    """A recorded value as short text: floats with 4 significant digits, lists as JSON."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def render_notebook(notebook: str | os.PathLike) -> str | None:
    """An executed notebook as a standalone HTML page (nbconvert), or None without nbconvert."""
    try:
        from nbconvert import HTMLExporter
    except ImportError:
        return None
    import nbformat

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(notebook), as_version=4))
    return body


def _notebook_links(run_dir: Path, names: list[str]) -> dict[str, str | None]:
    """Render each executed notebook into ``html/``; return name -> relative link (None: not found)."""
    links: dict[str, str | None] = {}
    for name in names:
        source = run_dir / f"{name}.ipynb"
        if not source.is_file():
            links[name] = None
            continue
        page = render_notebook(source)
        if page is None:
            links[name] = _href(source.name)
            continue
        ensure_writable_dir(run_dir / HTML_DIR)
        atomic_write_text(run_dir / HTML_DIR / f"{name}.html", page)
        links[name] = _href(HTML_DIR, f"{name}.html")
    return links


def _figure_files(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """The PNG files to embed (key figures, else all) and the others (linked)."""
    found = sorted((run_dir / "figures").glob("*.png")) if (run_dir / "figures").is_dir() else []
    by_stem = {p.stem: p for p in found}
    key = [by_stem[name] for name in KEY_FIGURES if name in by_stem]
    if not key:
        return found, []
    return key, [p for p in found if p not in key]


def _status_table(notebooks: Mapping[str, Any], links: Mapping[str, str | None]) -> str:
    rows = []
    for name, info in notebooks.items():
        info = info if isinstance(info, Mapping) else {}
        status = str(info.get("status", "?"))
        shown, css = status, "failed" if status != "ok" else ""
        if info.get("skipped"):
            shown, css = "skipped (unchanged)", "skipped"
        seconds = info.get("seconds")
        seconds_text = f"{seconds:.1f}" if isinstance(seconds, (int, float)) else "?"
        link = links.get(name)
        cell = f'<a href="{link}">{_e(name)}</a>' if link else _e(name)
        error = f"<br>{_e(info['error'])}" if info.get("error") else ""
        rows.append(
            f'<tr><td>{cell}</td><td class="{css}">{_e(shown)}{error}</td>'
            f'<td class="num">{_e(seconds_text)}</td></tr>'
        )
    total = sum(
        float(i.get("seconds", 0))
        for i in notebooks.values()
        if isinstance(i, Mapping) and isinstance(i.get("seconds"), (int, float))
    )
    rows.append(f'<tr><th>all</th><td></td><td class="num">{total:.1f}</td></tr>')
    return (
        "<table><thead><tr><th>notebook</th><th>status</th><th>seconds</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _number_tables(figures: Mapping[str, Any]) -> str:
    """One table per notebook prefix (``01``, ``02`` …) of the flattened recorded figures."""
    groups: dict[str, list[tuple[str, Any]]] = {}
    for key, value in flatten(dict(figures)).items():
        prefix, _, rest = key.partition(".")
        groups.setdefault(prefix if rest else "other", []).append((rest or key, value))
    if not groups:
        return "<p>No numbers were recorded.</p>"
    parts = []
    for prefix, items in groups.items():
        rows = "".join(
            f"<tr><td>{_e(k)}</td>"
            f'<td class="{"num" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""}">'
            f"{_e(_format(v))}</td></tr>"
            for k, v in items
        )
        parts.append(
            f'<h3 id="numbers-{_e(prefix)}">{_e(prefix)}</h3>'
            f"<table><thead><tr><th>key</th><th>value</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    return "\n".join(parts)


def _figures_section(embedded: list[Path], linked: list[Path]) -> str:
    if not embedded:
        return "<p>No figures in figures/.</p>"
    shown = "".join(
        f'<figure><img src="{_href("figures", p.name)}" alt="{_e(p.stem)}" loading="lazy">'
        f"<figcaption>{_e(p.stem)}</figcaption></figure>"
        for p in embedded
    )
    others = ""
    if linked:
        items = "".join(f'<li><a href="{_href("figures", p.name)}">{_e(p.stem)}</a></li>' for p in linked)
        others = f"<p>All other figures:</p><ul>{items}</ul>"
    return shown + others


def report_html(
    results: Mapping[str, Any],
    embedded: list[Path],
    linked: list[Path],
    links: Mapping[str, str | None],
    title: str,
) -> str:
    """The page's HTML from a run's results, figure files and notebook links (all text escaped)."""
    notebooks = results.get("notebooks", {})
    notebooks = notebooks if isinstance(notebooks, Mapping) else {}
    figures = results.get("figures", {})
    figures = figures if isinstance(figures, Mapping) else {}
    params = results.get("parameters") or {}
    params_text = ", ".join(f"{k} = {_format(v)}" for k, v in params.items()) if params else "none"
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{_e(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{_e(title)}</h1>
<p>Mode: <b>{_e(results.get("mode", "?"))}</b>; parameters: {_e(params_text)}.
Written by <code>mtlutils report</code> from <code>results.json</code>.</p>
<h2>Notebooks</h2>
{_status_table(notebooks, links)}
<h2>Key figures</h2>
{_figures_section(embedded, linked)}
<h2>Recorded numbers</h2>
{_number_tables(figures)}
</body>
</html>
"""


def write_report(run_dir: str | os.PathLike) -> Path:
    """Write ``run_dir/report.html`` (and ``run_dir/html/*.html``); return the page's path."""
    folder = Path(run_dir)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a run folder; give the folder of results.json")
    results = load_results(folder)
    if not isinstance(results, Mapping):
        raise ValueError(f"{folder / 'results.json'} is not a results object; run the tutorial again")
    notebooks = results.get("notebooks", {})
    links = _notebook_links(folder, list(notebooks) if isinstance(notebooks, Mapping) else [])
    embedded, linked = _figure_files(folder)
    page = report_html(results, embedded, linked, links, f"mtlutils run: {folder.resolve().name}")
    return atomic_write_text(folder / REPORT_FILE, page)
