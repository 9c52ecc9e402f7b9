package flou_test

// End-to-end tests against a real flou-grpc server serving the test library's
// machines (tests.ltms.flat: linear, self_loop...). The server's address is
// taken from FLOU_TEST_ADDRESS (tests/integration/clients/test_go_client.py
// starts one and sets it); without it every test is skipped. FLOU_TEST_TOKEN
// is the bearer token that server requires, if any; FLOU_TEST_TLS_ADDRESS and
// FLOU_TEST_TLS_DIR (ca.pem, client.pem, client.key) name a server that
// requires mutual TLS.

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/flou-grpc/flou-grpc/clients/go/flou"
	flouv1 "github.com/flou-grpc/flou-grpc/clients/go/gen/flou/v1"
	"google.golang.org/grpc/codes"
)

func address(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("FLOU_TEST_ADDRESS")
	if addr == "" {
		t.Skip("FLOU_TEST_ADDRESS is not set: start a server (e.g. `make run`) and set it to its host:port")
	}
	return addr
}

func dial(t *testing.T, target string, opts ...flou.Option) *flou.Client {
	t.Helper()
	if token := os.Getenv("FLOU_TEST_TOKEN"); token != "" {
		opts = append([]flou.Option{flou.WithToken(token)}, opts...)
	}
	c, err := flou.Dial(target, opts...)
	if err != nil {
		t.Fatalf("dial %s: %v", target, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

type result[T any] struct {
	v   T
	err error
}

// must(f()).get(t): the value of a call that must succeed.
func must[T any](v T, err error) result[T] { return result[T]{v, err} }

func (r result[T]) get(t *testing.T) T {
	t.Helper()
	if r.err != nil {
		t.Fatalf("unexpected error: %v", r.err)
	}
	return r.v
}

func id(prefix string) string { return prefix + "-" + flou.NewRequestID()[:8] }

func TestStartTransitionUpdateAppend(t *testing.T) {
	c := dial(t, address(t))
	bg := ctx(t)
	instanceID := id("go-linear")
	started := must(c.Start(bg, "linear", map[string]any{"user": "ada"}, &flou.StartOptions{InstanceID: instanceID, Wait: flou.WaitSettled})).get(t)
	if started.GetId() != instanceID || started.GetMachine() != "linear" || started.GetStatus() != flouv1.InstanceStatus_INSTANCE_STATUS_WAITING {
		t.Fatalf("started: %v", started)
	}
	if got := flou.State(started)["a"].(map[string]any)["runs"]; !reflect.DeepEqual(got, []any{map[string]any{"user": "ada"}}) {
		t.Fatalf("a.runs = %#v", got)
	}

	moved := must(c.Transition(bg, instanceID, "go", map[string]any{"card": "visa"}, &flou.TransitionOptions{Wait: flou.WaitSettled})).get(t)
	if len(moved.GetFired()) != 1 || moved.GetFired()[0].GetLabel() != "go" || !reflect.DeepEqual(moved.GetFired()[0].GetTargets(), []string{"linear.b"}) {
		t.Fatalf("fired: %v", moved.GetFired())
	}
	if !reflect.DeepEqual(moved.GetInstance().GetActiveStates(), []string{"linear", "linear.b"}) {
		t.Fatalf("active states: %v", moved.GetInstance().GetActiveStates())
	}

	updated := must(c.UpdateState(bg, instanceID, map[string]any{"order": map[string]any{"total": 1}, "tags": []any{}}, nil)).get(t)
	if got := flou.State(updated.GetInstance())["order"]; !reflect.DeepEqual(got, map[string]any{"total": 1.0}) {
		t.Fatalf("order = %#v", got)
	}
	must(c.UpdateState(bg, instanceID, map[string]any{"order.total": 12.5}, nil)).get(t)

	values, revision, err := c.AtomicAppend(bg, instanceID, "tags", "urgent", nil)
	if err != nil || !reflect.DeepEqual(values, []any{"urgent"}) {
		t.Fatalf("append: %v %v", values, err)
	}
	values2, revision2, err := c.AtomicAppend(bg, instanceID, "tags", map[string]any{"by": "ops"}, nil)
	if err != nil || !reflect.DeepEqual(values2, []any{"urgent", map[string]any{"by": "ops"}}) || revision2 != revision+1 {
		t.Fatalf("append 2: %v %d %v", values2, revision2, err)
	}

	length, revision3, err := c.AtomicAppendCount(bg, instanceID, "tags", "third", nil)
	if err != nil || length != 3 || revision3 != revision2+1 {
		t.Fatalf("append count: %d %d %v", length, revision3, err)
	}

	full := must(c.GetInstance(bg, instanceID, flouv1.InstanceView_INSTANCE_VIEW_FULL)).get(t)
	state := flou.State(full)
	if !reflect.DeepEqual(state["order"], map[string]any{"total": 12.5}) || full.GetRevision() != revision3 {
		t.Fatalf("state: %v revision %d", state, full.GetRevision())
	}
	basic := must(c.GetInstance(bg, instanceID, flouv1.InstanceView_INSTANCE_VIEW_BASIC)).get(t)
	if basic.GetState() != nil {
		t.Fatalf("basic view has a state")
	}

	page := must(c.GetHistory(bg, instanceID, 0, 2, "")).get(t)
	if len(page.GetEvents()) != 2 || page.GetEvents()[0].GetRevision() != 1 || page.GetNextPageToken() == "" || page.GetCurrentRevision() != revision3 {
		t.Fatalf("history page: %v", page)
	}
	listed := must(c.ListInstances(bg, &flouv1.ListInstancesRequest{Machine: "linear"})).get(t)
	found := false
	for _, i := range listed.GetInstances() {
		found = found || i.GetId() == instanceID
	}
	if !found {
		t.Fatalf("%s not listed", instanceID)
	}
	machines := must(c.ListMachines(bg, 0, "")).get(t)
	if len(machines.GetMachines()) == 0 {
		t.Fatal("no machines")
	}
	described := must(c.DescribeMachine(bg, "linear")).get(t)
	if described.GetRoot().GetFqn() != "linear" || len(described.GetRoot().GetTransitions()) != 1 {
		t.Fatalf("described: %v", described)
	}
	retried := must(c.RetryErrors(bg, instanceID, nil, "")).get(t)
	if len(retried.GetRetriedWorkItemIds()) != 0 {
		t.Fatalf("retried: %v", retried)
	}
}

func TestRequestIDMakesRetriesSafe(t *testing.T) {
	c := dial(t, address(t))
	bg := ctx(t)
	instanceID := must(c.Start(bg, "linear", nil, &flou.StartOptions{Wait: flou.WaitSettled})).get(t).GetId()
	if len(instanceID) != 36 || instanceID[14] != '4' {
		t.Fatalf("server-assigned id %q is not a UUIDv4", instanceID)
	}
	requestID := flou.NewRequestID()
	opts := &flou.AppendOptions{Fqn: "linear.a", RequestID: requestID}
	a, ra, err := c.AtomicAppend(bg, instanceID, "runs", "x", opts)
	if err != nil {
		t.Fatal(err)
	}
	b, rb, err := c.AtomicAppend(bg, instanceID, "runs", "x", opts)
	if err != nil || !reflect.DeepEqual(a, b) || ra != rb {
		t.Fatalf("the repeat changed something: %v/%d vs %v/%d (%v)", a, ra, b, rb, err)
	}
	_, _, err = c.AtomicAppend(bg, instanceID, "runs", "y", opts)
	if flou.ReasonOf(err) != "ERROR_REASON_REQUEST_ID_REUSED" || flou.CodeOf(err) != codes.InvalidArgument {
		t.Fatalf("reused request id: %v", err)
	}
}

func TestErrorsCarryCodeReasonAndMetadata(t *testing.T) {
	c := dial(t, address(t))
	bg := ctx(t)

	_, err := c.GetInstance(bg, "nobody", 0)
	var e *flou.Error
	if !errors.As(err, &e) || e.Code != codes.NotFound || e.Reason != "ERROR_REASON_INSTANCE_NOT_FOUND" ||
		e.Domain != flou.ErrorDomain || !reflect.DeepEqual(e.Metadata, map[string]string{"instanceId": "nobody"}) {
		t.Fatalf("get nobody: %#v", err)
	}
	if !errors.Is(err, &flou.Error{Code: codes.NotFound}) {
		t.Fatal("errors.Is by code")
	}

	_, err = c.Start(bg, "no_such_machine", nil, nil)
	if !errors.As(err, &e) || e.Reason != "ERROR_REASON_MACHINE_NOT_FOUND" || e.Metadata["machine"] != "no_such_machine" {
		t.Fatalf("unknown machine: %v", err)
	}

	instance := must(c.Start(bg, "linear", nil, &flou.StartOptions{Wait: flou.WaitSettled})).get(t)
	_, err = c.Transition(bg, instance.GetId(), "nope", nil, nil)
	if !errors.Is(err, &flou.Error{Code: codes.FailedPrecondition, Reason: "ERROR_REASON_TRANSITION_NOT_ALLOWED"}) ||
		!errors.As(err, &e) || e.Metadata["label"] != "nope" || e.Metadata["activeStates"] != "linear,linear.a" {
		t.Fatalf("transition not allowed: %v", err)
	}

	current := must(c.GetInstance(bg, instance.GetId(), flouv1.InstanceView_INSTANCE_VIEW_BASIC)).get(t).GetRevision()
	_, err = c.Transition(bg, instance.GetId(), "go", nil, &flou.TransitionOptions{ExpectedRevision: current - 1})
	if !errors.As(err, &e) || e.Code != codes.Aborted || e.Reason != "ERROR_REASON_REVISION_CONFLICT" {
		t.Fatalf("revision conflict: %v", err)
	}

	must(c.UpdateState(bg, instance.GetId(), map[string]any{"scalar": 1}, nil)).get(t)
	_, _, err = c.AtomicAppend(bg, instance.GetId(), "scalar", 2, nil)
	if !errors.As(err, &e) || e.Reason != "ERROR_REASON_STATE_KEY_NOT_LIST" || e.Metadata["actualType"] == "" {
		t.Fatalf("append to a scalar: %v", err)
	}

	_, err = c.Transition(bg, instance.GetId(), "Not A Label", nil, nil)
	if flou.CodeOf(err) != codes.InvalidArgument || flou.ReasonOf(err) != "ERROR_REASON_INVALID_FIELD" {
		t.Fatalf("invalid label: %v", err)
	}
}

// proxy forwards TCP to the server; Break cuts every connection (the client
// sees UNAVAILABLE) and Refuse makes it close new connections at once.
type proxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	conns    []net.Conn
	refuse   bool
}

func newProxy(t *testing.T, upstream string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: upstream}
	t.Cleanup(func() { ln.Close(); p.Break() })
	go func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			refuse := p.refuse
			p.mu.Unlock()
			if refuse {
				down.Close()
				continue
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				down.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, down, up)
			p.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			go pipe(up, down)
			go pipe(down, up)
		}
	}()
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) Break() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

func TestWatchResumesWithoutGapOrDuplicate(t *testing.T) {
	addr := address(t)
	direct := dial(t, addr)
	p := newProxy(t, addr)
	watching := dial(t, p.Addr())
	bg := ctx(t)

	instanceID := must(direct.Start(bg, "self_loop", nil, &flou.StartOptions{Wait: flou.WaitSettled})).get(t).GetId()
	w := watching.Watch(bg, instanceID, &flou.WatchOptions{HeartbeatInterval: time.Second})
	defer w.Close()
	first := must(w.Next()).get(t)
	if first.GetSnapshot() == nil {
		t.Fatalf("first message is not a snapshot: %v", first)
	}
	seen := []int64{first.GetSnapshot().GetRevision()}
	readUntil := func(revision int64) {
		t.Helper()
		for seen[len(seen)-1] < revision {
			resp := must(w.Next()).get(t)
			if resp.GetSnapshot() != nil {
				t.Fatalf("a second snapshot was delivered: %v", resp)
			}
			if ev := resp.GetEvent(); ev != nil {
				seen = append(seen, ev.GetRevision())
			}
		}
	}

	moved := must(direct.Transition(bg, instanceID, "again", map[string]any{"n": 1}, &flou.TransitionOptions{Wait: flou.WaitSettled})).get(t)
	readUntil(moved.GetInstance().GetRevision())

	p.Break() // the watch stream fails UNAVAILABLE; events go on meanwhile
	for n := 2; n <= 4; n++ {
		moved = must(direct.Transition(bg, instanceID, "again", map[string]any{"n": n}, &flou.TransitionOptions{Wait: flou.WaitSettled})).get(t)
	}
	p.Break()
	readUntil(moved.GetInstance().GetRevision())

	for i := 1; i < len(seen); i++ {
		if seen[i] != seen[i-1]+1 {
			t.Fatalf("revisions are not consecutive: %v", seen)
		}
	}
	if w.Streams < 2 {
		t.Fatalf("the watch was not resumed (%d stream)", w.Streams)
	}
	if w.LastRevision() != moved.GetInstance().GetRevision() {
		t.Fatalf("last revision %d, want %d", w.LastRevision(), moved.GetInstance().GetRevision())
	}
	t.Logf("revisions %v over %d streams", seen, w.Streams)
}

func TestRetriesOnlyUnavailable(t *testing.T) {
	addr := address(t)
	p := newProxy(t, addr)
	p.Refuse(true)
	c := dial(t, p.Addr())
	bg := ctx(t)
	go func() {
		time.Sleep(400 * time.Millisecond)
		p.Refuse(false)
	}()
	// UNAVAILABLE for a while, then served: the retried Start (same request id) starts one instance.
	instanceID := id("go-retry")
	started := must(c.Start(bg, "linear", nil, &flou.StartOptions{InstanceID: instanceID})).get(t)
	if started.GetId() != instanceID {
		t.Fatalf("started %v", started)
	}

	// Never served: UNAVAILABLE once the attempts are spent.
	p.Refuse(true)
	p.Break()
	once := dial(t, p.Addr(), flou.WithRetryPolicy(flou.RetryPolicy{MaxAttempts: 2, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Multiplier: 2}))
	_, err := once.GetInstance(bg, instanceID, 0)
	if flou.CodeOf(err) != codes.Unavailable {
		t.Fatalf("want UNAVAILABLE, got %v", err)
	}
}

func TestTokenIsSent(t *testing.T) {
	addr := address(t)
	if os.Getenv("FLOU_TEST_TOKEN") == "" {
		t.Skip("FLOU_TEST_TOKEN is not set (the server under test requires no token)")
	}
	must(dial(t, addr).ListMachines(ctx(t), 0, "")).get(t)
	anonymous, err := flou.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer anonymous.Close()
	_, err = anonymous.ListMachines(ctx(t), 0, "")
	if flou.CodeOf(err) != codes.Unauthenticated || flou.ReasonOf(err) != "ERROR_REASON_UNAUTHENTICATED" {
		t.Fatalf("no token: %v", err)
	}
	wrong, err := flou.Dial(addr, flou.WithToken("wrong"))
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	_, err = wrong.ListMachines(ctx(t), 0, "")
	if flou.ReasonOf(err) != "ERROR_REASON_UNAUTHENTICATED" {
		t.Fatalf("wrong token: %v", err)
	}
}

func TestMutualTLS(t *testing.T) {
	addr, dir := os.Getenv("FLOU_TEST_TLS_ADDRESS"), os.Getenv("FLOU_TEST_TLS_DIR")
	if addr == "" || dir == "" {
		t.Skip("FLOU_TEST_TLS_ADDRESS / FLOU_TEST_TLS_DIR are not set")
	}
	once := flou.WithRetryPolicy(flou.RetryPolicy{MaxAttempts: 1})
	c := dial(t, addr, once, flou.WithRootCAFile(filepath.Join(dir, "ca.pem")),
		flou.WithClientCertificate(filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")))
	started := must(c.Start(ctx(t), "linear", nil, &flou.StartOptions{Wait: flou.WaitSettled})).get(t)
	if started.GetMachine() != "linear" {
		t.Fatalf("started %v", started)
	}
	noCert := dial(t, addr, once, flou.WithRootCAFile(filepath.Join(dir, "ca.pem")), flou.WithTimeout(5*time.Second))
	if _, err := noCert.ListMachines(ctx(t), 0, ""); flou.CodeOf(err) != codes.Unavailable {
		t.Fatalf("a client without certificate: %v", err)
	}
	plain := dial(t, addr, once, flou.WithTimeout(5*time.Second))
	if _, err := plain.ListMachines(ctx(t), 0, ""); flou.CodeOf(err) != codes.Unavailable {
		t.Fatalf("a plaintext client: %v", err)
	}
}
