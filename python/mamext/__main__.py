"""``mamext`` command line (``python -m mamext`` or the ``mamext`` console script).

Subcommands:
  experiment   train MAC and MAM MLPs, sweep pruning, report (the README)
  info         versions and the CPU kernel level in use
"""

from __future__ import annotations

import sys

USAGE = """usage: mamext <command> [options]

commands:
  experiment   reproduce the MAM pruning claim on Fashion-MNIST (table, CSV, JSON, plot)
  info         print versions and the CPU kernel level in use

Run `mamext <command> --help` for a command's options.
"""


def _info(argv):
    import torch

    import mamext

    if argv and argv[0] in ("-h", "--help"):
        print("usage: mamext info\n\nPrint the mamext and torch versions and the CPU kernel level in use.")
        return 0
    if argv:
        print(f"mamext info: error: unrecognized arguments: {' '.join(argv)}", file=sys.stderr)
        return 2
    print(f"mamext {mamext.__version__}, torch {torch.__version__}, CPU kernels: {mamext.cpu_capability()}, "
          f"CUDA available: {torch.cuda.is_available()}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "experiment":
        from .experiment.cli import main as experiment_main

        return experiment_main(rest, prog="mamext experiment")
    if cmd == "info":
        return _info(rest)
    print(f"mamext: error: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr, end="")
    return 2


if __name__ == "__main__":
    sys.exit(main())
