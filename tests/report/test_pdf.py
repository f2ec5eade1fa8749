"""The report as PDF, rendered back to PNG pages (pypdfium2): pages, not blank, the
heatmap's colours on the page."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pypdfium2 as pdfium  # type: ignore[import-untyped]

from hyperwall.report.html import render_html
from hyperwall.report.pdf import write_pdf
from tests.report.support import example_report

REACH_RGB = (0xE4, 0x57, 0x2E)  # td.reach in the template


def pages_as_png(pdf: Path, out: Path) -> list[Path]:
    """Each page of `pdf` as a PNG in `out`; the page images."""
    document = pdfium.PdfDocument(str(pdf))
    paths = []
    try:
        for i in range(len(document)):
            image = document[i].render(scale=1.5).to_pil().convert("RGB")
            path = out / f"page-{i + 1}.png"
            image.save(path)
            paths.append(path)
    finally:
        document.close()
    return paths


def test_the_pdf_renders_to_non_blank_pages_with_the_heatmap(tmp_path: Path) -> None:
    from PIL import Image

    pdf = tmp_path / "hwb-report.pdf"
    write_pdf(render_html(example_report()), pdf)
    assert pdf.read_bytes().startswith(b"%PDF-")
    pages = pages_as_png(pdf, tmp_path)
    assert 2 <= len(pages) <= 8
    colours_seen: set[tuple[int, ...]] = set()
    for path in pages:
        with Image.open(path) as image:
            low, high = cast(tuple[int, int], image.convert("L").getextrema())
            assert low < 100 < high  # text on white: not blank
            colours = image.getcolors(1 << 20) or []
            colours_seen.update(c for _, c in colours if isinstance(c, tuple))
    assert any(
        all(abs(a - b) <= 8 for a, b in zip(c, REACH_RGB, strict=True)) for c in colours_seen
    )
