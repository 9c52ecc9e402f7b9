"""Generate the TypeScript code of the contract in protos/ (one line of `make proto`).

Writes clients/typescript/gen/ (replaced whole, so a removed .proto leaves no
stale module behind) with ts-proto (pinned in clients/typescript/package.json
and package-lock.json) run by the SAME protoc as the Python code:
`python -m grpc_tools.protoc` of this interpreter, so that every language's
output is byte-stable. It holds:

  gen/flou/v1/*.ts               messages, and the @grpc/grpc-js service client
  gen/google/rpc/status.ts       google.rpc.Status, to decode the
  gen/google/rpc/error_details.ts  `grpc-status-details-bin` trailer (ErrorInfo,
                                 BadRequest, ResourceInfo, RetryInfo...)
  gen/google/protobuf/*.ts       the well-known types they import
  gen/google/api/*.ts            field_behavior (options only)

Include paths: protos/, third_party/googleapis (google/api), grpc_tools' _proto
(well-known types) and the google/rpc protos shipped as .proto files by the
googleapis-common-protos package of this interpreter (copied to a temporary
include directory, so nothing else of that package can shadow third_party/).

When clients/typescript/node_modules is missing, `npm ci` installs the pinned
tools first (npm is required then).

Usage: .venv/bin/python tools/gen_typescript.py [OUT]   (OUT: clients/typescript/gen)
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import protoc  # tools/: the script's directory

PACKAGE = protoc.ROOT / "clients" / "typescript"
PLUGIN = PACKAGE / "node_modules" / ".bin" / "protoc-gen-ts_proto"
DEFAULT_OUT = PACKAGE / "gen"
RPC_PROTOS = ("status.proto", "error_details.proto")
TS_PROTO_OPTIONS = ",".join(
    (
        "outputServices=grpc-js",
        "env=node",
        "esModuleInterop=true",
        "forceLong=number",
        "useDate=true",
        "useOptionals=messages",
    )
)


def ensure_tools() -> None:
    """`npm ci` in clients/typescript when its node_modules (the pinned ts-proto) is missing."""
    if PLUGIN.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        sys.exit(
            "gen_typescript: npm is required to install ts-proto into "
            "clients/typescript/node_modules (install Node.js >= 20 with npm)"
        )
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PACKAGE, check=True
    )


def rpc_proto_dir() -> Path:
    """The directory of google/rpc/{status,error_details}.proto in googleapis-common-protos."""
    spec = importlib.util.find_spec("google.rpc.status_pb2")
    if spec is None or spec.origin is None:
        sys.exit("gen_typescript: googleapis-common-protos is not installed (google.rpc)")
    directory = Path(spec.origin).parent
    missing = [name for name in RPC_PROTOS if not (directory / name).exists()]
    if missing:
        sys.exit(f"gen_typescript: {directory} has no {', '.join(missing)}")
    return directory


def generate(out: Path) -> None:
    ensure_tools()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        include = tmp / "include"
        (include / "google" / "rpc").mkdir(parents=True)
        source = rpc_proto_dir()
        for name in RPC_PROTOS:
            shutil.copyfile(source / name, include / "google" / "rpc" / name)
        generated = tmp / "gen"
        generated.mkdir()
        protoc.run(
            [
                f"--ts_proto_out={generated}",
                f"--ts_proto_opt={TS_PROTO_OPTIONS}",
                *protoc.protos(),
                *(f"google/rpc/{name}" for name in RPC_PROTOS),
            ],
            includes=[include],
            plugins={"protoc-gen-ts_proto": PLUGIN},
        )
        protoc.replace_tree(generated, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    generate(parser.parse_args().out.resolve())


if __name__ == "__main__":
    main()
