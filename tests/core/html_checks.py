"""What every HTML page escbridge writes must be: well formed, self-contained, phone-ready.

Not a conftest: plain functions, imported by name by the report and matrix chart specifications.
Parsing uses the standard library's ``html.parser``; structure is checked strictly (every element
escbridge opens it also closes, in order), which is stricter than HTML requires.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
#: Attributes whose value a browser would fetch or follow.
FETCHING = {"src", "href", "xlink:href", "action", "data", "poster", "srcset", "background"}
#: What a page that links out (``links=True``) may link to: a reader's click opens it; the page
#: itself still loads nothing.
LINK = re.compile(r"^https?://[^\s\"'<>]+$")


@dataclass
class Page:
    """What the parser saw: problems, and the facts tests ask about."""

    problems: list[str] = field(default_factory=list)
    tags: Counter[str] = field(default_factory=Counter)
    ids: Counter[str] = field(default_factory=Counter)
    metas: list[dict[str, str | None]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    doctype: str | None = None
    links: list[str] = field(default_factory=list)
    lang: str | None = None
    title: str = ""

    @property
    def visible_text(self) -> str:
        return " ".join(" ".join(self.text).split())


class _Parser(HTMLParser):
    def __init__(self, page: Page, links: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.links = links
        self.stack: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.page.doctype = decl

    def _attrs(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        p = self.page
        p.tags[tag] += 1
        for name, value in attrs:
            if name == "id" and value is not None:
                p.ids[value] += 1
            if self.links and tag == "a" and name == "href" and LINK.match(value or ""):
                p.links.append(value or "")
                continue
            if name in FETCHING and value is not None and not value.startswith("#"):
                p.problems.append(f"<{tag} {name}={value!r}> points outside the file")
            if name == "style" and value:
                p.styles.append(value)
            if value and "://" in value and not name.startswith("xmlns"):
                p.problems.append(f"<{tag} {name}={value!r}> names a URL")
        if tag == "meta":
            p.metas.append(dict(attrs))
        if tag == "html":
            p.lang = dict(attrs).get("lang")
        if tag in ("script", "iframe", "object", "embed", "link", "img", "base"):
            p.problems.append(f"<{tag}> has no place in a self-contained report")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._attrs(tag, attrs)  # <path … /> inside SVG, <br/>: complete in themselves

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.page.problems.append(f"</{tag}> closes a void element")
            return
        if not self.stack or self.stack[-1] != tag:
            self.page.problems.append(f"</{tag}> does not close the open <{self.stack[-1:]}>")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "style":
            self.page.styles.append(data)
        elif self.stack and self.stack[-1] == "title":
            self.page.title += data
        elif self.stack:
            self.page.text.append(data)


def parse(html: str, *, links: bool = False) -> Page:
    """``links``: ``<a href="https://…">`` is allowed (and listed in ``Page.links``)."""
    page = Page()
    parser = _Parser(page, links)
    parser.feed(html)
    parser.close()
    if parser.stack:
        page.problems.append(f"never closed: {parser.stack}")
    return page


_URL_IN_CSS = re.compile(r"url\(\s*['\"]?([^'\")]*)", re.I)


def problems(html: str, *, links: bool = False) -> list[str]:
    """Everything that makes ``html`` not a valid, self-contained, phone-ready page."""
    page = parse(html, links=links)
    found = list(page.problems)
    if page.doctype is None or page.doctype.lower() != "doctype html":
        found.append(f"doctype is {page.doctype!r}, not html")
    if not page.lang:
        found.append("<html> has no lang")
    if not page.title.strip():
        found.append("no <title>")
    if not any((m.get("charset") or "").lower() == "utf-8" for m in page.metas):
        found.append('no <meta charset="utf-8">')
    viewport = [m for m in page.metas if m.get("name") == "viewport"]
    if not viewport or "width=device-width" not in (viewport[0].get("content") or ""):
        found.append("no viewport meta tag for phones")
    for tag in ("html", "head", "body"):
        if page.tags[tag] != 1:
            found.append(f"{page.tags[tag]} <{tag}> elements")
    if page.tags["h1"] != 1:
        found.append(f"{page.tags['h1']} <h1> headings, not one")
    found += [f'id "{i}" is used {n} times' for i, n in page.ids.items() if n > 1]
    for style in page.styles:
        if "@import" in style:
            found.append("CSS @import")
        for target in _URL_IN_CSS.findall(style):
            if not target.startswith("#"):
                found.append(f"CSS url({target}) points outside the file")
    if "<?xml" in html:
        found.append("an XML prolog inside HTML")
    return found


def assert_valid_page(html: str, *, links: bool = False) -> Page:
    found = problems(html, links=links)
    assert not found, "\n".join(found)
    return parse(html, links=links)
