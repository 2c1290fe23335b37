"""The spec and the library that reads it: YAML with line numbers, the JSON Schema, the
resolver, the typed model and the rule language. The lowest layer: every generator, the
conformance suite and every command read the spec through this package, never raw YAML."""
