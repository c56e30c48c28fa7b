#!/usr/bin/env python3
"""Checks the links of the book (docs/src/**/*.md) and of README.md, without the network.

Every relative link must name a file or directory that exists (relative to the page), and every `#anchor`, on
the same page or on another Markdown page, must be the id of one of its headings, as mdBook makes them:
inline code, emphasis and links reduced to their text, `<`, `>`, `&`, quotes dropped, lower-cased, whitespace
to `-`, anything but letters, digits, `-` and `_` dropped, a repeated id suffixed `-1`, `-2`, ... (GitHub makes
README.md's the same way). Every page under docs/src/ must be listed in SUMMARY.md, or mdBook would not build
it. External links (http, https, mailto) are counted, not fetched.

Usage: python3 hack/check-links.py [ROOT]  (default: the repository this script is in). Exit code 1 on any
broken link, with one line per link: file:line: target: why.
"""

import os
import re
import sys
from urllib.parse import unquote

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
BOOK_SRC = os.path.join(ROOT, "docs", "src")

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HTML_ATTR = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s{0,3}(```+|~~~+)")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)", re.IGNORECASE)


def prose_lines(path):
    """(line number, text) of the lines outside fenced code blocks, with inline code spans blanked."""
    fence = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            m = FENCE.match(line)
            if m:
                marker = m.group(1)
                if fence is None:
                    fence = marker[0] * len(marker)
                    continue
                if marker.startswith(fence):
                    fence = None
                    continue
            if fence is not None:
                continue
            yield n, re.sub(r"(`+)(.+?)\1", lambda m: " " * len(m.group(0)), line.rstrip("\n"))


def heading_text(raw):
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", raw)  # links and images: their text
    text = re.sub(r"(`+)(.+?)\1", r"\2", text)  # inline code: its content
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = re.sub(r"(\*\*|__|\*|_)(\S(?:.*?\S)?)\1", r"\2", text)  # emphasis
    return text


def slug(text):
    text = re.sub(r"[<>&'\"]", "", text).strip()
    out = []
    for ch in text:
        if ch.isalnum() or ch in "-_":
            out.append(ch.lower() if ch.isascii() else ch)
        elif ch.isspace():
            out.append("-")
    return "".join(out)


_anchors = {}


def anchors(path):
    """The ids of a Markdown file's headings."""
    if path not in _anchors:
        ids, seen = set(), {}
        fence = None
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = FENCE.match(line)
                if m:
                    marker = m.group(1)
                    if fence is None:
                        fence = marker[0] * len(marker)
                    elif marker.startswith(fence):
                        fence = None
                    continue
                if fence is not None:
                    continue
                h = HEADING.match(line)
                if not h:
                    continue
                base = slug(heading_text(h.group(2)))
                n = seen.get(base, 0)
                seen[base] = n + 1
                ids.add(base if n == 0 else f"{base}-{n}")
        _anchors[path] = ids
    return _anchors[path]


def targets(path):
    for n, line in prose_lines(path):
        for regex in (LINK, HTML_ATTR):
            for m in regex.finditer(line):
                yield n, m.group(1)
        m = REF_DEF.match(line)
        if m:
            yield n, m.group(1)


def main():
    pages = [os.path.join(ROOT, "README.md")]
    for d, _, files in os.walk(BOOK_SRC):
        pages += sorted(os.path.join(d, f) for f in files if f.endswith(".md"))
    broken, external, relative, anchored = [], 0, 0, 0
    for page in pages:
        rel_page = os.path.relpath(page, ROOT)
        for n, target in targets(page):
            if EXTERNAL.match(target):
                external += 1
                continue
            file_part, _, anchor = target.partition("#")
            dest = page if file_part == "" else os.path.normpath(os.path.join(os.path.dirname(page), unquote(file_part)))
            relative += 1
            if not os.path.exists(dest):
                broken.append(f"{rel_page}:{n}: {target}: no such file {os.path.relpath(dest, ROOT)}")
                continue
            if not os.path.realpath(dest).startswith(ROOT + os.sep) and os.path.realpath(dest) != ROOT:
                broken.append(f"{rel_page}:{n}: {target}: outside the repository")
                continue
            if anchor:
                anchored += 1
                if not dest.endswith(".md"):
                    broken.append(f"{rel_page}:{n}: {target}: an anchor into a file that is not Markdown")
                elif unquote(anchor) not in anchors(dest):
                    broken.append(f"{rel_page}:{n}: {target}: no heading with id #{anchor} in {os.path.relpath(dest, ROOT)}")

    # mdBook builds only what SUMMARY.md lists.
    summary = os.path.join(BOOK_SRC, "SUMMARY.md")
    if os.path.exists(summary):
        listed = {os.path.normpath(os.path.join(BOOK_SRC, unquote(t.partition("#")[0]))) for _, t in targets(summary)}
        for page in pages:
            if page.startswith(BOOK_SRC + os.sep) and page != summary and page not in listed:
                broken.append(f"{os.path.relpath(page, ROOT)}: not listed in docs/src/SUMMARY.md (mdBook would skip it)")
    else:
        broken.append("docs/src/SUMMARY.md: missing")

    for b in broken:
        print(b)
    print(
        f"check-links: {len(pages)} pages, {relative} relative links ({anchored} with an anchor) checked, "
        f"{external} external links not fetched, {len(broken)} broken"
    )
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
