"""The `sftrl` command line and `make demo` (`cluster.cli.main:app`, `python -m cluster.cli.demo`)."""
