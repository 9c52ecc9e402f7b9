package flou

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the domain of every google.rpc.ErrorInfo the server sends.
const ErrorDomain = "flou.v1"

// Error is every error the server answers with: its gRPC code, the reason of
// its google.rpc.ErrorInfo (a flou.v1.ErrorReason name such as
// "ERROR_REASON_INSTANCE_NOT_FOUND"; empty when the error did not come from
// the server, e.g. a connection failure) and the ErrorInfo's metadata.
//
// Match it with errors.As, or with the helpers ReasonOf and CodeOf.
type Error struct {
	Code     codes.Code
	Reason   string
	Domain   string
	Message  string
	Metadata map[string]string
	// RetryDelay is the server's google.rpc.RetryInfo delay, zero if none.
	RetryDelay time.Duration
	// Status is the whole status, for the other details (BadRequest, ResourceInfo).
	Status *status.Status
}

func (e *Error) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("flou: %s %s: %s", e.Code, e.Reason, e.Message)
	}
	return fmt.Sprintf("flou: %s: %s", e.Code, e.Message)
}

// GRPCStatus lets status.FromError / status.Code read the original status.
func (e *Error) GRPCStatus() *status.Status { return e.Status }

// Is matches another *Error by code and reason (an empty reason matches any).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return t.Code == e.Code && (t.Reason == "" || t.Reason == e.Reason)
}

// ReasonOf returns the ErrorInfo reason of err ("" if it has none).
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// CodeOf returns the gRPC code of err (codes.OK for nil, codes.Unknown for a
// non-gRPC error).
func CodeOf(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return status.Code(err)
}

// wrap converts an error of a gRPC call into an *Error (nil stays nil, io.EOF
// stays io.EOF).
func wrap(err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			st = status.New(codes.DeadlineExceeded, err.Error())
		case errors.Is(err, context.Canceled):
			st = status.New(codes.Canceled, err.Error())
		default:
			st = status.New(codes.Unknown, err.Error())
		}
	}
	e := &Error{Code: st.Code(), Message: st.Message(), Metadata: map[string]string{}, Status: st}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			e.Reason, e.Domain = d.GetReason(), d.GetDomain()
			for k, v := range d.GetMetadata() {
				e.Metadata[k] = v
			}
		case *errdetails.RetryInfo:
			if d.GetRetryDelay() != nil {
				e.RetryDelay = d.GetRetryDelay().AsDuration()
			}
		}
	}
	return e
}
