/**
 * `FlouClient`: every RPC of `flou.v1.FlouService` as an async method, with plain
 * JS values for JSON (the generated code converts `Struct`/`Value`/`ListValue`),
 * a `requestId` on every mutation (so a retry is answered once), retries on
 * UNAVAILABLE only (jittered exponential backoff, never past the call's
 * deadline), `FlouError`s decoded from the `ErrorInfo` trailer, and a `watch`
 * that resumes after the last revision it delivered.
 */

import { randomUUID } from "node:crypto";

import {
  type CallOptions,
  type ChannelCredentials,
  type ClientOptions,
  type ClientReadableStream,
  type ClientUnaryCall,
  credentials as grpcCredentials,
  Metadata,
  type ServiceError,
  status as Status,
} from "@grpc/grpc-js";

import {
  AppendView,
  AtomicAppendRequest,
  type AtomicAppendResponse,
  DescribeMachineRequest,
  type DescribeMachineResponse,
  FlouServiceClient,
  GetHistoryRequest,
  type GetHistoryResponse,
  GetInstanceRequest,
  type GetInstanceResponse,
  type Heartbeat,
  ListInstancesRequest,
  type ListInstancesResponse,
  ListMachinesRequest,
  type ListMachinesResponse,
  RetryErrorsRequest,
  type RetryErrorsResponse,
  StartRequest,
  type StartResponse,
  TransitionRequest,
  type TransitionResponse,
  UpdateStateRequest,
  type UpdateStateResponse,
  WaitMode,
  WatchInstancesRequest,
  type WatchInstancesResponse,
  WatchRequest,
  type WatchResponse,
} from "../gen/flou/v1/flou_service";
import { type Event, type Instance, InstanceStatus, InstanceView } from "../gen/flou/v1/instance";
import type { Machine } from "../gen/flou/v1/machine";
import { FlouError, toFlouError, WatchGapError } from "./errors";

/** A JSON value as the service carries it (`google.protobuf.Value`). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** A JSON object (`google.protobuf.Struct`). */
export type JsonObject = { [key: string]: Json };

/** When a mutation answers: see `flou.v1.WaitMode`. */
export type Wait = "enqueued" | "processed" | "settled";

const WAIT_MODES: Record<Wait, WaitMode> = {
  enqueued: WaitMode.WAIT_MODE_ENQUEUED,
  processed: WaitMode.WAIT_MODE_PROCESSED,
  settled: WaitMode.WAIT_MODE_SETTLED,
};

/** Retries of UNAVAILABLE answers (and reconnections of a broken watch). */
export interface RetryPolicy {
  /** Attempts in all, the first included (1: never retry). Default 5. */
  maxAttempts: number;
  /** The ceiling of the first backoff, in ms (full jitter). Default 100. */
  initialBackoffMs: number;
  /** The largest backoff, in ms. Default 5000. */
  maxBackoffMs: number;
  /** Each backoff's ceiling is the previous one's times this. Default 2. */
  multiplier: number;
}

export const DEFAULT_RETRY: Readonly<RetryPolicy> = Object.freeze({
  maxAttempts: 5,
  initialBackoffMs: 100,
  maxBackoffMs: 5000,
  multiplier: 2,
});

export interface FlouClientOptions {
  /** Channel credentials; default insecure (plaintext, for loopback). */
  credentials?: ChannelCredentials;
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** The deadline of each call (all its attempts), in ms. Default 30000. */
  timeoutMs?: number;
  /** Overrides of `DEFAULT_RETRY`. */
  retry?: Partial<RetryPolicy>;
  /** grpc-js channel options (`grpc.keepalive_time_ms`, ...). */
  channelOptions?: Partial<ClientOptions>;
}

/** Options every call takes. */
export interface CallOpts {
  /** This call's deadline in ms (overrides the client's `timeoutMs`). */
  timeoutMs?: number;
}

/** Options every mutation takes. */
export interface MutationOpts extends CallOpts {
  /** Makes the call idempotent; default a fresh `crypto.randomUUID()`. */
  requestId?: string;
}

export interface StartOpts extends MutationOpts {
  /** The new instance's id; default: the server assigns a UUID. */
  instanceId?: string;
  /** Default "processed" (the instance exists). */
  wait?: Wait;
}

export interface TransitionOpts extends MutationOpts {
  /** One map per concurrent lane binding the `{param}` fields of the label and targets. */
  params?: Array<Record<string, string | number>>;
  /** The namespace of the transition; default the root's name. */
  namespace?: string;
  /** When not 0: ABORTED `ERROR_REASON_REVISION_CONFLICT` unless the revision is still this. */
  expectedRevision?: number;
  /** Default "processed". */
  wait?: Wait;
}

export interface UpdateStateOpts extends MutationOpts {
  /** The node whose keys are set; default the root. */
  fqn?: string;
  expectedRevision?: number;
  wait?: Wait;
}

export interface AtomicAppendOpts extends MutationOpts {
  /** The node holding the list; default the root. */
  fqn?: string;
  /** false: answer the list's length only (APPEND_VIEW_BASIC), however long it grows. */
  values?: boolean;
}

export interface ListInstancesOpts extends CallOpts {
  machine?: string;
  status?: InstanceStatus;
  pageSize?: number;
  pageToken?: string;
  view?: InstanceView;
}

export interface GetHistoryOpts extends CallOpts {
  fromRevision?: number;
  pageSize?: number;
  pageToken?: string;
}

export interface WatchOpts {
  /** How often the server sends a heartbeat while nothing happens, in ms. */
  heartbeatIntervalMs?: number;
  /** Ends the watch (the iterator returns). */
  signal?: AbortSignal;
}

/** What `watch` delivers: the snapshot once, then events in revision order, and heartbeats. */
export type WatchItem =
  | { kind: "snapshot"; instance: Instance }
  | { kind: "event"; event: Event }
  | { kind: "heartbeat"; heartbeat: Heartbeat };

/** What `watchInstances` delivers. */
export type FeedItem = { kind: "event"; event: Event } | { kind: "heartbeat"; heartbeat: Heartbeat };

type Callback<Res> = (error: ServiceError | null, response: Res) => void;
type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: Callback<Res>,
) => ClientUnaryCall;

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) {
      resolve();
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

function durationOf(ms: number): { seconds: number; nanos: number } {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/** Whether a broken watch stream is resumed: UNAVAILABLE, or a slow watcher the server closed. */
export function resumable(error: FlouError): boolean {
  return (
    error.code === Status.UNAVAILABLE ||
    (error.code === Status.RESOURCE_EXHAUSTED && error.reason === "ERROR_REASON_WATCHER_TOO_SLOW")
  );
}

export class FlouClient {
  /** The generated @grpc/grpc-js client, for anything the wrapper does not cover. */
  readonly stub: FlouServiceClient;
  readonly timeoutMs: number;
  readonly retry: Readonly<RetryPolicy>;
  /** How many streams `watch` calls opened so far (reconnections included). */
  watchStreams = 0;
  private readonly token: string | undefined;

  constructor(address: string, options: FlouClientOptions = {}) {
    this.stub = new FlouServiceClient(
      address,
      options.credentials ?? grpcCredentials.createInsecure(),
      options.channelOptions,
    );
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.retry = Object.freeze({ ...DEFAULT_RETRY, ...options.retry });
    if (this.retry.maxAttempts < 1) {
      throw new RangeError("retry.maxAttempts must be at least 1");
    }
    this.token = options.token;
  }

  /** Closes the channel; calls in flight fail with CANCELLED. */
  close(): void {
    this.stub.close();
  }

  // ---------------------------------------------------------------- mutations

  /** Creates an instance of `machine` and runs its root with `payload`. */
  async start(machine: string, payload?: JsonObject, opts: StartOpts = {}): Promise<Instance> {
    const request = StartRequest.fromPartial({
      machine,
      payload,
      instanceId: opts.instanceId ?? "",
      requestId: opts.requestId ?? randomUUID(),
      wait: this.wait(opts.wait),
    });
    const response = await this.unary<StartRequest, StartResponse>((r, m, o, cb) => this.stub.start(r, m, o, cb), request, opts);
    return this.required(response.instance, "StartResponse.instance");
  }

  /** Sends the event `label` to an instance; answers with the transitions that fired. */
  async transition(
    instanceId: string,
    label: string,
    payload?: JsonObject,
    opts: TransitionOpts = {},
  ): Promise<TransitionResponse> {
    const request = TransitionRequest.fromPartial({
      instanceId,
      label,
      payload,
      params: opts.params,
      namespace: opts.namespace ?? "",
      requestId: opts.requestId ?? randomUUID(),
      expectedRevision: opts.expectedRevision ?? 0,
      wait: this.wait(opts.wait),
    });
    return this.unary<TransitionRequest, TransitionResponse>((r, m, o, cb) => this.stub.transition(r, m, o, cb), request, opts);
  }

  /** Sets dotted keys of a node's state (`{"order.total": 12.5}`). */
  async updateState(
    instanceId: string,
    updates: Record<string, Json>,
    opts: UpdateStateOpts = {},
  ): Promise<UpdateStateResponse> {
    const request = UpdateStateRequest.fromPartial({
      instanceId,
      fqn: opts.fqn ?? "",
      updates,
      requestId: opts.requestId ?? randomUUID(),
      expectedRevision: opts.expectedRevision ?? 0,
      wait: this.wait(opts.wait),
    });
    return this.unary<UpdateStateRequest, UpdateStateResponse>((r, m, o, cb) => this.stub.updateState(r, m, o, cb), request, opts);
  }

  /** Appends `value` to the list at `key`, at once; answers with the whole list and the revision. */
  async atomicAppend(
    instanceId: string,
    key: string,
    value: Json,
    opts: AtomicAppendOpts = {},
  ): Promise<{ values: Json[]; revision: number; length: number }> {
    const request = AtomicAppendRequest.fromPartial({
      instanceId,
      fqn: opts.fqn ?? "",
      key,
      value,
      requestId: opts.requestId ?? randomUUID(),
      view: opts.values === false ? AppendView.APPEND_VIEW_BASIC : AppendView.APPEND_VIEW_FULL,
    });
    const response = await this.unary<AtomicAppendRequest, AtomicAppendResponse>(
      (r, m, o, cb) => this.stub.atomicAppend(r, m, o, cb),
      request,
      opts,
    );
    return {
      values: (response.values ?? []) as Json[],
      revision: response.revision,
      length: response.length,
    };
  }

  /** Schedules again the failed steps of an instance (all of them when `workItemIds` is empty). */
  async retryErrors(
    instanceId: string,
    workItemIds: string[] = [],
    opts: MutationOpts = {},
  ): Promise<RetryErrorsResponse> {
    const request = RetryErrorsRequest.fromPartial({
      instanceId,
      workItemIds,
      requestId: opts.requestId ?? randomUUID(),
    });
    return this.unary<RetryErrorsRequest, RetryErrorsResponse>((r, m, o, cb) => this.stub.retryErrors(r, m, o, cb), request, opts);
  }

  // ------------------------------------------------------------------- reads

  async getInstance(
    instanceId: string,
    opts: CallOpts & { view?: InstanceView } = {},
  ): Promise<Instance> {
    const request = GetInstanceRequest.fromPartial({ instanceId, view: opts.view });
    const response = await this.unary<GetInstanceRequest, GetInstanceResponse>(
      (r, m, o, cb) => this.stub.getInstance(r, m, o, cb),
      request,
      opts,
    );
    return this.required(response.instance, "GetInstanceResponse.instance");
  }

  async listInstances(opts: ListInstancesOpts = {}): Promise<ListInstancesResponse> {
    const request = ListInstancesRequest.fromPartial({
      machine: opts.machine,
      status: opts.status,
      pageSize: opts.pageSize,
      pageToken: opts.pageToken,
      view: opts.view,
    });
    return this.unary<ListInstancesRequest, ListInstancesResponse>((r, m, o, cb) => this.stub.listInstances(r, m, o, cb), request, opts);
  }

  async getHistory(instanceId: string, opts: GetHistoryOpts = {}): Promise<GetHistoryResponse> {
    const request = GetHistoryRequest.fromPartial({
      instanceId,
      fromRevision: opts.fromRevision,
      pageSize: opts.pageSize,
      pageToken: opts.pageToken,
    });
    return this.unary<GetHistoryRequest, GetHistoryResponse>((r, m, o, cb) => this.stub.getHistory(r, m, o, cb), request, opts);
  }

  /** Every event of an instance from `fromRevision` on, page after page. */
  async *iterHistory(instanceId: string, opts: GetHistoryOpts = {}): AsyncGenerator<Event> {
    let pageToken = opts.pageToken ?? "";
    do {
      const page = await this.getHistory(instanceId, { ...opts, pageToken });
      yield* page.events;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  async listMachines(
    opts: CallOpts & { pageSize?: number; pageToken?: string } = {},
  ): Promise<ListMachinesResponse> {
    const request = ListMachinesRequest.fromPartial({
      pageSize: opts.pageSize,
      pageToken: opts.pageToken,
    });
    return this.unary<ListMachinesRequest, ListMachinesResponse>((r, m, o, cb) => this.stub.listMachines(r, m, o, cb), request, opts);
  }

  async describeMachine(machine: string, opts: CallOpts = {}): Promise<Machine> {
    const request = DescribeMachineRequest.fromPartial({ machine });
    const response = await this.unary<DescribeMachineRequest, DescribeMachineResponse>(
      (r, m, o, cb) => this.stub.describeMachine(r, m, o, cb),
      request,
      opts,
    );
    return this.required(response.machine, "DescribeMachineResponse.machine");
  }

  // ----------------------------------------------------------------- streams

  /**
   * The snapshot of an instance at `fromRevision` (0: now), then every later event in
   * revision order, and heartbeats while nothing happens. When the stream breaks
   * (UNAVAILABLE: the server restarts or the connection drops; or it closed a watcher
   * that fell behind) it reconnects with backoff from the last revision delivered,
   * drops the repeated snapshot and the events already delivered: no gap, no
   * duplicate. Ends when the consumer stops iterating or `opts.signal` aborts.
   *
   * @throws FlouError (NOT_FOUND, OUT_OF_RANGE, ...) at once; UNAVAILABLE after
   *   `retry.maxAttempts` failed reconnections in a row; WatchGapError if the
   *   server skipped revisions.
   */
  async *watch(
    instanceId: string,
    fromRevision = 0,
    opts: WatchOpts = {},
  ): AsyncGenerator<WatchItem, void, undefined> {
    let last: number | undefined;
    let failures = 0;
    while (!opts.signal?.aborted) {
      const request = WatchRequest.fromPartial({
        instanceId,
        fromRevision: last ?? fromRevision,
        heartbeatInterval:
          opts.heartbeatIntervalMs === undefined ? undefined : durationOf(opts.heartbeatIntervalMs),
      });
      this.watchStreams += 1;
      const call = this.stub.watch(request, this.metadata());
      let error: FlouError;
      try {
        for await (const message of this.messages<WatchResponse>(call, opts.signal)) {
          failures = 0;
          if (message.snapshot !== undefined) {
            const revision = message.snapshot.revision;
            if (last === undefined) {
              last = revision;
              yield { kind: "snapshot", instance: message.snapshot };
            } else if (revision > last) {
              throw this.gap(instanceId, last, revision);
            }
          } else if (message.event !== undefined) {
            const revision = message.event.revision;
            if (last === undefined) {
              throw new WatchGapError(Status.DATA_LOSS, "an event came before the snapshot");
            }
            if (revision <= last) {
              continue; // already delivered by a previous stream
            }
            if (revision !== last + 1) {
              throw this.gap(instanceId, last, revision);
            }
            last = revision;
            yield { kind: "event", event: message.event };
          } else if (message.heartbeat !== undefined) {
            yield { kind: "heartbeat", heartbeat: message.heartbeat };
          }
        }
        if (opts.signal?.aborted) {
          return;
        }
        error = new FlouError(Status.UNAVAILABLE, `the watch stream of '${instanceId}' ended`);
      } catch (thrown) {
        if (thrown instanceof WatchGapError || opts.signal?.aborted) {
          if (thrown instanceof WatchGapError) throw thrown;
          return;
        }
        error = toFlouError(thrown);
        if (!resumable(error)) {
          throw error;
        }
      } finally {
        call.cancel();
      }
      failures += 1;
      if (failures >= this.retry.maxAttempts) {
        throw error;
      }
      await sleep(this.backoff(failures, error), opts.signal);
    }
  }

  /**
   * The events of every instance (or of `machine`'s) as they are committed, and
   * heartbeats. Live only: a break throws; read what was missed with `getHistory`.
   */
  async *watchInstances(
    machine = "",
    opts: WatchOpts = {},
  ): AsyncGenerator<FeedItem, void, undefined> {
    const request = WatchInstancesRequest.fromPartial({
      machine,
      heartbeatInterval:
        opts.heartbeatIntervalMs === undefined ? undefined : durationOf(opts.heartbeatIntervalMs),
    });
    const call = this.stub.watchInstances(request, this.metadata());
    try {
      for await (const message of this.messages<WatchInstancesResponse>(call, opts.signal)) {
        if (message.event !== undefined) {
          yield { kind: "event", event: message.event };
        } else if (message.heartbeat !== undefined) {
          yield { kind: "heartbeat", heartbeat: message.heartbeat };
        }
      }
    } catch (thrown) {
      if (opts.signal?.aborted) {
        return;
      }
      throw toFlouError(thrown);
    } finally {
      call.cancel();
    }
  }

  // ---------------------------------------------------------------- plumbing

  /** The messages of a server stream; cancelled when `signal` aborts. */
  private async *messages<T>(
    call: ClientReadableStream<T>,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<T> {
    // grpc-js emits 'error' (CANCELLED) on a stream we cancel: never let it go unhandled.
    call.on("error", () => undefined);
    const onAbort = (): void => call.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for await (const message of call as AsyncIterable<T>) {
        yield message;
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  private metadata(): Metadata {
    const metadata = new Metadata();
    if (this.token !== undefined) {
      metadata.set("authorization", `Bearer ${this.token}`);
    }
    return metadata;
  }

  private wait(wait: Wait | undefined): WaitMode {
    return wait === undefined ? WaitMode.WAIT_MODE_UNSPECIFIED : WAIT_MODES[wait];
  }

  private backoff(retry: number, error: FlouError): number {
    const { initialBackoffMs, maxBackoffMs, multiplier } = this.retry;
    const ceiling = Math.min(maxBackoffMs, initialBackoffMs * multiplier ** (retry - 1));
    let wait = Math.random() * ceiling;
    if (error.retryDelayMs !== undefined) {
      wait = Math.max(wait, Math.min(error.retryDelayMs, maxBackoffMs));
    }
    return wait;
  }

  /** One unary call with its attempts: retried on UNAVAILABLE only, within one deadline. */
  private async unary<Req, Res>(
    method: UnaryMethod<Req, Res>,
    request: Req,
    opts: CallOpts,
  ): Promise<Res> {
    const deadline = Date.now() + (opts.timeoutMs ?? this.timeoutMs);
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await new Promise<Res>((resolve, reject) => {
          method(request, this.metadata(), { deadline }, (error, response) =>
            error ? reject(error) : resolve(response),
          );
        });
      } catch (thrown) {
        const error = toFlouError(thrown);
        if (error.code !== Status.UNAVAILABLE || attempt >= this.retry.maxAttempts) {
          throw error;
        }
        const wait = this.backoff(attempt, error);
        if (Date.now() + wait >= deadline) {
          throw error;
        }
        await sleep(wait);
      }
    }
  }

  private required<T>(value: T | undefined, what: string): T {
    if (value === undefined) {
      throw new FlouError(Status.INTERNAL, `the server sent no ${what}`);
    }
    return value;
  }

  private gap(instanceId: string, last: number, revision: number): WatchGapError {
    return new WatchGapError(
      Status.DATA_LOSS,
      `watch of '${instanceId}' jumped from revision ${last} to ${revision}`,
      { metadata: { instanceId, lastRevision: String(last), revision: String(revision) } },
    );
  }
}
