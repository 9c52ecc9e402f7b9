export {
  DEFAULT_RETRY,
  FlouClient,
  resumable,
  type AtomicAppendOpts,
  type CallOpts,
  type FeedItem,
  type FlouClientOptions,
  type GetHistoryOpts,
  type Json,
  type JsonObject,
  type ListInstancesOpts,
  type MutationOpts,
  type RetryPolicy,
  type StartOpts,
  type TransitionOpts,
  type UpdateStateOpts,
  type Wait,
  type WatchItem,
  type WatchOpts,
} from "./client";
export {
  DOMAIN,
  FlouError,
  Status,
  toFlouError,
  WatchGapError,
  type FieldViolation,
  type FlouErrorInit,
  type ResourceRef,
} from "./errors";
export { ErrorReason, errorReasonToJSON } from "../gen/flou/v1/error_reason";
export type {
  FiredTransition,
  Rejection,
  StepError,
} from "../gen/flou/v1/instance";
export {
  EventKind,
  eventKindToJSON,
  InstanceStatus,
  instanceStatusToJSON,
  InstanceView,
  type Event,
  type Instance,
} from "../gen/flou/v1/instance";
export type { Machine, Node } from "../gen/flou/v1/machine";
export type {
  GetHistoryResponse,
  Heartbeat,
  ListInstancesResponse,
  ListMachinesResponse,
  RetryErrorsResponse,
  TransitionResponse,
  UpdateStateResponse,
} from "../gen/flou/v1/flou_service";
