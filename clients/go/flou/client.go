// Package flou is a thin client of the flou-grpc service (protos/flou/v1).
//
// Every RPC of flou.v1.FlouService is a method of Client. JSON goes in and
// out as map[string]any (through structpb); everything else is the generated
// messages of package flouv1. Mutations carry a request id (a random UUIDv4
// unless the caller gives one), so that the client can retry them safely: it
// retries, with jittered exponential backoff, only calls answered UNAVAILABLE.
// Errors are *Error values carrying the code, the ErrorInfo reason and its
// metadata. Watch resumes a broken stream by itself from the last revision it
// delivered, with no gap and no duplicate.
package flou

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	mrand "math/rand"
	"os"
	"time"

	flouv1 "github.com/flou-grpc/flou-grpc/clients/go/gen/flou/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Wait modes of Start, Transition and UpdateState (zero: the server's
// default, WAIT_MODE_PROCESSED).
const (
	WaitEnqueued  = flouv1.WaitMode_WAIT_MODE_ENQUEUED
	WaitProcessed = flouv1.WaitMode_WAIT_MODE_PROCESSED
	WaitSettled   = flouv1.WaitMode_WAIT_MODE_SETTLED
)

// RetryPolicy says how calls answered UNAVAILABLE are tried again: the n-th
// retry waits a random time between half and all of
// min(MaxBackoff, InitialBackoff * Multiplier^(n-1)), and at least the
// server's RetryInfo delay (capped at MaxBackoff).
type RetryPolicy struct {
	MaxAttempts    int // attempts in all, the first included; 1 disables retries
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Multiplier     float64
}

// DefaultRetryPolicy is the policy of a Client made without WithRetryPolicy.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 5, InitialBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second, Multiplier: 2}

func (p RetryPolicy) backoff(retry int, serverDelay time.Duration) time.Duration {
	ceiling := float64(p.InitialBackoff)
	for i := 1; i < retry; i++ {
		ceiling *= p.Multiplier
	}
	if ceiling > float64(p.MaxBackoff) {
		ceiling = float64(p.MaxBackoff)
	}
	wait := time.Duration(ceiling/2 + mrand.Float64()*ceiling/2)
	if serverDelay > p.MaxBackoff {
		serverDelay = p.MaxBackoff
	}
	if serverDelay > wait {
		wait = serverDelay
	}
	return wait
}

type options struct {
	token   string
	tls     *tls.Config
	timeout time.Duration
	retry   RetryPolicy
	dial    []grpc.DialOption
	err     error
}

// Option configures Dial.
type Option func(*options)

// WithToken sends "authorization: Bearer <token>" with every call.
func WithToken(token string) Option { return func(o *options) { o.token = token } }

// WithTLS connects with TLS using cfg (nil: the system's roots).
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) {
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.tls = cfg
	}
}

// WithRootCAFile connects with TLS, trusting the CA certificates of a PEM file.
func WithRootCAFile(path string) Option {
	return func(o *options) {
		pem, err := os.ReadFile(path)
		if err != nil {
			o.err = err
			return
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			o.err = fmt.Errorf("flou: no certificate in %s", path)
			return
		}
		if o.tls == nil {
			o.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.tls.RootCAs = pool
	}
}

// WithClientCertificate adds a client certificate for mutual TLS.
func WithClientCertificate(certFile, keyFile string) Option {
	return func(o *options) {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			o.err = err
			return
		}
		if o.tls == nil {
			o.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.tls.Certificates = append(o.tls.Certificates, cert)
	}
}

// WithTimeout bounds every unary call (all its attempts) whose context has no
// deadline. Default 30 s; 0 disables it. Watches are not bounded.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithRetryPolicy replaces DefaultRetryPolicy.
func WithRetryPolicy(p RetryPolicy) Option { return func(o *options) { o.retry = p } }

// WithDialOptions adds gRPC dial options (after the client's own).
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, opts...) }
}

// Client calls one flou-grpc server. It is safe for concurrent use.
type Client struct {
	conn    *grpc.ClientConn
	raw     flouv1.FlouServiceClient
	token   string
	timeout time.Duration
	retry   RetryPolicy
}

// Dial connects to target ("host:port"), lazily: errors show on the first call.
func Dial(target string, opts ...Option) (*Client, error) {
	o := options{timeout: 30 * time.Second, retry: DefaultRetryPolicy}
	for _, opt := range opts {
		opt(&o)
	}
	if o.err != nil {
		return nil, o.err
	}
	if o.retry.MaxAttempts < 1 {
		o.retry.MaxAttempts = 1
	}
	if o.retry.Multiplier < 1 {
		o.retry.Multiplier = 1
	}
	dial := []grpc.DialOption{
		// Reconnect quickly after the server went away (a restart, a failover).
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4 << 20)),
	}
	if o.tls != nil {
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(o.tls)))
	} else {
		dial = append(dial, grpc.WithInsecure())
	}
	conn, err := grpc.Dial(target, append(dial, o.dial...)...)
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, raw: flouv1.NewFlouServiceClient(conn), token: o.token, timeout: o.timeout, retry: o.retry}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Raw is the generated stub, for what the wrapper does not cover.
func (c *Client) Raw() flouv1.FlouServiceClient { return c.raw }

// NewRequestID returns a random UUIDv4.
func NewRequestID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (c *Client) outgoing(ctx context.Context) context.Context {
	if c.token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
}

// sleep waits d or until ctx is done; false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// call runs one unary RPC with the client's deadline, token and retries.
func call[T any](c *Client, ctx context.Context, rpc func(context.Context) (T, error)) (T, error) {
	if _, ok := ctx.Deadline(); !ok && c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	ctx = c.outgoing(ctx)
	for attempt := 1; ; attempt++ {
		out, err := rpc(ctx)
		if err == nil {
			return out, nil
		}
		err = wrap(err)
		var e *Error
		if !errors.As(err, &e) || e.Code != codes.Unavailable || attempt >= c.retry.MaxAttempts {
			return out, err
		}
		wait := c.retry.backoff(attempt, e.RetryDelay)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= wait {
			return out, err
		}
		if !sleep(ctx, wait) {
			return out, err
		}
	}
}

// ToStruct converts a JSON object to a google.protobuf.Struct (nil stays nil).
func ToStruct(m map[string]any) (*structpb.Struct, error) {
	if m == nil {
		return nil, nil
	}
	return structpb.NewStruct(m)
}

// AsMap converts a google.protobuf.Struct to a JSON object (nil stays nil).
func AsMap(s *structpb.Struct) map[string]any {
	if s == nil {
		return nil
	}
	return s.AsMap()
}

// State returns the JSON state of an instance (nil for a basic view).
func State(instance *flouv1.Instance) map[string]any { return AsMap(instance.GetState()) }

func orID(id string) string {
	if id == "" {
		return NewRequestID()
	}
	return id
}

// StartOptions are the optional fields of Start.
type StartOptions struct {
	InstanceID string // empty: the server assigns a UUIDv4
	RequestID  string // empty: a new UUIDv4, reused by the retries
	Wait       flouv1.WaitMode
}

// Start creates an instance of machine and queues its root with payload.
func (c *Client) Start(ctx context.Context, machine string, payload map[string]any, opts *StartOptions) (*flouv1.Instance, error) {
	if opts == nil {
		opts = &StartOptions{}
	}
	p, err := ToStruct(payload)
	if err != nil {
		return nil, err
	}
	req := &flouv1.StartRequest{Machine: machine, Payload: p, InstanceId: opts.InstanceID, RequestId: orID(opts.RequestID), Wait: opts.Wait}
	resp, err := call(c, ctx, func(ctx context.Context) (*flouv1.StartResponse, error) { return c.raw.Start(ctx, req) })
	return resp.GetInstance(), err
}

// TransitionOptions are the optional fields of Transition.
type TransitionOptions struct {
	Params           []map[string]any // one params map per lane of a parameterized label
	Namespace        string
	RequestID        string
	ExpectedRevision int64 // 0: no check
	Wait             flouv1.WaitMode
}

// Transition sends the event label (with payload) to an instance.
func (c *Client) Transition(ctx context.Context, instanceID, label string, payload map[string]any, opts *TransitionOptions) (*flouv1.TransitionResponse, error) {
	if opts == nil {
		opts = &TransitionOptions{}
	}
	p, err := ToStruct(payload)
	if err != nil {
		return nil, err
	}
	params := make([]*structpb.Struct, 0, len(opts.Params))
	for _, m := range opts.Params {
		s, err := structpb.NewStruct(m)
		if err != nil {
			return nil, err
		}
		params = append(params, s)
	}
	req := &flouv1.TransitionRequest{
		InstanceId: instanceID, Label: label, Payload: p, Params: params, Namespace: opts.Namespace,
		RequestId: orID(opts.RequestID), ExpectedRevision: opts.ExpectedRevision, Wait: opts.Wait,
	}
	return call(c, ctx, func(ctx context.Context) (*flouv1.TransitionResponse, error) { return c.raw.Transition(ctx, req) })
}

// UpdateOptions are the optional fields of UpdateState.
type UpdateOptions struct {
	Fqn              string // empty: the root
	RequestID        string
	ExpectedRevision int64
	Wait             flouv1.WaitMode
}

// UpdateState sets keys (dotted keys reach into objects) of a node's state.
func (c *Client) UpdateState(ctx context.Context, instanceID string, updates map[string]any, opts *UpdateOptions) (*flouv1.UpdateStateResponse, error) {
	if opts == nil {
		opts = &UpdateOptions{}
	}
	values := make(map[string]*structpb.Value, len(updates))
	for k, v := range updates {
		value, err := structpb.NewValue(v)
		if err != nil {
			return nil, fmt.Errorf("flou: update %q: %w", k, err)
		}
		values[k] = value
	}
	req := &flouv1.UpdateStateRequest{
		InstanceId: instanceID, Fqn: opts.Fqn, Updates: values, RequestId: orID(opts.RequestID),
		ExpectedRevision: opts.ExpectedRevision, Wait: opts.Wait,
	}
	return call(c, ctx, func(ctx context.Context) (*flouv1.UpdateStateResponse, error) { return c.raw.UpdateState(ctx, req) })
}

// AppendOptions are the optional fields of AtomicAppend.
type AppendOptions struct {
	Fqn       string // empty: the root
	RequestID string
}

// AtomicAppend appends value to the list at key; it returns the whole list
// after the append and the instance's revision.
func (c *Client) AtomicAppend(ctx context.Context, instanceID, key string, value any, opts *AppendOptions) ([]any, int64, error) {
	resp, err := c.atomicAppend(ctx, instanceID, key, value, opts, flouv1.AppendView_APPEND_VIEW_FULL)
	if err != nil {
		return nil, 0, err
	}
	return resp.GetValues().AsSlice(), resp.GetRevision(), nil
}

// AtomicAppendCount appends value to the list at key; it returns the list's
// length after the append and the instance's revision, not the list itself
// (APPEND_VIEW_BASIC): the call stays cheap however long the list grows.
func (c *Client) AtomicAppendCount(ctx context.Context, instanceID, key string, value any, opts *AppendOptions) (int64, int64, error) {
	resp, err := c.atomicAppend(ctx, instanceID, key, value, opts, flouv1.AppendView_APPEND_VIEW_BASIC)
	if err != nil {
		return 0, 0, err
	}
	return resp.GetLength(), resp.GetRevision(), nil
}

func (c *Client) atomicAppend(ctx context.Context, instanceID, key string, value any, opts *AppendOptions, view flouv1.AppendView) (*flouv1.AtomicAppendResponse, error) {
	if opts == nil {
		opts = &AppendOptions{}
	}
	v, err := structpb.NewValue(value)
	if err != nil {
		return nil, err
	}
	req := &flouv1.AtomicAppendRequest{InstanceId: instanceID, Fqn: opts.Fqn, Key: key, Value: v, RequestId: orID(opts.RequestID), View: view}
	return call(c, ctx, func(ctx context.Context) (*flouv1.AtomicAppendResponse, error) { return c.raw.AtomicAppend(ctx, req) })
}

// GetInstance returns an instance at its current revision (view 0: full).
func (c *Client) GetInstance(ctx context.Context, instanceID string, view flouv1.InstanceView) (*flouv1.Instance, error) {
	req := &flouv1.GetInstanceRequest{InstanceId: instanceID, View: view}
	resp, err := call(c, ctx, func(ctx context.Context) (*flouv1.GetInstanceResponse, error) { return c.raw.GetInstance(ctx, req) })
	return resp.GetInstance(), err
}

// ListInstances lists instances, newest first (one page).
func (c *Client) ListInstances(ctx context.Context, req *flouv1.ListInstancesRequest) (*flouv1.ListInstancesResponse, error) {
	if req == nil {
		req = &flouv1.ListInstancesRequest{}
	}
	return call(c, ctx, func(ctx context.Context) (*flouv1.ListInstancesResponse, error) { return c.raw.ListInstances(ctx, req) })
}

// GetHistory returns one page of an instance's events from fromRevision.
func (c *Client) GetHistory(ctx context.Context, instanceID string, fromRevision int64, pageSize int32, pageToken string) (*flouv1.GetHistoryResponse, error) {
	req := &flouv1.GetHistoryRequest{InstanceId: instanceID, FromRevision: fromRevision, PageSize: pageSize, PageToken: pageToken}
	return call(c, ctx, func(ctx context.Context) (*flouv1.GetHistoryResponse, error) { return c.raw.GetHistory(ctx, req) })
}

// RetryErrors schedules again the failed steps (all of them when workItemIDs is empty).
func (c *Client) RetryErrors(ctx context.Context, instanceID string, workItemIDs []string, requestID string) (*flouv1.RetryErrorsResponse, error) {
	req := &flouv1.RetryErrorsRequest{InstanceId: instanceID, WorkItemIds: workItemIDs, RequestId: orID(requestID)}
	return call(c, ctx, func(ctx context.Context) (*flouv1.RetryErrorsResponse, error) { return c.raw.RetryErrors(ctx, req) })
}

// ListMachines lists the registered machines (one page).
func (c *Client) ListMachines(ctx context.Context, pageSize int32, pageToken string) (*flouv1.ListMachinesResponse, error) {
	req := &flouv1.ListMachinesRequest{PageSize: pageSize, PageToken: pageToken}
	return call(c, ctx, func(ctx context.Context) (*flouv1.ListMachinesResponse, error) { return c.raw.ListMachines(ctx, req) })
}

// DescribeMachine returns the structure of a registered machine.
func (c *Client) DescribeMachine(ctx context.Context, machine string) (*flouv1.Machine, error) {
	req := &flouv1.DescribeMachineRequest{Machine: machine}
	resp, err := call(c, ctx, func(ctx context.Context) (*flouv1.DescribeMachineResponse, error) {
		return c.raw.DescribeMachine(ctx, req)
	})
	return resp.GetMachine(), err
}

func heartbeat(d time.Duration) *durationpb.Duration {
	if d <= 0 {
		return nil
	}
	return durationpb.New(d)
}
