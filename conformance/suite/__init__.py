"""The conformance suite, collected with
`pytest --pyargs kvm_fwspec.conformance.suite --fwspec-adapter NAME`."""
