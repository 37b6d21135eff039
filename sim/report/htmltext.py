"""Reading a built report back: an element's text and its tables, for the docs generator.

The regulator page in docs/ quotes figures from a real report; reading them out of report.html
(rather than recomputing them) guarantees the page shows exactly what the report shows.
"""

from __future__ import annotations

from html.parser import HTMLParser

__all__ = ["element_text", "table_rows"]


class _Collector(HTMLParser):
    """Collects the text of the element with ``id == target`` and the cells of its tables."""

    def __init__(self, target: str) -> None:
        super().__init__(convert_charrefs=True)
        self.target = target
        self.depth = 0  # >0 while inside the target element
        self.text: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth == 0 and dict(attrs).get("id") == self.target:
            self.depth = 1
            return
        if self.depth == 0:
            return
        if tag not in {"br", "meta", "img", "input", "hr"}:
            self.depth += 1
        if tag == "tr":
            self.rows.append([])
        elif tag in {"td", "th"}:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if self.depth == 0:
            return
        self.depth -= 1
        if tag in {"td", "th"} and self._cell is not None and self.rows:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.text.append(data)
            if self._cell is not None:
                self._cell.append(data)


def _collect(html_text: str, element_id: str) -> _Collector:
    collector = _Collector(element_id)
    collector.feed(html_text)
    collector.close()
    return collector


def element_text(html_text: str, element_id: str) -> str:
    """The whitespace-normalised text of the element with this id ("" when absent)."""
    return " ".join("".join(_collect(html_text, element_id).text).split())


def table_rows(html_text: str, table_id: str) -> list[list[str]]:
    """Rows of cell texts of the table with this id, header row first."""
    return _collect(html_text, table_id).rows
