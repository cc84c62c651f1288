"""`python -m ops` is the `stoker` command."""

from ops.cli import main

main()
