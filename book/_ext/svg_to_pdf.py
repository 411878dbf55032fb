"""Sphinx extension: SVG figures in the PDF, converted to vector PDF with ``rsvg-convert``.

LaTeX cannot include SVG files, so without a converter the LaTeX builder drops the book's SVG figures
(``book/figures/``) with a warning. Sphinx's image-converter mechanism calls this converter for every
SVG when the builder cannot use it; HTML builds keep the SVG. ``rsvg-convert`` comes with Debian's
``librsvg2-bin``, which ``make pdf`` installs with the TeX packages (``make tex``).
"""
from __future__ import annotations

import shutil
import subprocess

from sphinx.errors import ExtensionError
from sphinx.transforms.post_transforms.images import ImageConverter


class RsvgConverter(ImageConverter):
    conversion_rules = [("image/svg+xml", "application/pdf")]
    # Before sphinx.ext.imgconverter (ImageMagick, priority 200), which sphinx-jupyterbook-latex loads:
    # ImageMagick renders SVG only with the right delegates, and rasterizes it.
    default_priority = 150

    def is_available(self) -> bool:
        if shutil.which("rsvg-convert") is None:
            raise ExtensionError(
                "the PDF needs rsvg-convert to include the book's SVG figures: apt-get install librsvg2-bin "
                "(`make tex` installs it with the TeX packages)")
        return True

    def convert(self, _from: str, _to: str) -> bool:
        subprocess.run(["rsvg-convert", "--format=pdf", "--output", _to, _from], check=True,
                       capture_output=True)
        return True


def setup(app):
    app.add_post_transform(RsvgConverter)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
