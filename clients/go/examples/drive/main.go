// Drive: the Go side of the cross-language test and of the client benchmark
// (tests/integration/clients/test_cross_language.py, bench/clients_bench.py).
//
//	drive -addr 127.0.0.1:PORT -instance ID -mode append -prefix go -n 50
//	drive -addr 127.0.0.1:PORT -instance ID -mode latency -label again -warmup 30 -n 300
//
// It dials, makes one read to open the connection, prints "ready" and waits
// for a line on stdin (so that the drivers of every language start together),
// then:
//   - append: AtomicAppend of "PREFIX-1".."PREFIX-N" to the root's list "-key";
//   - latency: N sequential Transitions of "-label" (wait: processed) after
//     "-warmup" unmeasured ones.
//
// It ends with one JSON line: {"sent": N, "revisions": [...]} for append,
// {"latencies_ms": [...]} for latency.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/flou-grpc/flou-grpc/clients/go/flou"
	flouv1 "github.com/flou-grpc/flou-grpc/clients/go/gen/flou/v1"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "the server")
	instance := flag.String("instance", "", "the instance to drive")
	mode := flag.String("mode", "append", "append or latency")
	prefix := flag.String("prefix", "go", "append: the values are PREFIX-1..PREFIX-N")
	key := flag.String("key", "items", "append: the root's list")
	label := flag.String("label", "again", "latency: the transition label")
	n := flag.Int("n", 50, "how many calls (measured ones for latency)")
	warmup := flag.Int("warmup", 30, "latency: unmeasured calls first")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("drive(go): ")

	c, err := flou.Dial(*addr, flou.WithTimeout(20*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.GetInstance(ctx, *instance, flouv1.InstanceView_INSTANCE_VIEW_BASIC); err != nil {
		log.Fatal(err)
	}
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		log.Fatalf("waiting for the start line: %v", err)
	}

	out := map[string]any{}
	switch *mode {
	case "append":
		revisions := make([]int64, 0, *n)
		for i := 1; i <= *n; i++ {
			_, revision, err := c.AtomicAppend(ctx, *instance, *key, fmt.Sprintf("%s-%d", *prefix, i), nil)
			if err != nil {
				log.Fatalf("append %d: %v", i, err)
			}
			revisions = append(revisions, revision)
		}
		out["sent"], out["revisions"] = *n, revisions
	case "latency":
		opts := &flou.TransitionOptions{Wait: flou.WaitProcessed}
		latencies := make([]float64, 0, *n)
		for i := 0; i < *warmup+*n; i++ {
			began := time.Now()
			if _, err := c.Transition(ctx, *instance, *label, nil, opts); err != nil {
				log.Fatalf("transition %d: %v", i, err)
			}
			if i >= *warmup {
				latencies = append(latencies, float64(time.Since(began).Microseconds())/1000)
			}
		}
		out["latencies_ms"] = latencies
	default:
		log.Fatalf("unknown -mode %q", *mode)
	}
	line, err := json.Marshal(out)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(line))
}
