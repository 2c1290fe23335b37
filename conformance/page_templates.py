"""The templates beside the conformance package (the HTML report, the fleet plan page, the
docs' migration matrix), loaded with one set of options: undefined names are errors, and
whitespace is controlled as the house style asks."""

from __future__ import annotations

import jinja2


def environment(html: bool) -> jinja2.Environment:
    """`html` escapes what the pages interpolate (host names, reasons come from user files);
    reStructuredText for the docs is not HTML and is not escaped."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("kvm_fwspec.conformance", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=html,
        trim_blocks=True,
        lstrip_blocks=True,
    )
