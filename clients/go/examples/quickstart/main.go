// Quickstart: the example of clients/go/README.md, against `make run`'s server
// (the demo machine `order` of examples/orders.py on 127.0.0.1:50051).
package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/flou-grpc/flou-grpc/clients/go/flou"
	"google.golang.org/grpc/codes"
)

func main() {
	c, err := flou.Dial("127.0.0.1:50051") // options: flou.WithToken, flou.WithRootCAFile, ...
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	order, err := c.Start(ctx, "order", map[string]any{"items": []any{"book"}, "total": 42.5},
		&flou.StartOptions{Wait: flou.WaitSettled})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(order.GetId(), order.GetStatus(), order.GetActiveStates())

	w := c.Watch(ctx, order.GetId(), nil) // the snapshot once, then every event; resumes by itself
	defer w.Close()
	if _, err := w.Next(); err != nil {
		log.Fatal(err)
	}
	// The warehouse's event, for the nested machine `stock`.
	if _, err := c.Transition(ctx, order.GetId(), "stock_reserved", nil,
		&flou.TransitionOptions{Namespace: "order.stock"}); err != nil {
		log.Fatal(err)
	}
	_, err = c.Transition(ctx, order.GetId(), "refund", nil, nil)
	fmt.Println(flou.CodeOf(err), flou.ReasonOf(err)) // FailedPrecondition ERROR_REASON_TRANSITION_NOT_ALLOWED

	for {
		item, err := w.Next()
		if flou.CodeOf(err) == codes.DeadlineExceeded {
			return // the example's 5 s are over
		} else if err != nil {
			log.Fatal(err)
		}
		if ev := item.GetEvent(); ev != nil {
			fmt.Println(ev.GetRevision(), ev.GetKind(), ev.GetPatch().AsSlice())
		}
	}
}
