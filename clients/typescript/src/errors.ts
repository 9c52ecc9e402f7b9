/**
 * Errors of the service as one typed `FlouError`.
 *
 * The server sends every error as a `google.rpc.Status` in the
 * `grpc-status-details-bin` trailer, with one `google.rpc.ErrorInfo` (domain
 * `flou.v1`, reason the name of a `flou.v1.ErrorReason` value such as
 * `ERROR_REASON_INSTANCE_NOT_FOUND`, lowerCamelCase metadata), plus a
 * `BadRequest` (field violations), `ResourceInfo` or `RetryInfo` where they fit.
 * `toFlouError` decodes them; an error that did not come from the service (a
 * client-side deadline, an unreachable server) has `reason` "".
 */

import { Metadata, status as Status, type ServiceError } from "@grpc/grpc-js";

import { BadRequest, ErrorInfo, ResourceInfo, RetryInfo } from "../gen/google/rpc/error_details";
import { Status as RpcStatus } from "../gen/google/rpc/status";

export { Status };

/** The `ErrorInfo.domain` of every error of the service. */
export const DOMAIN = "flou.v1";

const TYPE_PREFIX = "type.googleapis.com/";
const DETAILS_TRAILER = "grpc-status-details-bin";

/** One field a request got wrong (`google.rpc.BadRequest.FieldViolation`). */
export interface FieldViolation {
  field: string;
  description: string;
  reason: string;
}

/** The missing resource of a NOT_FOUND (`google.rpc.ResourceInfo`). */
export interface ResourceRef {
  resourceType: string;
  resourceName: string;
  owner: string;
  description: string;
}

export interface FlouErrorInit {
  reason?: string;
  domain?: string;
  metadata?: Record<string, string>;
  fieldViolations?: FieldViolation[];
  resource?: ResourceRef;
  retryDelayMs?: number;
  cause?: unknown;
}

/** A failed call: its gRPC status code and what the server's `ErrorInfo` says of it. */
export class FlouError extends Error {
  override readonly name = "FlouError";
  /** The gRPC status code (`Status.NOT_FOUND` = 5, ...). */
  readonly code: Status;
  /** The `ErrorInfo.reason` (a `flou.v1.ErrorReason` name), or "" when the server sent none. */
  readonly reason: string;
  /** The `ErrorInfo.domain` ("flou.v1"), or "". */
  readonly domain: string;
  /** The `ErrorInfo.metadata` (lowerCamelCase keys, documented per reason in error_reason.proto). */
  readonly metadata: Readonly<Record<string, string>>;
  /** The `BadRequest` field violations of an INVALID_ARGUMENT (empty otherwise). */
  readonly fieldViolations: readonly FieldViolation[];
  /** The `ResourceInfo` of a NOT_FOUND, when sent. */
  readonly resource: ResourceRef | undefined;
  /** The `RetryInfo` delay of an UNAVAILABLE, in milliseconds, when sent. */
  readonly retryDelayMs: number | undefined;

  constructor(code: Status, message: string, init: FlouErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.code = code;
    this.reason = init.reason ?? "";
    this.domain = init.domain ?? "";
    this.metadata = Object.freeze({ ...(init.metadata ?? {}) });
    this.fieldViolations = Object.freeze([...(init.fieldViolations ?? [])]);
    this.resource = init.resource;
    this.retryDelayMs = init.retryDelayMs;
  }

  /** The name of `code`: "NOT_FOUND", "UNAVAILABLE", ... */
  get codeName(): string {
    return Status[this.code] ?? String(this.code);
  }

  override toString(): string {
    const reason = this.reason ? ` ${this.reason}` : "";
    return `FlouError: ${this.codeName}${reason}: ${this.message}`;
  }
}

/** The server skipped revisions on a watch stream (a broken server: never resumed). */
export class WatchGapError extends FlouError {}

function isServiceError(error: unknown): error is ServiceError {
  return (
    error instanceof Error &&
    typeof (error as Partial<ServiceError>).code === "number" &&
    (error as Partial<ServiceError>).metadata instanceof Metadata
  );
}

/** The `FlouError` of whatever a call threw (a grpc-js `ServiceError` or anything else). */
export function toFlouError(error: unknown): FlouError {
  if (error instanceof FlouError) {
    return error;
  }
  if (!isServiceError(error)) {
    const message = error instanceof Error ? error.message : String(error);
    return new FlouError(Status.INTERNAL, message, { cause: error });
  }
  const init: FlouErrorInit = { cause: error };
  let message = error.details || error.message;
  for (const raw of error.metadata.get(DETAILS_TRAILER)) {
    try {
      const status = RpcStatus.decode(typeof raw === "string" ? Buffer.from(raw, "base64") : raw);
      if (status.message) {
        message = status.message;
      }
      for (const detail of status.details) {
        decodeDetail(detail.typeUrl, detail.value, init);
      }
    } catch {
      // A trailer that is not a google.rpc.Status: keep the bare status code.
    }
  }
  return new FlouError(error.code, message, init);
}

function decodeDetail(typeUrl: string, value: Uint8Array, init: FlouErrorInit): void {
  const type = typeUrl.startsWith(TYPE_PREFIX) ? typeUrl.slice(TYPE_PREFIX.length) : typeUrl;
  switch (type) {
    case "google.rpc.ErrorInfo": {
      const info = ErrorInfo.decode(value);
      init.reason = info.reason;
      init.domain = info.domain;
      init.metadata = { ...info.metadata };
      break;
    }
    case "google.rpc.BadRequest":
      init.fieldViolations = BadRequest.decode(value).fieldViolations.map((v) => ({
        field: v.field,
        description: v.description,
        reason: v.reason,
      }));
      break;
    case "google.rpc.ResourceInfo": {
      const info = ResourceInfo.decode(value);
      init.resource = {
        resourceType: info.resourceType,
        resourceName: info.resourceName,
        owner: info.owner,
        description: info.description,
      };
      break;
    }
    case "google.rpc.RetryInfo": {
      const delay = RetryInfo.decode(value).retryDelay;
      if (delay !== undefined) {
        init.retryDelayMs = delay.seconds * 1000 + delay.nanos / 1e6;
      }
      break;
    }
    default:
      break; // a detail this client does not read
  }
}
