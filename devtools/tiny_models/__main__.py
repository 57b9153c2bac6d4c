"""``python -m devtools.tiny_models DIR``: build the tiny random-weight models and their registry in DIR."""

from __future__ import annotations

import argparse

from devtools.tiny_models import make_tiny


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.tiny_models", description=__doc__)
    parser.add_argument("dest", metavar="DIR", help="folder to write the models and registry.json into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    args = parser.parse_args(argv)
    print(make_tiny(args.dest, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
