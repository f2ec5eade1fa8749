"""The report as PDF: WeasyPrint lays out the HTML (`report.html`) with its print CSS
(A4, page numbers). WeasyPrint needs Pango (Debian: libpango-1.0-0, libpangoft2-1.0-0),
HarfBuzz's subsetter (libharfbuzz-subset0) and a font (fonts-dejavu-core);
`scripts/bootstrap` installs them."""

from __future__ import annotations

from pathlib import Path

from weasyprint import HTML  # type: ignore[import-untyped]


def write_pdf(html: str, path: Path) -> None:
    HTML(string=html).write_pdf(str(path))
