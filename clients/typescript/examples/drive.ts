/**
 * Drive: the Node side of the cross-language test and of the client benchmark
 * (tests/integration/clients/test_cross_language.py, bench/clients_bench.py).
 *
 *   node dist/examples/drive.js --addr 127.0.0.1:PORT --instance ID --mode append --prefix ts --n 50
 *   node dist/examples/drive.js --addr 127.0.0.1:PORT --instance ID --mode latency --label again --warmup 30 --n 300
 *
 * It makes one read to open the channel, prints "ready" and waits for a line on
 * stdin (so that the drivers of every language start together), then:
 *   - append: atomicAppend of "PREFIX-1".."PREFIX-N" to the root's list `--key`;
 *   - latency: N sequential transitions of `--label` (wait: processed) after
 *     `--warmup` unmeasured ones.
 * It ends with one JSON line: {"sent": N, "revisions": [...]} for append,
 * {"latencies_ms": [...]} for latency.
 */

import { once } from "node:events";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

import { InstanceView } from "../gen/flou/v1/instance";
import { FlouClient } from "../src";

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      addr: { type: "string", default: "127.0.0.1:50051" },
      instance: { type: "string", default: "" },
      mode: { type: "string", default: "append" },
      prefix: { type: "string", default: "ts" },
      key: { type: "string", default: "items" },
      label: { type: "string", default: "again" },
      n: { type: "string", default: "50" },
      warmup: { type: "string", default: "30" },
    },
  });
  const n = Number(args.n);
  const warmup = Number(args.warmup);
  const instance = args.instance;
  const flou = new FlouClient(args.addr, { timeoutMs: 20_000 });
  try {
    await flou.getInstance(instance, { view: InstanceView.INSTANCE_VIEW_BASIC });
    console.log("ready");
    const lines = createInterface({ input: process.stdin });
    await once(lines, "line");
    lines.close();

    let out: Record<string, unknown>;
    if (args.mode === "append") {
      const revisions: number[] = [];
      for (let i = 1; i <= n; i++) {
        const { revision } = await flou.atomicAppend(instance, args.key, `${args.prefix}-${i}`);
        revisions.push(revision);
      }
      out = { sent: n, revisions };
    } else if (args.mode === "latency") {
      const latencies: number[] = [];
      for (let i = 0; i < warmup + n; i++) {
        const began = performance.now();
        await flou.transition(instance, args.label, undefined, { wait: "processed" });
        if (i >= warmup) latencies.push(performance.now() - began);
      }
      out = { latencies_ms: latencies };
    } else {
      throw new Error(`unknown --mode ${args.mode}`);
    }
    console.log(JSON.stringify(out));
  } finally {
    flou.close();
  }
}

main().catch((error: unknown) => {
  console.error("drive(ts):", error);
  process.exit(1);
});
