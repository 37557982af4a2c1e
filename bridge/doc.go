// Package bridge runs PrismQ TaskManager tasks as durable Temporal
// workflows. It replaces the reference Python worker: it claims tasks over
// TaskManager's HTTP API, starts one Temporal workflow per task, hosts the
// Temporal worker that runs the task's handler, and reports the outcome
// back, exactly once, whatever crashes or outages happen in between.
//
// The path of one task, by file:
//
//	bridge/scout.go            which types have pending tasks (GET /tasks?status=pending), so no claim comes back empty
//	bridge/claim.go            claimLoop: POST /tasks/claim, ClaimsPerType loops per task type
//	bridge/admission.go        admission: the one owner of each claimed task (max_in_flight, max_runs)
//	bridge/resolve.go          the config made runnable: handlers, each type's options, the workflow input
//	bridge/start.go            startWorkflow: start workflow "<prefix><task id>", or signal the new claim to its open run
//	bridge/closer.go           learn when open runs close, for all at once (their max_in_flight slots come back); watch one without visibility
//	bridge/recover.go          open runs of this worker found at start: counted and watched
//	bridge/sweep.go            sweep this worker's claims left without a run (lost answers, a crash); note others' timed-out claims
//	workflows/task.go          TaskWorkflow: runs the handler, then reports, following claim moves
//	workflows/steps.go         multi-step types (compose.go: when, for_each, on_failure, enqueue, wait_for)
//	activities/worker.go       the handler activity (one per task type, named after it)
//	activities/report.go       ReportOutcome: read, then POST /tasks/{id}/complete only for the claim holding the task
//
// Around it: bridge/health.go (/healthz, /readyz on metrics_addr),
// metrics.go and telemetry.go (the bridge's and the Temporal SDK's
// metrics, traces), check.go and setup.go (`tmbridge check`, `tmbridge
// setup`), version.go (`tmbridge --version`, Build).
//
// The whole program, with a handler of your own next to the built-in
// examples, is a few lines (examples/resize, tested with bridgetest):
//
//	package main
//
//	import (
//		"context"
//		"errors"
//		"os"
//
//		"github.com/prismq/tmbridge/activities"
//		"github.com/prismq/tmbridge/bridge"
//	)
//
//	type ResizeParams struct {
//		URL   string `json:"url"`
//		Width int    `json:"width"`
//	}
//
//	type ResizeResult struct {
//		URL string `json:"url"`
//	}
//
//	func resize(ctx context.Context, p ResizeParams) (ResizeResult, error) {
//		if p.Width <= 0 {
//			// Permanent: no retry can help (a plain error would be retried).
//			return ResizeResult{}, activities.Permanent(errors.New("width must be positive"))
//		}
//		activities.ReportProgress(ctx, 50, "resizing")
//		return ResizeResult{URL: p.URL + "?w=100"}, nil
//	}
//
//	func main() {
//		reg := activities.NewRegistry()
//		activities.RegisterExamples(reg)                 // example.echo, example.sleep, …
//		activities.Register(reg, "image.resize", resize) // the task type name in TaskManager
//		os.Exit(bridge.Main(reg))                        // flags, env, config file, signals
//	}
//
// Run it with the reference worker's flags and env vars
// (TASKMANAGER_API_URL, WORKER_ID, TASK_TYPE_IDS, POLL_INTERVAL, MAX_RUNS,
// DEBUG), the API key in TASKMANAGER_API_KEY, and Temporal's own
// TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TLS and API key settings. Per-type
// options (timeouts, retries, local activities, another task queue,
// multi-step types, exec and http handlers) live in the YAML config file;
// see Config and the README.
//
// Embedding the bridge in a program that manages its own lifecycle uses
// Load, New, Run and Stop:
//
//	cfg, err := bridge.Load(os.Args[1:], os.Environ(), os.Stdout)
//	worker.SetStickyWorkflowCacheSize(cfg.Temporal.WorkflowCacheSize)
//	copts, err := bridge.ClientOptions(cfg, os.Environ(), logger) // TEMPORAL_* env, TLS, API key, profile
//	tc, err := client.Dial(copts)
//	cfg.Temporal.Namespace = copts.Namespace
//	b, err := bridge.New(cfg, reg, tc, bridge.WithLogger(logger))
//	err = b.Run(ctx)           // until ctx ends or --max-runs tasks are done
//	stopCtx, cancel := context.WithTimeout(context.Background(), bridge.StopTimeout(cfg.ShutdownGrace))
//	err = b.Stop(stopCtx)      // stop claiming, let handlers finish within the grace
//
// A Run that failed its start checks (errors.Is(err, ErrStartCheck)) may
// be called again. A program that builds its Config in Go instead of
// Load starts from DefaultConfig.
//
// ClientOptions gives the client options Main dials with: Temporal's own
// environment variables and config profile, the config's temporal.*
// settings, the SDK's logs. temporal.workflow_cache_size is process-wide:
// set it before any worker is built, as above.
//
// Main also serves the Temporal SDK's metrics on /metrics, named as
// Temporal's Go SDK dashboard expects, and exports traces over OTLP when
// the OTEL_* variables ask for them (telemetry.go). A program that dials
// Temporal itself gets the metrics with NewTemporalMetrics and
// WithMetricsRegistry; for traces it sets a global OpenTelemetry
// TracerProvider (the bridge's claim and start spans use it) and Temporal's
// tracing interceptor (go.temporal.io/sdk/contrib/opentelemetry) on the
// client:
//
//	promReg := prometheus.NewRegistry()
//	mh, err := bridge.NewTemporalMetrics(promReg)
//	otel.SetTracerProvider(tp)
//	ti, err := opentelemetry.NewTracingInterceptor(opentelemetry.TracerOptions{})
//	tc, err := client.Dial(client.Options{HostPort: addr, MetricsHandler: mh, Interceptors: []interceptor.ClientInterceptor{ti}})
//	b, err := bridge.New(cfg, reg, tc, bridge.WithMetricsRegistry(promReg))
package bridge
