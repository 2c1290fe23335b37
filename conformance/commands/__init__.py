"""The `kvm-fwspec` command: `cli` dispatches to one module per subcommand, importing only the
one asked for."""
