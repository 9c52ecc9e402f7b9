import { eventKindToJSON, FlouClient, FlouError } from "../src";

async function main(): Promise<void> {
  const flou = new FlouClient(process.env.FLOU_ADDRESS ?? "127.0.0.1:50051");
  const order = await flou.start("order", { items: [{ sku: "mug", qty: 2 }], total: 42.5 }, { wait: "settled" });
  console.log(order.id, order.activeStates); // order.payment.authorize, order.stock.reserve

  const result = await flou.transition(order.id, "stock_reserved", { warehouse: "north" }, { namespace: "order.stock" });
  console.log(result.fired.map((f) => `${f.label}: ${f.sources} -> ${f.targets}`));
  try {
    await flou.transition(order.id, "delivered");
  } catch (error) {
    if (error instanceof FlouError) console.log(error.codeName, error.reason, error.metadata.activeStates);
  }
  for await (const item of flou.watch(order.id, 1)) { // the snapshot once, then every event, live
    if (item.kind === "event") console.log(item.event.revision, eventKindToJSON(item.event.kind), item.event.patch);
    if (item.kind === "heartbeat") break; // caught up: stop watching
  }
  flou.close();
}

main().catch((error) => { console.error(String(error)); process.exit(1); });
