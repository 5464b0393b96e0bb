"""The ``citeqa`` console script: the service's commands (serve, index, ask, search) plus the
evaluation harness's ``eval``. Assembled here, above both layers, so neither imports the other
the wrong way."""

from __future__ import annotations

from citeqa.eval.cli import register
from citeqa.service.cli import app

register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
