"""The conformance suite, collected with `pytest --pyargs conformance.suite --fwspec-adapter NAME`."""
