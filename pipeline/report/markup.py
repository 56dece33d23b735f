"""HTML pieces of a report: escaping, number cells, sortable tables, the page shell (CSS, script).

Every string that comes from data (paths, class names, settings) goes through :func:`esc`. Number
cells carry their full-precision value in ``data-value`` (the sort key, and what tests compare
with the CSV files) and show it rounded. The page has no external resource: the style sheet and
the sorting script are inline.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from ..names import html_text

__all__ = ["esc", "fmt", "text_cell", "num_cell", "ci_cell", "Table", "section", "page"]


def esc(value: Any) -> str:
    """HTML-escaped text of ``value`` (quotes included: safe inside attributes too); a file name
    that is not UTF-8 is shown with ``\\xNN`` escapes (:func:`pipeline.names.html_text`)."""
    return html_text(str(value))


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def fmt(value: Any, digits: int = 4) -> str:
    """A number as shown: integers as is, floats with ``digits`` decimals (small ones with
    ``digits`` significant digits), missing values as an en dash."""
    if value is None or isinstance(value, bool):
        return "–" if value is None else str(value)
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        return str(int(value))
    if not _finite(value):
        return "–"
    value = float(value)
    if value != 0 and abs(value) < 10 ** -(digits - 1):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def _value_attr(value: Any) -> str:
    if isinstance(value, bool) or not _finite(value):
        return ""
    number = float(value)
    return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)


def text_cell(text: Any, cls: str = "", sort: Any = None) -> str:
    """A text cell (escaped); ``sort`` gives a numeric sort key."""
    attrs = f' class="{esc(cls)}"' if cls else ""
    if sort is not None:
        attrs += f' data-value="{esc(_value_attr(sort))}"'
    return f"<td{attrs}>{esc(text)}</td>"


def num_cell(value: Any, col: str = "", digits: int = 4, cls: str = "") -> str:
    """A number cell: full value in ``data-value``, rounded text; ``col`` names the table column."""
    attrs = f' data-col="{esc(col)}"' if col else ""
    return f'<td class="num {esc(cls)}"{attrs} data-value="{_value_attr(value)}">{fmt(value, digits)}</td>'


def ci_cell(mean: Any, low: Any, high: Any, col: str = "", cls: str = "") -> str:
    """``mean [low, high]`` in one cell, sorted by the mean; the three values in data attributes."""
    text = f"{fmt(mean)} [{fmt(low)}, {fmt(high)}]" if _finite(mean) else "–"
    attrs = f' data-col="{esc(col)}"' if col else ""
    return (f'<td class="num {esc(cls)}"{attrs} data-value="{_value_attr(mean)}" data-low="{_value_attr(low)}" '
            f'data-high="{_value_attr(high)}">{text}</td>')


class Table:
    """A table sorted by clicking a column header.

    Args:
        name: ``data-table`` attribute (how tests find it).
        headers: column titles (escaped).
        caption: text above the table (escaped).
    """

    def __init__(self, name: str, headers: Sequence[str], caption: str = ""):
        self.name, self.headers, self.caption = name, list(headers), caption
        self.rows: list[str] = []

    def add(self, cells: Iterable[str], **keys: Any) -> None:
        """Append a row of rendered cells; ``keys`` become ``data-<key>`` attributes of the row."""
        attrs = "".join(f' data-{esc(k)}="{esc(v)}"' for k, v in keys.items())
        self.rows.append(f"<tr{attrs}>{''.join(cells)}</tr>")

    def html(self) -> str:
        if not self.rows:
            return '<p class="note">(no rows)</p>'
        head = "".join(f'<th scope="col" title="sort">{esc(h)}</th>' for h in self.headers)
        caption = f'<p class="caption">{esc(self.caption)}</p>' if self.caption else ""
        return (f'{caption}<div class="scroll"><table class="sortable" data-table="{esc(self.name)}">'
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(self.rows)}</tbody></table></div>")


def section(anchor: str, title: str, body: str) -> str:
    """A top-level section (``<section id=anchor>``) with its heading."""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


_CSS = """
:root { --fg:#1d2330; --muted:#5b6577; --line:#d9dee7; --head:#eef1f6; --accent:#2456a6; --good:#1d7a3a; --bad:#b0322a; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0; background: #fafbfc; }
header { background: #1d2330; color: #fff; padding: 18px 28px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #c6ccd8; }
nav { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid var(--line);
      padding: 6px 28px; font-size: 13px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
main { padding: 8px 28px 40px; max-width: 1500px; }
section { margin-top: 26px; }
h2 { font-size: 19px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
h4 { font-size: 13px; margin: 12px 0 4px; color: var(--muted); }
.note { color: var(--muted); max-width: 1100px; }
.warn { color: var(--bad); font-weight: 600; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; background: #fff; }
p.caption { color: var(--muted); margin: 10px 0 2px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; vertical-align: top; }
th { background: var(--head); cursor: pointer; user-select: none; white-space: nowrap; position: relative; }
th:hover { background: #dfe5ef; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 10px; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 10px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { font-weight: 700; background: #eef7ee; }
td.better { color: var(--good); } td.worse { color: var(--bad); }
tr.differs td:first-child { border-left: 3px solid #e0a100; }
td.path { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; word-break: break-all; max-width: 420px; }
pre { background: #fff; border: 1px solid var(--line); padding: 8px; overflow-x: auto; font-size: 12px; max-width: 1100px; }
img.plot { max-width: 100%; height: auto; border: 1px solid var(--line); background: #fff; }
details { margin: 8px 0; } summary { cursor: pointer; font-weight: 600; }
.gallery { display: flex; flex-wrap: wrap; gap: 8px; margin: 4px 0 10px; }
.gallery figure { margin: 0; width: 160px; background: #fff; border: 1px solid var(--line); padding: 4px; font-size: 11px; }
.gallery figure img, .gallery .missing { width: 150px; height: 150px; object-fit: contain; display: block; background: #eee; }
.gallery .missing { display: flex; align-items: center; justify-content: center; color: var(--muted); text-align: center; }
.gallery figcaption { overflow-wrap: anywhere; }
.gallery figcaption .path { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 10px; word-break: break-all; }
.gallery .value { font-weight: 700; }
.gallery figure { position: relative; border-top: 4px solid #9aa3b2; }
.gallery figure.best { border-top-color: var(--good); } .gallery figure.worst { border-top-color: var(--bad); }
.gallery .kind { position: absolute; top: 6px; left: 6px; background: rgba(29,35,48,.8); color: #fff; font-size: 10px;
                 padding: 0 5px; border-radius: 3px; }
footer { color: var(--muted); font-size: 12px; padding: 10px 28px 30px; }
"""

_SCRIPT = """
(function () {
  function key(cell) {
    if (!cell) { return ''; }
    var v = cell.getAttribute('data-value');
    if (v !== null && v !== '' && !isNaN(Number(v))) { return Number(v); }
    return cell.textContent.trim().toLowerCase();
  }
  function order(a, b) {
    var an = typeof a === 'number', bn = typeof b === 'number';
    if (an && bn) { return a - b; }
    if (an) { return -1; }
    if (bn) { return 1; }
    return a < b ? -1 : (a > b ? 1 : 0);
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function (table) {
    var heads = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(heads, function (th, col) {
      th.addEventListener('click', function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
        rows.sort(function (a, b) { return dir * order(key(a.cells[col]), key(b.cells[col])); });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
"""


def page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: str, footer: str) -> str:
    """The whole document: inline style sheet and sorting script, no external resource."""
    links = "".join(f'<a href="#{esc(anchor)}">{esc(label)}</a>' for anchor, label in nav)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{links}</nav>"
            f"<main>{body}</main><footer>{footer}</footer><script>{_SCRIPT}</script></body></html>\n")
