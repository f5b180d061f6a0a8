"""`python -m golden --update` (from tests/): rewrite the golden files from the current code."""
from __future__ import annotations

import sys

from golden import UPDATE, update


def main(argv: list[str]) -> int:
    if argv != ["--update"]:
        print(f"usage: python -m golden --update   (or `{UPDATE}`): rewrites tests/golden/out-*/", file=sys.stderr)
        return 2
    changed = update()
    for path in changed:
        print(f"updated: tests/golden/{path}")
    print(f"{len(changed)} golden files changed" if changed else "golden files already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
