"""`python -m scratchgan train|sample ...` and the `scratchgan` command: the process entry point."""
import sys

from . import fast


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    # first, before anything loads NumPy: OpenBLAS reads its thread wait only then (scratchgan/fast/process.py);
    # nothing is set with --reference or SCRATCHGAN_REFERENCE=1
    fast.configure_process(argv)
    from .cli.common import finish_output
    from .cli.main import main as cli_main
    return finish_output(cli_main, argv)  # a reader that has gone (`scratchgan -h | head -1`): no traceback


if __name__ == "__main__":
    sys.exit(main())
