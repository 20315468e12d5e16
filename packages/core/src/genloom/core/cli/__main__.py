"""`python -m genloom.core.cli ...` is the `genloom` command (what `torchrun -m` launches)."""

from genloom.core.cli import main

main()
