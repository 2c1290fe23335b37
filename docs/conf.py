"""Sphinx configuration for the kvm-fwspec site. The reference pages are generated from the
spec by `kvm-fwspec generate`; what they show by running the suite or a command is filled in
at build time by kvm_fwspec.conformance.sphinx_pages. This file and the narrative pages are
written by hand."""

project = "kvm-fwspec"
author = "kvm-fwspec contributors"
extensions = ["myst_parser", "kvm_fwspec.conformance.sphinx_pages"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []
html_theme_options = {"page_width": "1300px", "body_max_width": "none"}
nitpicky = True
