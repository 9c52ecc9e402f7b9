"""The command line without a server: options, JSON arguments, exit codes, rendering."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime

import flou_client
import grpc
import pytest
from flou_client import (
    Event,
    EventKind,
    FiredTransition,
    Instance,
    InstanceStatus,
    JoinMode,
    Machine,
    MachineKind,
    MachineTransition,
    Node,
    NodeKind,
    Rejection,
)

from flou_grpc import cli
from flou_grpc.config import Settings
from flou_grpc.service.logs import REQUEST_ID, JsonFormatter, RequestIdFilter


def _usage_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.run(list(argv))
    assert exited.value.code == cli.EXIT_USAGE
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["start", "m", "--payload", "{oops"], "argument --payload: '{oops' is not valid JSON"),
        (["start", "m", "--payload", "[1, 2]"], "argument --payload: must be a JSON object"),
        (["start", "m", "--payload", '"x"'], "not a string"),
        (["transition", "i", "go", "--params", "[1]"], "argument --params: must be a JSON list"),
        (
            ["transition", "i", "go", "--payload", "1"],
            "must be a JSON object ({...}), not a number",
        ),
        (["transition", "i", "go", "--expected-revision", "-1"], "-1 is negative"),
        (["update", "i", "total"], "argument KEY=JSON: expected KEY=JSON, got 'total'"),
        (["update", "i", "=1"], "expected KEY=JSON"),
        (["update", "i", "a=1", "b={"], "the value of 'b' is not valid JSON"),
        (["append", "i", "tags", "urgent"], "a string needs its JSON quotes"),
        (["start", "m", "--wait", "never"], "argument --wait: invalid choice"),
        (["get", "i", "--timeout", "0"], "argument --timeout: '0' must be positive"),
        (["serve", "--metrics-port", "70000"], "argument --metrics-port: 70000 is outside"),
        (["serve", "--port", "http"], "argument --port: 'http' is not a port number"),
        (["describe", "m", "--format", "svg"], "argument --format: invalid choice"),
    ],
)
def test_bad_arguments_exit_2_naming_the_option_and_why(capsys, argv, message):
    assert message in _usage_error(capsys, *argv)


def test_json_arguments_are_parsed_as_json():
    assert cli.json_object('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    assert cli.json_object_list('[{"k": "a"}, {"k": 2}]') == [{"k": "a"}, {"k": 2}]
    assert cli.assignment('order.total={"v": 1.5}') == ("order.total", {"v": 1.5})
    assert cli.assignment('a="b=c"') == ("a", "b=c")
    assert cli.json_value("true") is True
    with pytest.raises(argparse.ArgumentTypeError):
        cli.json_object_list('[{"k": 1}, 2]')


def test_client_side_usage_problems_exit_2(capsys, tmp_path):
    assert cli.run(["get", "i", "--cert", str(tmp_path / "c.pem")]) == cli.EXIT_USAGE
    assert "--cert and --key go together" in capsys.readouterr().err
    assert cli.run(["get", "i", "--ca", str(tmp_path / "missing.pem")]) == cli.EXIT_USAGE
    assert "--ca " in capsys.readouterr().err
    nan = cli.run(["start", "m", "--payload", '{"x": NaN}', "--address", "127.0.0.1:1"])
    assert nan == cli.EXIT_USAGE
    assert "payload.x: nan is not a JSON number" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (flou_client.UnavailableError("down"), cli.EXIT_UNREACHABLE),
        (flou_client.ShuttingDownError("bye"), cli.EXIT_UNREACHABLE),
        (flou_client.DeadlineExceededError("late"), cli.EXIT_UNREACHABLE),
        (flou_client.UnauthenticatedError("who"), cli.EXIT_AUTH),
        (flou_client.PermissionDeniedError("no"), cli.EXIT_AUTH),
        (flou_client.InstanceNotFoundError("gone"), cli.EXIT_ERROR),
        (flou_client.TransitionNotAllowedError("no"), cli.EXIT_ERROR),
        (flou_client.InternalError("boom"), cli.EXIT_ERROR),
        (flou_client.FlouError("?", code=grpc.StatusCode.UNIMPLEMENTED), cli.EXIT_ERROR),
    ],
)
def test_exit_code_of_each_kind_of_failure(error, code):
    assert cli.exit_code(error) == code


def test_help_documents_the_exit_codes(capsys):
    for argv in (["--help"], ["watch", "--help"], ["serve", "--help"]):
        with pytest.raises(SystemExit) as exited:
            cli.run(argv)
        assert exited.value.code == 0
        out = capsys.readouterr().out
        assert "exit codes:" in out
        for line in (
            "0    success",
            "2    usage error",
            "3    cannot reach the server",
            "4    unauthenticated",
            "130  interrupted",
        ):
            assert line in out


def _serve_args(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["serve", *argv])


def test_serve_options_override_the_environment():
    environ = {
        "FLOU_APP": "env.app",
        "FLOU_DATABASE_URL": "sqlite:///env.db",
        "FLOU_METRICS_PORT": "9000",
        "FLOU_PORT": "6000",
    }
    from_env = cli.serve_settings(_serve_args(), environ)
    assert (from_env.app, from_env.database_url, from_env.metrics_port, from_env.port) == (
        ("env.app",),
        "sqlite:///env.db",
        9000,
        6000,
    )
    args = _serve_args(
        "--app",
        "a.b",
        "--app",
        "c, d.e",
        "--database-url",
        "memory://",
        "--metrics-port",
        "0",
        "--port",
        "0",
        "--host",
        "0.0.0.0",
    )
    settings = cli.serve_settings(args, environ)
    assert settings.app == ("a.b", "c", "d.e")
    assert settings.database_url == "memory://"
    assert settings.metrics_port == 0
    assert (settings.host, settings.port) == ("0.0.0.0", 0)
    assert cli.serve_settings(_serve_args(), {}) == Settings()


def test_serve_with_a_bad_environment_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.setenv("FLOU_METRICS_PORT", "many")
    assert "FLOU_METRICS_PORT='many' is not a valid int" in _usage_error(capsys, "serve")


def test_serve_with_an_app_that_cannot_be_imported_exits_1(monkeypatch, caplog, tmp_path):
    monkeypatch.delenv("FLOU_APP", raising=False)
    code = cli.run(
        [
            "serve",
            "--port",
            "0",
            "--app",
            "no.such.module",
            "--database-url",
            f"sqlite:///{tmp_path / 'x.db'}",
        ]
    )
    assert code == cli.EXIT_ERROR
    assert "No module named 'no'" in caplog.text


def test_json_log_lines_carry_the_request_id():
    record = logging.LogRecord(
        "flou_grpc", logging.INFO, __file__, 1, "listening on %s", ("x",), None
    )
    token = REQUEST_ID.set("req-7")
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert (line["level"], line["logger"], line["message"], line["request_id"]) == (
        "INFO",
        "flou_grpc",
        "listening on x",
        "req-7",
    )
    assert datetime.fromisoformat(line["time"])


# --- rendering ----------------------------------------------------------------------------


def _event(kind: EventKind, item, patch=(), **extra) -> Event:
    fields = {"fired": (), "error": None, "rejection": None, "request_id": "", **extra}
    return Event(
        instance_id="i",
        revision=12,
        kind=kind,
        item=item,
        patch=list(patch),
        create_time=None,
        **fields,
    )


def test_event_lines():
    fired = FiredTransition("shop", "checkout", "shop", ("shop.browse",), ("shop.payment",))
    line = cli.event_line(
        _event(
            EventKind.TRANSITIONED,
            {"label": "checkout", "namespace": "shop"},
            [
                {"op": "replace", "path": "/browse/_status", "value": "completed"},
                {"op": "remove", "path": "/x"},
            ],
            fired=(fired,),
        )
    )
    assert line == (
        "    12  transitioned   checkout@shop shop.browse->shop.payment  "
        '~/browse/_status="completed" -/x'
    )
    update = cli.event_line(
        _event(EventKind.STATE_UPDATED, {"fqn": "", "updates": {"b": 1, "a": 2}})
    )
    assert update == "    12  state_updated  a,b"
    rejected = cli.event_line(
        _event(
            EventKind.REJECTED,
            {"label": "go", "namespace": "m"},
            rejection=Rejection("ERROR_REASON_REVISION_CONFLICT", "stale\\nrevision", {}),
        )
    )
    assert rejected == "    12  rejected       go@m REVISION_CONFLICT: stale\\nrevision"


def test_patch_summary_is_short():
    patch = [{"op": "add", "path": f"/k{i}", "value": "v" * 50} for i in range(10)]
    summary = cli.patch_summary(patch)
    assert len(summary) < 180
    assert summary.endswith("(10 ops)")
    assert cli.patch_summary([{"op": "add", "path": "", "value": {}}]) == "+/={}"
    assert cli.patch_summary([]) == ""


def test_instance_lines_and_snapshot():
    instance = Instance(
        id="o-1",
        machine="shop",
        revision=3,
        status=InstanceStatus.WAITING,
        state={"b": 1, "_status": "active"},
        active_states=("shop",),
        pending_work_count=0,
        errors=(),
        create_time=None,
        update_time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    lines = cli.instance_lines(instance, full=True)
    assert lines[:4] == ["id        o-1", "machine   shop", "status    waiting", "revision  3"]
    assert lines[lines.index("state") + 1 :] == [
        "  {",
        '    "_status": "active",',
        '    "b": 1',
        "  }",
    ]
    assert cli.snapshot_line(instance) == (
        "     3  snapshot       shop o-1  status=waiting active=[shop] pending=0"
    )


def test_text_tree_of_a_machine():
    root = Node(
        name="hub",
        fqn="hub",
        kind=NodeKind.MACHINE,
        init=("a",),
        children=(
            Node("a", "hub.a", NodeKind.STATE),
            Node("w_{k}", "hub.w_{k}", NodeKind.STATE, params=("k",), final=True),
        ),
        transitions=(
            MachineTransition("go_{k}", ("a",), ("w_{k}", "a"), "bus", True, JoinMode.ALL, ("k",)),
        ),
    )
    lines = cli.tree_lines(Machine("hub", MachineKind.LTM, "", root))
    assert lines == [
        "hub (ltm)",
        "  hub  [machine; init: a]",
        "    a  [state]",
        "    w_{k}  [state; final]",
        "    a --go_{k}--> [w_{k}, a]  (namespace bus, join all)",
    ]
