/**
 * End-to-end tests of FlouClient against a real flou-grpc server at $FLOU_TEST_ADDRESS
 * (serving tests.ltms.flat: `linear` is `a --go--> b`, `chain` is `a --go--> b --go--> c`).
 * Run by tests/integration/clients/test_typescript_client.py, which starts the server.
 */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import net from "node:net";
import { after, before, describe, test } from "node:test";

import {
  EventKind,
  FlouClient,
  FlouError,
  InstanceStatus,
  Status,
  type WatchItem,
} from "../src";

const ADDRESS = process.env.FLOU_TEST_ADDRESS;
if (!ADDRESS) {
  throw new Error("FLOU_TEST_ADDRESS is not set: the address of a flou-grpc test server");
}
const [HOST, PORT] = [ADDRESS.slice(0, ADDRESS.lastIndexOf(":")), Number(ADDRESS.split(":").pop())];

function uniqueId(prefix: string): string {
  return `${prefix}-${randomUUID()}`;
}

async function rejection(promise: Promise<unknown>): Promise<FlouError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof FlouError, `not a FlouError: ${String(error)}`);
    return error;
  }
  assert.fail("the call did not fail");
}

/** Pulls items off a watch until `until` holds for the list so far. */
async function collect(
  watch: AsyncIterator<WatchItem>,
  until: (items: WatchItem[]) => boolean,
): Promise<WatchItem[]> {
  const items: WatchItem[] = [];
  while (!until(items)) {
    const next = await watch.next();
    assert.ok(!next.done, "the watch ended");
    items.push(next.value);
  }
  return items;
}

const revisions = (items: WatchItem[]): number[] =>
  items.flatMap((item) => (item.kind === "event" ? [item.event.revision] : []));

let client: FlouClient;

before(() => {
  client = new FlouClient(ADDRESS, { timeoutMs: 20_000 });
});

after(() => {
  client.close();
});

describe("calls", () => {
  test("start, get, list and describe", async () => {
    const id = uniqueId("start");
    const instance = await client.start("linear", { user: "ada", n: 1.5 }, { instanceId: id, wait: "settled" });
    assert.equal(instance.id, id);
    assert.equal(instance.machine, "linear");
    assert.equal(instance.status, InstanceStatus.INSTANCE_STATUS_WAITING);
    assert.deepEqual(instance.activeStates, ["linear", "linear.a"]);
    assert.deepEqual(instance.state?.runs, [{ user: "ada", n: 1.5 }]);

    const again = await client.getInstance(id);
    assert.equal(again.revision, instance.revision);
    assert.ok(again.createTime instanceof Date);

    const listed = await client.listInstances({ machine: "linear", pageSize: 1000 });
    assert.ok(listed.instances.some((i) => i.id === id));

    const machines = await client.listMachines();
    assert.ok(machines.machines.some((m) => m.name === "linear"));
    const linear = await client.describeMachine("linear");
    assert.equal(linear.name, "linear");
    assert.ok(linear.root !== undefined);
  });

  test("start without an id gets a UUID", async () => {
    const instance = await client.start("linear");
    assert.match(instance.id, /^[0-9a-f-]{36}$/);
  });

  test("transition answers with what fired", async () => {
    const { id } = await client.start("chain", undefined, { wait: "settled" });
    const result = await client.transition(id, "go", { step: 1 }, { wait: "settled" });
    assert.equal(result.fired.length, 1);
    assert.deepEqual(
      [result.fired[0].label, result.fired[0].sources, result.fired[0].targets],
      ["go", ["chain.a"], ["chain.b"]],
    );
    assert.ok(result.workItemId);
    assert.deepEqual(result.instance?.activeStates, ["chain", "chain.b"]);
    assert.deepEqual(result.instance?.state?.b?.runs, [{ step: 1 }]);

    const enqueued = await client.transition(id, "go", undefined, { wait: "enqueued" });
    assert.deepEqual(enqueued.fired, []);
  });

  test("update state, atomic append and history", async () => {
    const { id } = await client.start("linear", undefined, { wait: "settled" });
    const updated = await client.updateState(id, { order: { total: 1 }, tags: [], note: null });
    assert.deepEqual(updated.instance?.state?.order, { total: 1 });
    assert.equal(updated.instance?.state?.note, null);
    await client.updateState(id, { "order.total": 12.5 });

    const appended = await client.atomicAppend(id, "tags", "urgent");
    assert.deepEqual(appended.values, ["urgent"]);
    const again = await client.atomicAppend(id, "tags", { by: "ops", ok: true });
    assert.deepEqual(again.values, ["urgent", { by: "ops", ok: true }]);
    assert.equal(again.revision, appended.revision + 1);
    assert.equal(again.length, 2);
    const counted = await client.atomicAppend(id, "tags", "third", { values: false });
    assert.deepEqual([counted.values, counted.length, counted.revision], [[], 3, again.revision + 1]);
    const leaf = await client.atomicAppend(id, "runs", { manual: true }, { fqn: "linear.a" });
    assert.deepEqual(leaf.values.at(-1), { manual: true });

    const state = (await client.getInstance(id)).state;
    assert.deepEqual(state?.order, { total: 12.5 });
    assert.deepEqual(state?.tags, ["urgent", { by: "ops", ok: true }, "third"]);

    const page = await client.getHistory(id, { pageSize: 2 });
    assert.deepEqual(page.events.map((e) => e.revision), [1, 2]);
    assert.ok(page.nextPageToken);
    assert.equal(page.currentRevision, leaf.revision);
    const events = [];
    for await (const event of client.iterHistory(id, { pageSize: 2 })) {
      events.push(event);
    }
    assert.deepEqual(
      events.map((e) => e.revision),
      Array.from({ length: leaf.revision }, (_, i) => i + 1),
    );
    assert.equal(events[0].kind, EventKind.EVENT_KIND_STARTED);
    assert.equal(events.filter((e) => e.kind === EventKind.EVENT_KIND_STATE_UPDATED).length, 2);
    assert.equal(events.filter((e) => e.kind === EventKind.EVENT_KIND_APPENDED).length, 4);
  });

  test("retry errors with nothing failed retries nothing", async () => {
    const { id } = await client.start("linear", undefined, { wait: "settled" });
    const result = await client.retryErrors(id);
    assert.deepEqual(result.retriedWorkItemIds, []);
  });

  test("the same request id twice has one effect", async () => {
    const { id } = await client.start("linear", undefined, { wait: "settled" });
    const requestId = randomUUID();
    const first = await client.atomicAppend(id, "runs", "once", { requestId });
    const second = await client.atomicAppend(id, "runs", "once", { requestId });
    assert.equal(second.revision, first.revision);
    assert.deepEqual(second.values, first.values);
    const history = await client.getHistory(id);
    const requestIds = history.events.map((e) => e.requestId);
    assert.equal(requestIds.filter((r) => r === requestId).length, 1);
    // every mutation without an explicit id carries a fresh one
    const auto = requestIds.filter((r) => r && r !== requestId);
    assert.equal(new Set(auto).size, auto.length);
    assert.ok(auto.length >= 1);
  });
});

describe("errors", () => {
  test("an unknown machine is NOT_FOUND MACHINE_NOT_FOUND", async () => {
    const error = await rejection(client.start("no_such_machine"));
    assert.equal(error.code, Status.NOT_FOUND);
    assert.equal(error.codeName, "NOT_FOUND");
    assert.equal(error.reason, "ERROR_REASON_MACHINE_NOT_FOUND");
    assert.equal(error.domain, "flou.v1");
    assert.equal(error.metadata.machine, "no_such_machine");
  });

  test("an unknown instance is NOT_FOUND with its resource", async () => {
    const error = await rejection(client.getInstance("missing-instance"));
    assert.equal(error.reason, "ERROR_REASON_INSTANCE_NOT_FOUND");
    assert.equal(error.metadata.instanceId, "missing-instance");
    assert.equal(error.resource?.resourceName, "missing-instance");
  });

  test("an instance id that is taken is ALREADY_EXISTS", async () => {
    const { id } = await client.start("linear");
    const error = await rejection(client.start("linear", { other: 1 }, { instanceId: id }));
    assert.equal(error.code, Status.ALREADY_EXISTS);
    assert.equal(error.reason, "ERROR_REASON_INSTANCE_ALREADY_EXISTS");
  });

  test("a transition that cannot fire is FAILED_PRECONDITION", async () => {
    const { id } = await client.start("linear", undefined, { wait: "settled" });
    const error = await rejection(client.transition(id, "nope"));
    assert.equal(error.code, Status.FAILED_PRECONDITION);
    assert.equal(error.reason, "ERROR_REASON_TRANSITION_NOT_ALLOWED");
    assert.equal(error.metadata.label, "nope");
    assert.equal(error.metadata.activeStates, "linear,linear.a");
  });

  test("a stale expected revision is ABORTED REVISION_CONFLICT", async () => {
    const instance = await client.start("linear", undefined, { wait: "settled" });
    const error = await rejection(
      client.transition(instance.id, "go", undefined, { expectedRevision: instance.revision - 1 }),
    );
    assert.equal(error.code, Status.ABORTED);
    assert.equal(error.reason, "ERROR_REASON_REVISION_CONFLICT");
    assert.equal(error.metadata.expectedRevision, String(instance.revision - 1));
  });

  test("an invalid field names the field", async () => {
    const error = await rejection(client.start("linear", undefined, { instanceId: "bad id!" }));
    assert.equal(error.code, Status.INVALID_ARGUMENT);
    assert.equal(error.reason, "ERROR_REASON_INVALID_FIELD");
    assert.equal(error.metadata.field, "instance_id");
    assert.deepEqual(
      error.fieldViolations.map((v) => v.field),
      ["instance_id"],
    );
  });

  test("a request id reused with another body is refused", async () => {
    const { id } = await client.start("linear", undefined, { wait: "settled" });
    const requestId = randomUUID();
    await client.updateState(id, { total: 1 }, { requestId });
    const error = await rejection(client.updateState(id, { total: 2 }, { requestId }));
    assert.equal(error.reason, "ERROR_REASON_REQUEST_ID_REUSED");
    assert.equal(error.metadata.requestId, requestId);
  });

  test("an unreachable server fails UNAVAILABLE after its retries, within the deadline", async () => {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const { port } = closed.address() as net.AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const down = new FlouClient(`127.0.0.1:${port}`, {
      timeoutMs: 3000,
      retry: { maxAttempts: 3, initialBackoffMs: 10, maxBackoffMs: 50 },
    });
    try {
      const started = Date.now();
      const error = await rejection(down.getInstance("x"));
      assert.ok([Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED].includes(error.code), error.toString());
      assert.equal(error.reason, "");
      assert.ok(Date.now() - started < 5000);
    } finally {
      down.close();
    }
  });
});

describe("watch", () => {
  test("yields the snapshot, then every event live, then stops when asked", async () => {
    const { id, revision } = await client.start("chain", undefined, { wait: "settled" });
    const watch = client.watch(id, 0, { heartbeatIntervalMs: 200 });
    const first = await collect(watch, (items) => items.length === 1);
    assert.equal(first[0].kind, "snapshot");
    assert.equal(first[0].kind === "snapshot" && first[0].instance.revision, revision);

    const moved = await client.transition(id, "go", undefined, { wait: "settled" });
    const items = await collect(watch, (got) => revisions(got).at(-1) === moved.instance?.revision);
    assert.deepEqual(
      revisions(items),
      Array.from({ length: (moved.instance?.revision ?? 0) - revision }, (_, i) => revision + 1 + i),
    );
    const kinds = items.flatMap((i) => (i.kind === "event" ? [i.event.kind] : []));
    assert.equal(kinds[0], EventKind.EVENT_KIND_TRANSITIONED);
    const beat = await collect(watch, (got) => got.some((i) => i.kind === "heartbeat"));
    assert.ok(beat.length >= 1);
    await watch.return();
  });

  test("from a past revision replays the history", async () => {
    const { id, revision } = await client.start("linear", undefined, { wait: "settled" });
    const watch = client.watch(id, 1);
    const items = await collect(watch, (got) => revisions(got).at(-1) === revision);
    assert.equal(items[0].kind, "snapshot");
    assert.equal(items[0].kind === "snapshot" && items[0].instance.revision, 1);
    assert.deepEqual(
      revisions(items),
      Array.from({ length: revision - 1 }, (_, i) => i + 2),
    );
    await watch.return();
  });

  test("of an unknown instance throws at once", async () => {
    const watch = client.watch("missing-watch");
    const error = await rejection(watch.next());
    assert.equal(error.code, Status.NOT_FOUND);
    assert.equal(error.reason, "ERROR_REASON_INSTANCE_NOT_FOUND");
  });

  test("resumes after the connection drops, with no gap and no duplicate", async () => {
    // A TCP proxy in front of the server: cutting its connections breaks the stream
    // (UNAVAILABLE); the watch reconnects through it and resumes.
    const sockets = new Set<net.Socket>();
    let connections = 0;
    const proxy = net.createServer((inbound) => {
      connections += 1;
      const outbound = net.connect(PORT, HOST);
      for (const socket of [inbound, outbound]) {
        sockets.add(socket);
        socket.on("error", () => undefined);
        socket.on("close", () => sockets.delete(socket));
      }
      inbound.pipe(outbound).pipe(inbound);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    const { port } = proxy.address() as net.AddressInfo;
    const watcher = new FlouClient(`127.0.0.1:${port}`, {
      retry: { maxAttempts: 10, initialBackoffMs: 50, maxBackoffMs: 500 },
      channelOptions: {
        "grpc.initial_reconnect_backoff_ms": 50,
        "grpc.max_reconnect_backoff_ms": 500,
      },
    });
    try {
      const { id, revision } = await client.start("linear", undefined, { wait: "settled" });
      const watch = watcher.watch(id, 0, { heartbeatIntervalMs: 200 });
      const items = await collect(watch, (got) => got.length === 1);
      assert.equal(items[0].kind, "snapshot");

      let last = revision;
      for (let round = 0; round < 3; round += 1) {
        last = (await client.atomicAppend(id, "runs", { round, before: true })).revision;
        items.push(...(await collect(watch, (got) => revisions(got).at(-1) === last)));
        for (const socket of sockets) {
          socket.destroy(); // the connection drops mid-stream
        }
        // events committed while the watcher is disconnected
        last = (await client.atomicAppend(id, "runs", { round, during: true })).revision;
        last = (await client.updateState(id, { round }, { fqn: "linear.a" })).instance?.revision ?? 0;
      }
      items.push(...(await collect(watch, (got) => revisions(got).at(-1) === last)));
      await watch.return();

      assert.equal(items.filter((i) => i.kind === "snapshot").length, 1);
      assert.deepEqual(
        revisions(items),
        Array.from({ length: last - revision }, (_, i) => revision + 1 + i),
      );
      assert.ok(connections >= 4, `the watch reconnected ${connections - 1} times`);
      assert.ok(watcher.watchStreams >= 4, `${watcher.watchStreams} streams`);
    } finally {
      watcher.close();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => proxy.close(() => resolve()));
    }
  });
});
