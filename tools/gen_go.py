"""Generate the Go code of the contract in protos/ (run by `make proto`).

Writes, for every .proto under protos/ (default output: clients/go/gen):
  <out>/flou/v1/<name>.pb.go        messages and enums (protoc-gen-go)
  <out>/flou/v1/<name>_grpc.pb.go   client and server stubs, only for files
                                    that declare a service (protoc-gen-go-grpc)

The Go package is `github.com/flou-grpc/flou-grpc/clients/go/gen/flou/v1`
(name `flouv1`), the path of clients/go/gen/flou/v1 in the module of
clients/go/go.mod, which is also where the GOPATH-mode build lays it out
(GOPATH/src/github.com/flou-grpc/flou-grpc/clients/go). The .proto files
carry no `go_package` option and protos/ is not changed for Go: every file
gets its import path from an `M` mapping on the command line instead.

The same protoc as the Python code (`tools/protoc.py`: `python -m
grpc_tools.protoc`, from grpcio-tools in .venv), with Debian's plugins
(`apt-get install protoc-gen-go protoc-gen-go-grpc`), so the output is
byte-stable for a given .venv and Debian release. This script installs
nothing: when a plugin is missing it prints the apt-get command and exits 2.

The output directory is replaced whole, so a removed .proto leaves no stale
file behind.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import protoc  # tools/: the script's directory

DEFAULT_OUTPUT = protoc.ROOT / "clients" / "go" / "gen"
MODULE = "github.com/flou-grpc/flou-grpc/clients/go"
GO_PACKAGE_ROOT = f"{MODULE}/gen"
APT_PACKAGES = ("protoc-gen-go", "protoc-gen-go-grpc")


def _plugin(name: str) -> Path:
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
    )
    if found is None:
        print(
            f"tools/gen_go.py: {name} is missing; install the Go plugins with:\n"
            f"  sudo apt-get install -y --no-install-recommends {' '.join(APT_PACKAGES)}",
            file=sys.stderr,
        )
        sys.exit(2)
    return Path(found)


def _go_package(rel: str) -> str:
    """The Go import path (and package name) of one .proto under protos/."""
    directory = str(Path(rel).parent)  # flou/v1
    name = "".join(Path(directory).parts[-2:])  # flouv1
    return f"{GO_PACKAGE_ROOT}/{directory};{name}"


def generate(out: Path) -> None:
    plugins = {name: _plugin(name) for name in ("protoc-gen-go", "protoc-gen-go-grpc")}
    rel = protoc.protos()
    services = protoc.services(rel)
    mappings = [f"M{r}={_go_package(r)}" for r in rel]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        go_opts = [f"--go_opt={o}" for o in ("paths=source_relative", *mappings)]
        protoc.run([f"--go_out={tmp}", *go_opts, *rel], plugins=plugins)
        if services:
            grpc_opts = [f"--go-grpc_opt={o}" for o in ("paths=source_relative", *mappings)]
            protoc.run([f"--go-grpc_out={tmp}", *grpc_opts, *services], plugins=plugins)
        protoc.replace_tree(tmp, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUTPUT)
    generate(parser.parse_args().out.resolve())


if __name__ == "__main__":
    main()
