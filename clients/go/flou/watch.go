package flou

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	flouv1 "github.com/flou-grpc/flou-grpc/clients/go/gen/flou/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// WatchOptions are the optional fields of Watch.
type WatchOptions struct {
	FromRevision      int64         // 0: the current revision
	HeartbeatInterval time.Duration // 0: the server's default
}

// Watcher follows one instance across as many streams as it takes. Next
// returns the first snapshot, then every event once, in revision order, and
// the heartbeats. When a stream breaks (UNAVAILABLE, the server closing a
// slow watcher with ERROR_REASON_WATCHER_TOO_SLOW, or a stream that just
// ended), the next one asks for from_revision = the last revision delivered:
// its snapshot is dropped and its events start at that revision + 1; anything
// at or below the last revision is dropped as a duplicate. It gives up after
// the retry policy's MaxAttempts consecutive failed streams.
type Watcher struct {
	c          *Client
	ctx        context.Context
	cancel     context.CancelFunc
	instanceID string
	opts       WatchOptions

	mu         sync.Mutex
	stream     flouv1.FlouService_WatchClient
	stopStream context.CancelFunc
	have       bool
	last       int64
	failures   int
	// Streams is how many streams were opened so far (1 + the resumes).
	Streams int
}

// Watch starts following instanceID; call Next in a loop and Close at the end.
func (c *Client) Watch(ctx context.Context, instanceID string, opts *WatchOptions) *Watcher {
	if opts == nil {
		opts = &WatchOptions{}
	}
	ctx, cancel := context.WithCancel(ctx)
	return &Watcher{c: c, ctx: ctx, cancel: cancel, instanceID: instanceID, opts: *opts}
}

// LastRevision is the revision of the last snapshot or event delivered (0: none yet).
func (w *Watcher) LastRevision() int64 { return w.last }

// Close ends the watch.
func (w *Watcher) Close() {
	w.cancel()
}

func resumable(err error) bool {
	if err == io.EOF {
		return true
	}
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code == codes.Unavailable ||
		(e.Code == codes.ResourceExhausted && e.Reason == "ERROR_REASON_WATCHER_TOO_SLOW")
}

func (w *Watcher) gap(revision int64) error {
	return &Error{
		Code:    codes.DataLoss,
		Message: fmt.Sprintf("watch of %q jumped from revision %d to %d", w.instanceID, w.last, revision),
		Metadata: map[string]string{
			"instanceId": w.instanceID, "lastRevision": fmt.Sprint(w.last), "revision": fmt.Sprint(revision),
		},
		Status: status.New(codes.DataLoss, "watch gap"),
	}
}

func (w *Watcher) closeStream() {
	if w.stopStream != nil {
		w.stopStream()
	}
	w.stream, w.stopStream = nil, nil
}

// Next blocks until the next snapshot, event or heartbeat. Errors are *Error
// values (a canceled context gives codes.Canceled).
func (w *Watcher) Next() (*flouv1.WatchResponse, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		if err := w.ctx.Err(); err != nil {
			w.closeStream()
			return nil, wrap(err)
		}
		var err error
		var resp *flouv1.WatchResponse
		if w.stream == nil {
			from := w.opts.FromRevision
			if w.have {
				from = w.last
			}
			ctx, stop := context.WithCancel(w.c.outgoing(w.ctx))
			w.Streams++
			w.stream, err = w.c.raw.Watch(ctx, &flouv1.WatchRequest{
				InstanceId: w.instanceID, FromRevision: from, HeartbeatInterval: heartbeat(w.opts.HeartbeatInterval),
			})
			w.stopStream = stop
		}
		if err == nil {
			resp, err = w.stream.Recv()
		}
		if err != nil {
			err = wrap(err)
			w.closeStream()
			if w.ctx.Err() != nil {
				return nil, wrap(w.ctx.Err())
			}
			if !resumable(err) || w.failures+1 >= w.c.retry.MaxAttempts {
				if err == io.EOF {
					err = &Error{Code: codes.Unavailable, Message: "the watch stream ended", Status: status.New(codes.Unavailable, "the watch stream ended")}
				}
				return nil, err
			}
			w.failures++
			var delay time.Duration
			var e *Error
			if errors.As(err, &e) {
				delay = e.RetryDelay
			}
			if !sleep(w.ctx, w.c.retry.backoff(w.failures, delay)) {
				return nil, wrap(w.ctx.Err())
			}
			continue
		}
		w.failures = 0
		switch kind := resp.GetKind().(type) {
		case *flouv1.WatchResponse_Snapshot:
			revision := kind.Snapshot.GetRevision()
			if !w.have {
				w.have, w.last = true, revision
				return resp, nil
			}
			if revision > w.last {
				w.closeStream()
				return nil, w.gap(revision)
			}
		case *flouv1.WatchResponse_Event:
			revision := kind.Event.GetRevision()
			if !w.have || revision <= w.last {
				continue
			}
			if revision != w.last+1 {
				w.closeStream()
				return nil, w.gap(revision)
			}
			w.last = revision
			return resp, nil
		case *flouv1.WatchResponse_Heartbeat:
			return resp, nil
		}
	}
}

// InstancesWatcher is a live feed of the events of many instances (no resume:
// after a break, read what was missed with GetHistory).
type InstancesWatcher struct {
	stream flouv1.FlouService_WatchInstancesClient
	cancel context.CancelFunc
}

// WatchInstances streams the events of every instance (machine ""), or of
// every instance of machine.
func (c *Client) WatchInstances(ctx context.Context, machine string, heartbeatInterval time.Duration) (*InstancesWatcher, error) {
	ctx, cancel := context.WithCancel(c.outgoing(ctx))
	stream, err := c.raw.WatchInstances(ctx, &flouv1.WatchInstancesRequest{Machine: machine, HeartbeatInterval: heartbeat(heartbeatInterval)})
	if err != nil {
		cancel()
		return nil, wrap(err)
	}
	return &InstancesWatcher{stream: stream, cancel: cancel}, nil
}

// Next blocks until the next event or heartbeat.
func (w *InstancesWatcher) Next() (*flouv1.WatchInstancesResponse, error) {
	resp, err := w.stream.Recv()
	if err != nil {
		return nil, wrap(err)
	}
	return resp, nil
}

// Close ends the feed.
func (w *InstancesWatcher) Close() { w.cancel() }
