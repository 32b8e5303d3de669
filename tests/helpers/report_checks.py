"""What a report.html must be wherever it is opened: self-contained, nothing fetched from the network."""

from __future__ import annotations

from html.parser import HTMLParser


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []
        self.section_ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("src") is not None:
            self.sources.append(values["src"] or "")
        if tag == "link" or (tag == "a" and values.get("href")):
            self.links.append(values.get("href") or "")
        if tag == "section" and values.get("id"):
            self.section_ids.append(values["id"] or "")


def sections_of_a_self_contained_page(page: str) -> list[str]:
    """The ids of the page's sections, after checking that every image is inline (a data: URI), that links point
    to files beside it (no scheme, no absolute path) and that no style or script is fetched."""
    references = _References()
    references.feed(page)
    assert references.sources and all(source.startswith("data:image/png;base64,") for source in references.sources)
    assert all(":" not in link and not link.startswith("/") for link in references.links), references.links
    assert "<script" not in page and "@import" not in page and "url(" not in page
    return references.section_ids
