"""Command line: the click group (``edgeseg.cli.group``) and one module per command, named after it
(``edgeseg precise-bn`` -> ``edgeseg/cli/precise_bn.py``); options several commands share are in
``edgeseg.cli.options``.

Each command module registers its command on the group; this package imports them all so that
``edgeseg.cli:main`` (the console script) and ``python -m edgeseg`` see every command. Nothing below
the CLI imports it."""
from edgeseg.cli import (  # noqa: F401  (register their commands)
    bench,
    build,
    calibrate,
    check,
    deploy,
    doctor,
    eval,
    export,
    infer,
    info,
    models,
    precise_bn,
    quantize,
    train,
)
from edgeseg.cli.group import main

__all__ = ["main"]
