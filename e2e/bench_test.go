package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/prismq/tmbridge/bridge/taskmanager/devserver"
)

// BenchmarkThroughput runs 600 example.echo tasks through a bridge with 50
// in flight, with regular and with local activities, and reports tasks/s
// from the first claim to the last outcome in TaskManager.
func BenchmarkThroughput(b *testing.B) {
	for _, mode := range []string{"regular", "local"} {
		b.Run(mode, func(b *testing.B) {
			s := newStack(b, devserver.StylePHP)
			s.register("example.echo")
			const n = 600
			ids := make([]string, 0, n)
			for i := range n {
				ids = append(ids, s.create("example.echo", map[string]any{"message": fmt.Sprintf("bench %d", i)}))
			}
			cfg := filepath.Join(b.TempDir(), "tmbridge.yaml")
			local := mode == "local"
			require.NoError(b, os.WriteFile(cfg, []byte(fmt.Sprintf("types:\n  example.echo: { local: %v }\n", local)), 0o600))
			b.ResetTimer()
			start := time.Now()
			s.runBridge(nil, "bench", "--config="+cfg, "--max-in-flight=50", "--max-concurrent-activities=50")
			s.waitFinal(ids)
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(n)/elapsed.Seconds(), "tasks/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkInFlight1000 holds 1000 claimed tasks in flight (example.sleep
// of 5 s) and reports the bridge process's heap and goroutines at the peak.
func BenchmarkInFlight1000(b *testing.B) {
	s := newStack(b, devserver.StylePHP)
	s.register("example.sleep")
	const n = 1000
	ids := make([]string, 0, n)
	for i := range n {
		ids = append(ids, s.create("example.sleep", map[string]any{"duration": 5, "n": i}))
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peakHeap, peakG atomic.Uint64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peakHeap.Load() {
				peakHeap.Store(m.HeapInuse)
			}
			if g := uint64(runtime.NumGoroutine()); g > peakG.Load() {
				peakG.Store(g)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	start := time.Now()
	s.runBridge(nil, "bench-1000", "--max-in-flight=1000", "--max-concurrent-activities=1000")
	s.waitFinal(ids)
	elapsed := time.Since(start)
	cancel()
	b.ReportMetric(float64(peakHeap.Load()-before.HeapInuse)/(1<<20), "MiB-heap-peak")
	b.ReportMetric(float64(peakG.Load()), "goroutines-peak")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "tasks/s")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkBaseline is the dev server's own ceiling on this machine: 600
// workflows of the same shape as a task's (one activity, then a report
// activity), 50 in flight, started and awaited by a plain Temporal
// program, without TaskManager or the bridge.
func BenchmarkBaseline(b *testing.B) {
	for _, mode := range []string{"regular", "local"} {
		b.Run(mode, func(b *testing.B) {
			s := newStack(b, devserver.StylePHP)
			w := worker.New(s.tc, s.queue, worker.Options{MaxConcurrentActivityExecutionSize: 50})
			w.RegisterActivityWithOptions(func(ctx context.Context, msg string) (string, error) { return msg, nil }, activity.RegisterOptions{Name: "handle"})
			w.RegisterActivityWithOptions(func(ctx context.Context, msg string) error { return nil }, activity.RegisterOptions{Name: "report"})
			local := mode == "local"
			w.RegisterWorkflowWithOptions(func(ctx workflow.Context, msg string) (string, error) {
				var out string
				run := func(name string, arg string, res any) error {
					if local {
						lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{StartToCloseTimeout: time.Minute})
						return workflow.ExecuteLocalActivity(lctx, name, arg).Get(ctx, res)
					}
					actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
					return workflow.ExecuteActivity(actx, name, arg).Get(ctx, res)
				}
				if err := run("handle", msg, &out); err != nil {
					return "", err
				}
				return out, run("report", out, nil)
			}, workflow.RegisterOptions{Name: "baseline"})
			require.NoError(b, w.Start())
			defer w.Stop()
			const n, inFlight = 600, 50
			sem := make(chan struct{}, inFlight)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for i := range n {
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer func() { <-sem; wg.Done() }()
					run, err := s.tc.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: fmt.Sprintf("%s%d", s.prefix, i), TaskQueue: s.queue}, "baseline", "m")
					if err == nil {
						err = run.Get(context.Background(), nil)
					}
					if err != nil {
						b.Error(err)
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(n)/time.Since(start).Seconds(), "workflows/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
