"""The few HTML pieces report.html is made of (a page with inline CSS, sections, tables, inline figures): no
template engine, every value escaped."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
td, th { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f5f5f5; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 1rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.5rem; }
.card.right { border-left: 5px solid #55a868; } .card.wrong { border-left: 5px solid #c44e52; }
.card img { max-width: 100%; } .muted { color: #777; } code { background: #f5f5f5; padding: 0 0.2rem; }
"""


class RawHtml(str):
    """A table cell that is already HTML (a link), not text to escape."""


def escape(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def page(title: str, sections: Sequence[str]) -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{''.join(sections)}</body></html>\n"
    )


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], header: bool = True) -> str:
    head = "<tr>" + "".join(f"<th>{escape(column)}</th>" for column in columns) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, RawHtml):
        return f"<td>{value}</td>"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="number">{escape(value)}</td>'
    return f"<td>{escape(value)}</td>"


def figure(data_uri: str, alt: str) -> str:
    return f'<figure><img alt="{escape(alt)}" src="{data_uri}"></figure>'


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
