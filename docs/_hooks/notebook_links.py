"""mkdocs hook: a notebook's links to docs pages (``../theory.md#a``) point at the built pages.

mkdocs rewrites links to ``.md`` files in Markdown pages only; mkdocs-jupyter's HTML keeps
them as written, which works in Jupyter and on GitHub but not on the site, where the
notebook is its own folder (``notebooks/02_.../``) and ``theory.md`` is ``theory/``. Each
such link that names a docs page is rewritten to that page's URL, relative to the notebook's;
a link to no page fails the build, as a Markdown page's would.
"""

from __future__ import annotations

import posixpath
import re

from mkdocs.exceptions import PluginError
from mkdocs.utils import get_relative_url

LINK = re.compile(r'href="(?![a-z]+:|#|/)([^"#]+\.md)(#[^"]*)?"')
_pages: dict = {}


def on_files(files, config):
    _pages.clear()
    _pages.update({f.src_uri: f for f in files.documentation_pages()})
    return files


def on_post_page(output: str, page, config) -> str:
    if not page.file.src_uri.endswith(".ipynb"):
        return output

    def rewrite(match: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(posixpath.dirname(page.file.src_uri), match[1]))
        if target not in _pages:
            raise PluginError(f"{page.file.src_uri}: a link to {match[1]}, which is no docs page")
        return f'href="{get_relative_url(_pages[target].url, page.url)}{match[2] or ""}"'

    return LINK.sub(rewrite, output)
