"""The client commands of `flou-grpc`, run as processes against a real server.

Output a person reads, JSON a script reads, and exit codes a shell acts on:
0 ok, 1 refused by the server, 2 usage, 3 unreachable, 4 unauthenticated,
130 interrupted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

from tests.integration.cli.conftest import TOKEN, _run, run_in_process
from tests.server_process import ROOT


def _id() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


def _fields(stdout: str) -> dict[str, str]:
    """`key   value` lines as a dict."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^(\w+) +(.*)$", stdout, re.MULTILINE)}


def test_start_prints_the_instance_and_exits_0(flou_process):
    instance_id = _id()
    result = flou_process(
        "start", "shop", "--id", instance_id, "--payload", '{"user": "ada"}', "--wait", "settled"
    )
    assert result.returncode == 0, result.stderr
    fields = _fields(result.stdout)
    assert result.stdout.startswith(f"id        {instance_id}\n")
    assert (fields["machine"], fields["status"], fields["revision"]) == ("shop", "waiting", "3")
    assert fields["active"] == "shop, shop.browse"
    assert result.stderr == ""


def test_json_output_is_the_response(flou):
    result = flou("start", "linear", "--json", "--wait", "settled")
    assert result.returncode == 0, result.stderr
    instance = json.loads(result.stdout)
    assert instance["machine"] == "linear"
    assert instance["status"] == "waiting"
    assert instance["revision"] == 3
    assert instance["state"]["a"]["_status"] == "active"
    got = json.loads(flou("get", instance["id"], "--json").stdout)
    assert (got["id"], got["state"]) == (instance["id"], None)  # basic view without --full


def test_transition_prints_what_fired(flou):
    instance_id = _id()
    assert flou("start", "shop", "--id", instance_id, "--wait", "settled").returncode == 0
    result = flou(
        "transition", instance_id, "checkout", "--payload", '{"card": "visa"}', "--wait", "settled"
    )
    assert result.returncode == 0, result.stderr
    assert "fired     checkout@shop: shop.browse -> shop.payment" in result.stdout
    assert _fields(result.stdout)["active"] == "shop, shop.payment, shop.payment.charge"
    enqueued = flou(
        "transition",
        instance_id,
        "ok",
        "--namespace",
        "shop.payment",
        "--wait",
        "enqueued",
        "--json",
    )
    assert enqueued.returncode == 0, enqueued.stderr
    assert json.loads(enqueued.stdout)["fired"] == []


def test_transition_with_params_and_expected_revision(flou):
    instance_id = _id()
    assert flou("start", "hub_lanes", "--id", instance_id, "--wait", "settled").returncode == 0
    stale = flou(
        "transition",
        instance_id,
        "spawn_{k}",
        "--params",
        '[{"k": "a"}]',
        "--expected-revision",
        "1",
    )
    assert stale.returncode == 1
    assert "ABORTED ERROR_REASON_REVISION_CONFLICT" in stale.stderr
    revision = _fields(flou("get", instance_id).stdout)["revision"]
    ok = flou(
        "transition",
        instance_id,
        "spawn_{k}",
        "--params",
        '[{"k": "a"}, {"k": "b"}]',
        "--expected-revision",
        revision,
        "--wait",
        "settled",
    )
    assert ok.returncode == 0, ok.stderr
    assert "hub_lanes.first_a" in ok.stdout
    assert "hub_lanes.first_b" in ok.stdout


def test_domain_errors_exit_1_with_one_readable_line(flou, flou_process):
    instance_id = _id()
    assert flou("start", "linear", "--id", instance_id, "--wait", "settled").returncode == 0
    refused = flou_process("transition", instance_id, "nope")
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(
        "flou-grpc: FAILED_PRECONDITION ERROR_REASON_TRANSITION_NOT_ALLOWED: no transition 'nope'"
    )
    assert f"instanceId={instance_id}" in refused.stderr
    assert "activeStates=linear,linear.a" in refused.stderr

    unknown = flou("get", "nobody")
    assert unknown.returncode == 1
    assert unknown.stderr == (
        "flou-grpc: NOT_FOUND ERROR_REASON_INSTANCE_NOT_FOUND: instance 'nobody' not found "
        "(instanceId=nobody)\n"
    )
    machine = flou("start", "no_such_machine")
    assert machine.returncode == 1
    assert "NOT_FOUND ERROR_REASON_MACHINE_NOT_FOUND" in machine.stderr
    taken = flou("start", "linear", "--id", instance_id)
    assert taken.returncode == 1
    assert "ALREADY_EXISTS ERROR_REASON_INSTANCE_ALREADY_EXISTS" in taken.stderr


def test_update_append_get_full_and_history(flou):
    instance_id = _id()
    assert flou("start", "linear", "--id", instance_id, "--wait", "settled").returncode == 0
    updated = flou("update", instance_id, "order={}", "tags=[]", 'name="Ada"')
    assert updated.returncode == 0, updated.stderr
    nested = flou("update", instance_id, "order.total=12.5", "--fqn", "")
    assert nested.returncode == 0, nested.stderr
    appended = flou("append", instance_id, "tags", '"urgent"')
    assert appended.returncode == 0, appended.stderr
    assert 'values    ["urgent"]' in appended.stdout
    leaf = flou("append", instance_id, "runs", '{"by": "cli"}', "--fqn", "linear.a", "--json")
    assert json.loads(leaf.stdout)["values"][-1] == {"by": "cli"}

    full = flou("get", instance_id, "--full")
    assert full.returncode == 0, full.stderr
    state = json.loads(full.stdout.split("state\n", 1)[1])
    assert (state["name"], state["order"], state["tags"]) == ("Ada", {"total": 12.5}, ["urgent"])

    history = flou("history", instance_id)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert [int(line.split()[0]) for line in lines] == list(range(1, len(lines) + 1))
    assert lines[0].split()[1] == "started"
    assert re.search(r"state_updated +name,order,tags +\+/name=\"Ada\"", history.stdout)
    assert re.search(r"appended +linear\.a runs +\+/a/runs/-=\{\"by\":\"cli\"\}", history.stdout)
    later = flou("history", instance_id, "--from", str(len(lines)))
    assert len(later.stdout.splitlines()) == 1
    events = json.loads(flou("history", instance_id, "--json").stdout)["events"]
    assert [e["revision"] for e in events] == list(range(1, len(lines) + 1))


def test_list_and_machines(flou):
    instance_id = _id()
    assert flou("start", "chain", "--id", instance_id, "--wait", "settled").returncode == 0
    listed = flou("list", "--machine", "chain", "--status", "waiting")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "MACHINE", "STATUS", "REVISION", "UPDATED"]
    assert any(row.split()[:3] == [instance_id, "chain", "waiting"] for row in rows)
    assert all(row.split()[1] == "chain" for row in rows)
    assert flou("list", "--machine", "chain", "--status", "completed").stdout.count("\n") == 1

    machines = flou("machines")
    assert machines.returncode == 0, machines.stderr
    names = [line.split()[0] for line in machines.stdout.splitlines()[1:]]
    assert {"chain", "shop", "deep"} <= set(names)
    assert names == sorted(names)
    assert "linear  ltm" in re.sub(r" +", "  ", machines.stdout)


def test_describe_text_tree(flou):
    result = flou("describe", "shop")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "shop (ltm): Section 8's example: a shop with a nested payment machine.",
        "  shop  [machine; init: browse]",
        "    browse  [state]",
        "    payment  [machine; init: charge]",
        "      charge  [state]",
        "      receipt  [state]",
        "      charge --ok--> receipt",
        "    shipped  [state]",
        "    browse --checkout--> payment",
        "    payment --paid--> shipped",
    ]
    join = flou("describe", "join_all").stdout
    assert "[a, b] --sync--> c  (join all)" in join
    channels = flou("describe", "channels").stdout
    assert "noop --start--> noop2  (namespace global)" in channels


def test_describe_mermaid_of_a_nested_machine(flou):
    result = flou("describe", "deep", "--format", "mermaid")
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert lines[0] == "stateDiagram-v2"
    for expected in (
        'state "deep" as s_deep',
        "state s_deep {",
        "state s_deep_outer {",
        "state s_deep_outer_inner {",
        "[*] --> s_deep_outer",
        "[*] --> s_deep_outer_inner",
        "[*] --> s_deep_outer_inner_a",
        "s_deep_outer_inner_a --> s_deep_outer_inner_b : go",
        "s_deep_outer_inner --> s_deep_outer_d : up",
        "s_deep_outer_inner --> s_deep_outer_inner : again",
        "s_deep_outer --> s_deep_e : finish",
        "[*] --> s_deep",
    ):
        assert expected in lines
    # The composites nest: inner's block closes before outer's, outer's before deep's.
    assert lines.count("}") == 3
    inner = lines.index("state s_deep_outer_inner {")
    assert lines.index("state s_deep_outer {") < inner < lines.index("}")
    as_json = json.loads(flou("describe", "deep", "--format", "json").stdout)
    assert as_json["root"]["children"][0]["name"] == "outer"


def test_watch_prints_one_line_per_event_and_ctrl_c_exits_130(flou, server):
    instance_id = _id()
    assert flou("start", "self_loop", "--id", instance_id, "--wait", "settled").returncode == 0
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOU_")}
    watch = subprocess.Popen(
        [sys.executable, "-m", "flou_grpc", "watch", instance_id, "--address", server.address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=ROOT,
    )
    try:
        assert watch.stdout is not None
        snapshot = watch.stdout.readline()
        assert re.match(rf" +3  snapshot +self_loop {instance_id}  status=waiting", snapshot)
        fired = flou(
            "transition", instance_id, "again", "--payload", '{"n": 1}', "--wait", "settled"
        )
        assert fired.returncode == 0, fired.stderr
        transitioned = watch.stdout.readline()
        executed = watch.stdout.readline()
        assert re.match(
            r" +4  transitioned +again@self_loop self_loop\.loop->self_loop\.loop  ", transitioned
        )
        assert '~/loop/_status="queued"' in transitioned
        assert re.match(r" +5  executed +self_loop\.loop  .*\+/loop/n=1", executed)
        watch.send_signal(signal.SIGINT)
        assert watch.wait(10) == 130
        assert watch.stderr is not None
        assert watch.stderr.read() == ""  # quietly: no traceback
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        for pipe in (watch.stdout, watch.stderr):
            if pipe is not None:
                pipe.close()


def test_watch_json_lines(flou, server):
    instance_id = _id()
    assert flou("start", "linear", "--id", instance_id, "--wait", "settled").returncode == 0
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOU_")}
    watch = subprocess.Popen(
        [sys.executable, "-m", "flou_grpc", "watch", instance_id, "--from", "1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=environment | {"FLOU_ADDRESS": server.address},
        cwd=ROOT,
    )
    assert watch.stdout is not None
    try:
        lines = [json.loads(watch.stdout.readline()) for _ in range(3)]
    finally:
        watch.kill()
        watch.wait()
        watch.stdout.close()
    assert lines[0]["snapshot"]["revision"] == 1
    assert [line["event"]["revision"] for line in lines[1:]] == [2, 3]
    assert lines[1]["event"]["kind"] == "executed"


def test_unreachable_server_exits_3():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result = _run(f"127.0.0.1:{port}", "get", "x", "--timeout", "0.5")
    assert result.returncode == 3
    assert result.stderr.startswith(f"flou-grpc: cannot reach 127.0.0.1:{port}: UNAVAILABLE")
    assert result.stderr.count("\n") == 1
    assert time.monotonic() - started < 10


def test_missing_or_wrong_token_exits_4_and_the_token_works(secured, monkeypatch):
    missing = _run(secured.address, "machines")
    assert missing.returncode == 4
    assert missing.stderr.startswith("flou-grpc: UNAUTHENTICATED ERROR_REASON_UNAUTHENTICATED")
    wrong = run_in_process(secured.address, "machines", "--token", "nope")
    assert wrong.returncode == 4
    by_option = run_in_process(secured.address, "machines", "--token", TOKEN)
    assert by_option.returncode == 0, by_option.stderr
    monkeypatch.setenv("FLOU_TOKEN", TOKEN)
    by_env = run_in_process(secured.address, "machines")
    assert by_env.returncode == 0, by_env.stderr
    assert "shop" in by_env.stdout


def test_bad_json_is_a_usage_error_naming_the_option(flou, flou_process):
    payload = flou_process("start", "linear", "--payload", "{oops")
    assert payload.returncode == 2
    assert "argument --payload: '{oops' is not valid JSON" in payload.stderr
    params = flou("transition", "x", "go", "--params", '{"k": "a"}')
    assert params.returncode == 2
    assert "argument --params: must be a JSON list of objects" in params.stderr
    update = flou("update", "x", "name=Ada")
    assert update.returncode == 2
    assert "argument KEY=JSON: the value of 'name' is not valid JSON" in update.stderr
