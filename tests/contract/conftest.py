"""The contract as protoc compiles it from protos/, with its comments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc_tools
import pytest
from google.protobuf import descriptor_pb2


@pytest.fixture(scope="session")
def compiled_protos(repo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Every file of protos/, compiled now, keyed by its name (`flou/v1/instance.proto`).

    Compiled with source info, which keeps the comments that the generated
    modules drop.
    """
    out = tmp_path_factory.mktemp("descriptors") / "contract.binpb"
    protos = sorted(
        p.relative_to(repo_root / "protos") for p in (repo_root / "protos").rglob("*.proto")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{repo_root / 'protos'}",
            f"-I{repo_root / 'third_party' / 'googleapis'}",
            f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *map(str, protos),
        ],
        check=True,
    )
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return {f.name: f for f in fds.file}
