"""`python -m iivformer ...` is the `iivformer` command."""
import sys

from iivformer.cli import main

sys.exit(main())
