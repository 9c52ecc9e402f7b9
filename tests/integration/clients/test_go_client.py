"""The Go client (clients/go): its `go test` end-to-end tests against real server processes.

Built offline, in GOPATH mode, with Debian's Go toolchain and Debian-packaged Go
libraries (no Go module proxy is needed): GOPATH is a tree laid out under the
test's temporary directory whose `src/github.com/flou-grpc/flou-grpc/clients/go`
is a symlink to clients/go, followed by /usr/share/gocode. The apt packages are
installed when they are missing and the tests run as root; otherwise the tests
are skipped with the command to run.

Two servers: a plaintext one that requires a bearer token (every Go test sends
it; one checks that a call without it is refused), and one that requires mutual
TLS (certificates made by openssl; left out when openssl is missing).
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.certificates import make_pki, mtls_env
from tests.server_process import ROOT, ServerProcess

# Installing the toolchain on a fresh machine takes longer than the suite's 60 s.
pytestmark = pytest.mark.timeout(600)

GO_DIR = ROOT / "clients" / "go"
IMPORT_PATH = "github.com/flou-grpc/flou-grpc/clients/go"
APP = ("tests.ltms.flat",)
TOKEN = "go-client-test-token"
APT_PACKAGES = (
    "golang-go",
    "golang-google-grpc-dev",
    "golang-google-protobuf-dev",
    # Named explicitly: otherwise apt picks the 1.3 line, whose codec panics on
    # the generated messages.
    "golang-github-golang-protobuf-1-5-dev",
    "protoc-gen-go",
    "protoc-gen-go-grpc",
    "protobuf-compiler",
)
_GOCODE = Path("/usr/share/gocode/src")
_NEEDED = (
    _GOCODE / "google.golang.org/grpc/status",
    _GOCODE / "google.golang.org/protobuf/types/known/structpb",
    _GOCODE / "google.golang.org/genproto/googleapis/rpc/errdetails",
    _GOCODE / "google.golang.org/genproto/googleapis/api/annotations",
    _GOCODE / "github.com/golang/protobuf/proto",
)
INSTALL = "apt-get install -y --no-install-recommends " + " ".join(APT_PACKAGES)


def _missing() -> list[str]:
    missing = [
        name for name in ("go", "protoc-gen-go", "protoc-gen-go-grpc") if not shutil.which(name)
    ]
    missing += [str(path) for path in _NEEDED if not path.is_dir()]
    if shutil.which("dpkg-query"):
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", "golang-github-golang-protobuf-1-5-dev"],
            capture_output=True,
            text=True,
            check=False,
        )
        if "install ok installed" not in status.stdout:
            missing.append("golang-github-golang-protobuf-1-5-dev")
    return missing


@pytest.fixture(scope="module")
def go_toolchain() -> None:
    """Debian's Go toolchain and Go libraries, installed with apt-get if missing (root only)."""
    missing = _missing()
    if not missing:
        return
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"the Go toolchain is missing ({', '.join(missing)}); run: sudo {INSTALL}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = subprocess.run(INSTALL.split(), capture_output=True, text=True, env=env, check=False)
    if install.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, check=False)
        install = subprocess.run(
            INSTALL.split(), capture_output=True, text=True, env=env, check=False
        )
    assert install.returncode == 0, f"{INSTALL} failed:\n{install.stdout}\n{install.stderr}"
    assert not _missing(), f"still missing after {INSTALL}: {_missing()}"


@pytest.fixture(scope="module")
def go_env(
    go_toolchain: None, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, str]]:
    """The package directory inside a GOPATH tree, and the environment of `go` commands."""
    gopath = tmp_path_factory.mktemp("gopath")
    package = gopath / "src" / IMPORT_PATH
    package.parent.mkdir(parents=True)
    package.symlink_to(GO_DIR, target_is_directory=True)
    # The build cache outlives the test (a second run builds in about a second).
    cache = Path("/tmp") / f"flou-go-build-cache-{os.getuid() if hasattr(os, 'getuid') else 0}"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{gopath}:/usr/share/gocode",
        "GOCACHE": str(cache),
        "GOFLAGS": "",
        "GOPROXY": "off",
        "CGO_ENABLED": "0",
        "HOME": os.environ.get("HOME") or str(gopath),
        "PWD": str(package),  # so that `go` sees the GOPATH path, not the symlink's target
    }
    return package, env


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    database = tmp_path_factory.mktemp("go-server") / "flou.db"
    process = ServerProcess(database, app=APP, env={"FLOU_AUTH_TOKENS": TOKEN}).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, Path] | None]:
    """A server requiring mutual TLS and the directory of its PKI; None without openssl."""
    if shutil.which("openssl") is None:
        yield None
        return
    pki = make_pki(tmp_path_factory.mktemp("go-pki"))
    env = mtls_env(pki)
    process = ServerProcess(
        tmp_path_factory.mktemp("go-tls") / "flou.db", app=APP, env=env
    ).start()
    yield process, pki
    process.stop()


def _go(
    args: list[str], package: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["go", *args],
        cwd=package,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_go_vet(go_env: tuple[Path, dict[str, str]]):
    package, env = go_env
    vetted = _go(["vet", "./..."], package, env)
    assert vetted.returncode == 0, vetted.stdout + vetted.stderr


def test_go_client_end_to_end(
    go_env: tuple[Path, dict[str, str]],
    token_server: ServerProcess,
    tls_server: tuple[ServerProcess, Path] | None,
):
    package, env = go_env
    env = {**env, "FLOU_TEST_ADDRESS": token_server.address, "FLOU_TEST_TOKEN": TOKEN}
    if tls_server is not None:
        env |= {
            "FLOU_TEST_TLS_ADDRESS": tls_server[0].address,
            "FLOU_TEST_TLS_DIR": str(tls_server[1]),
        }
    ran = _go(["test", "-count=1", "-v", "./..."], package, env)
    output = ran.stdout + ran.stderr
    assert ran.returncode == 0, output + "\nserver log:\n" + "".join(token_server.log[-50:])
    assert "--- PASS: TestWatchResumesWithoutGapOrDuplicate" in output, output
    skipped = [line for line in output.splitlines() if "--- SKIP" in line]
    if tls_server is not None:
        assert not skipped, output
    else:
        assert [line for line in skipped if "TestMutualTLS" not in line] == [], output


def test_generated_go_code_is_current(go_toolchain: None, tmp_path: Path):
    """tools/gen_go.py regenerates clients/go/gen identically (as `make proto-check` checks)."""
    out = tmp_path / "gen"
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_go.py"), str(out)], check=True, timeout=60
    )
    compared = filecmp.dircmp(GO_DIR / "gen", out)

    def differences(cmp: filecmp.dircmp[str]) -> list[str]:
        found = [*cmp.left_only, *cmp.right_only, *cmp.diff_files, *cmp.funny_files]
        for sub in cmp.subdirs.values():
            found += differences(sub)
        return found

    assert differences(compared) == [], "clients/go/gen is stale: run 'make proto'"
