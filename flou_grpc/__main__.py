"""`python -m flou_grpc`: the same as the `flou-grpc` command."""

from __future__ import annotations

from flou_grpc.cli import main

if __name__ == "__main__":
    main()
