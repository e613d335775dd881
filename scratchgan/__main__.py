"""`python -m scratchgan train|sample ...`"""
import sys

from .cli import main

sys.exit(main())
