package bridge

// Telemetry: the Temporal SDK's own metrics on the bridge's /metrics, and
// OpenTelemetry traces of each task, from its claim to its report.
//
// Metrics: the SDK reports through contrib/opentelemetry's MetricsHandler
// into an OpenTelemetry meter whose reader is the Prometheus exporter,
// registered on the bridge's registry. The names are those of Temporal's
// dashboard for the Go SDK with OpenTelemetry (temporalio/dashboards,
// sdk/temporal-go-sdk-otel.json): histograms in seconds with the unit in
// the name (temporal_request_latency_seconds_bucket), counters without
// "_total" (temporal_request), as the SDK's default up-down counters come
// out; no otel_scope_* labels and no target_info, which the dashboard does
// not use.
//
// Traces: off unless the standard OTEL_* variables ask for them
// (tracingWanted). Then Main installs a global TracerProvider exporting
// over OTLP and Temporal's tracing interceptor on the client; the bridge
// adds a "claim" span for each claim call that returned a task and a
// "start" span, its child, around the workflow's start. The interceptor
// carries the trace in the workflow's header, so StartWorkflow,
// RunWorkflow, StartActivity and RunActivity of the handler and of the
// report all join the claim's trace. Spans carry ids and names, never
// params, results or keys; a failed start's span has its error, as logged.

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/contrib/opentelemetry"

	"github.com/prismq/tmbridge/taskmanager"
)

// NewTemporalMetrics returns a Temporal client metrics handler that
// registers the SDK's metrics (requests, polls, workflow and activity task
// latencies, slots, pollers, sticky cache) on reg, named as Temporal's Go
// SDK dashboard expects. Main sets it on the client when metrics_addr is
// set; a program that dials Temporal itself does the same, and passes reg
// to New with WithMetricsRegistry so that one /metrics serves both:
//
//	promReg := prometheus.NewRegistry()
//	mh, err := bridge.NewTemporalMetrics(promReg)
//	tc, err := client.Dial(client.Options{HostPort: addr, MetricsHandler: mh})
//	b, err := bridge.New(cfg, reg, tc, bridge.WithMetricsRegistry(promReg))
func NewTemporalMetrics(reg prometheus.Registerer) (client.MetricsHandler, error) {
	exp, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
		otelprom.WithoutScopeInfo(),
		otelprom.WithoutTargetInfo(),
	)
	if err != nil {
		return nil, fmt.Errorf("temporal SDK metrics: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithView(
		// The SDK's timers are in seconds; OpenTelemetry's default
		// buckets (0 to 10000) are meant for milliseconds.
		sdkmetric.NewView(
			sdkmetric.Instrument{Kind: sdkmetric.InstrumentKindHistogram, Unit: "s"},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: sdkLatencyBuckets}},
		),
	))
	return opentelemetry.NewMetricsHandler(opentelemetry.MetricsHandlerOptions{
		Meter: mp.Meter("temporal-sdk-go"),
		// The default panics; a metric the meter refuses is not worth a crash.
		OnError: func(err error) { slog.Warn("temporal SDK metric dropped", "err", err) },
	}), nil
}

// sdkLatencyBuckets are the SDK latency histograms' bucket bounds, in
// seconds: from a millisecond (a workflow task) to an hour (a workflow).
var sdkLatencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}

// WithMetricsRegistry makes New register the bridge's metrics on reg and
// serve all of reg's metrics on /metrics (metrics_addr). Pass the registry
// given to NewTemporalMetrics to serve the SDK's metrics there too. The
// default is a registry of the bridge's own.
func WithMetricsRegistry(reg *prometheus.Registry) Option {
	return func(o *bridgeOptions) { o.metricsReg = reg }
}

// tracer makes the bridge's spans with the global TracerProvider, a no-op
// until one is set: Main sets one when the OTEL_* variables ask for traces;
// a program embedding the bridge may set its own.
func tracer() trace.Tracer { return otel.Tracer("github.com/prismq/tmbridge/bridge") }

// traceClaim records a claim call that returned task, from claimedAt until
// now, and returns its span context: the parent of the task's start span.
func traceClaim(t servedType, task taskmanager.Task, claimedAt time.Time) trace.SpanContext {
	_, span := tracer().Start(context.Background(), "claim",
		trace.WithTimestamp(claimedAt), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("task_type", t.Name),
			attribute.String("task_id", string(task.ID)),
			attribute.Int("attempts", int(task.Attempts)),
		))
	span.End()
	return span.SpanContext()
}

// traceStart starts the span of a task's workflow start, a child of its
// claim's span (none for a claim found by a sweep).
func traceStart(claim trace.SpanContext, task taskmanager.Task, workflowID string) trace.Span {
	_, span := tracer().Start(trace.ContextWithSpanContext(context.Background(), claim), "start",
		trace.WithAttributes(
			attribute.String("task_type", task.Type),
			attribute.String("task_id", string(task.ID)),
			attribute.String("workflow_id", workflowID),
		))
	return span
}

// endStart ends a start span with what became of the start.
func endStart(span trace.Span, state runState, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	} else {
		span.SetAttributes(attribute.String("run", runStateNames[state]))
	}
	span.End()
}

// runStateNames name a start's outcome on its span.
var runStateNames = map[runState]string{runNone: "none", runOpen: "open", runDone: "closed"}

// withSpan returns ctx carrying span, for the Temporal calls made under it.
func withSpan(ctx context.Context, span trace.SpanContext) context.Context {
	if !span.IsValid() {
		return ctx
	}
	return trace.ContextWithSpanContext(ctx, span)
}

// telemetry sets up what run adds to the Temporal client and the bridge:
// the SDK's metrics when metrics_addr is set, and traces when the OTEL_*
// variables ask for them. shutdown flushes the spans; call it last.
func telemetry(cfg Config, environ []string, copts *client.Options, log *slog.Logger) (opts []Option, shutdown func(), err error) {
	shutdown = func() {}
	if cfg.MetricsAddr != "" {
		reg := prometheus.NewRegistry()
		if copts.MetricsHandler, err = NewTemporalMetrics(reg); err != nil {
			return nil, shutdown, err
		}
		opts = append(opts, WithMetricsRegistry(reg))
	}
	env := envList(environ)
	on, err := tracingWanted(env)
	if err != nil || !on {
		return opts, shutdown, err
	}
	tp, err := newTracerProvider(context.Background(), env, cfg.WorkerID)
	if err != nil {
		return nil, shutdown, err
	}
	otel.SetTracerProvider(tp) // the bridge's spans, and any a handler makes
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("OpenTelemetry", "err", redactEndpoints(err.Error(), env))
	}))
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	ti, err := opentelemetry.NewTracingInterceptor(opentelemetry.TracerOptions{Tracer: tp.Tracer("temporal-sdk-go")})
	if err != nil {
		return nil, shutdown, err
	}
	copts.Interceptors = append(copts.Interceptors, ti)
	protocol, _ := otlpProtocol(env)
	log.Info("tracing: exporting spans over OTLP", "endpoint", cmp.Or(otlpEndpoint(env), "the default"), "protocol", protocol)
	shutdown = func() {
		ctx, cancel := context.WithTimeout(context.Background(), tracingFlushTimeout)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			log.Warn("tracing: spans not all exported", "err", redactEndpoints(err.Error(), env))
		}
	}
	return opts, shutdown, nil
}

// tracingFlushTimeout bounds the export of the last spans at exit (part
// of StopTimeout).
const tracingFlushTimeout = 3 * time.Second

// tracingWanted reports whether the OTEL_* variables ask for traces: an
// OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or OTEL_TRACES_EXPORTER is "otlp",
// and neither OTEL_TRACES_EXPORTER=none nor OTEL_SDK_DISABLED=true says
// otherwise. An exporter other than otlp is an error.
func tracingWanted(env envList) (bool, error) {
	if v, _ := env.LookupEnv("OTEL_SDK_DISABLED"); strings.EqualFold(strings.TrimSpace(v), "true") {
		return false, nil
	}
	v, _ := env.LookupEnv("OTEL_TRACES_EXPORTER")
	var exporters []string
	for e := range strings.SplitSeq(v, ",") {
		if e = strings.ToLower(strings.TrimSpace(e)); e != "" {
			exporters = append(exporters, e)
		}
	}
	if slices.Contains(exporters, "none") {
		return false, nil
	}
	for _, e := range exporters {
		if e != "otlp" {
			return false, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: tmbridge exports traces over OTLP only (otlp, or none)", v)
		}
	}
	if _, err := otlpProtocol(env); err != nil {
		return false, err
	}
	return len(exporters) > 0 || otlpEndpoint(env) != "", nil
}

// otlpEndpoint is the OTLP endpoint the exporter will use, without
// userinfo or query; empty when none is set.
func otlpEndpoint(env envList) string {
	v, ok := env.LookupEnv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if !ok || strings.TrimSpace(v) == "" {
		v, _ = env.LookupEnv("OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if strings.TrimSpace(v) == "" {
		return ""
	}
	return taskmanager.RedactURL(v)
}

// redactEndpoints replaces the OTLP endpoints in s (an exporter's error
// names the URL it posted to) by their redacted form.
func redactEndpoints(s string, env envList) string {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if v, _ := env.LookupEnv(k); strings.TrimSpace(v) != "" {
			s = strings.ReplaceAll(s, strings.TrimSpace(v), taskmanager.RedactURL(v))
		}
	}
	return s
}

// otlpProtocol is the OTLP protocol the variables name (default
// http/protobuf); an error for one tmbridge cannot export with.
func otlpProtocol(env envList) (string, error) {
	v, _ := env.LookupEnv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if strings.TrimSpace(v) == "" {
		v, _ = env.LookupEnv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch p := cmp.Or(strings.TrimSpace(v), "http/protobuf"); p {
	case "http/protobuf", "grpc":
		return p, nil
	default:
		return p, fmt.Errorf("OTLP protocol %q: tmbridge exports traces as http/protobuf or grpc", p)
	}
}

// newTracerProvider returns a TracerProvider batching spans to the OTLP
// exporter of the protocol env names. The exporters read the rest of the
// OTEL_EXPORTER_OTLP_* variables (endpoint, headers, TLS, timeout) and the
// provider OTEL_TRACES_SAMPLER and OTEL_BSP_*, from the process's
// environment. The resource is service.name tmbridge (OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES override), the build's version and the worker
// id as service.instance.id.
func newTracerProvider(ctx context.Context, env envList, workerID string) (*sdktrace.TracerProvider, error) {
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch p, _ := otlpProtocol(env); p {
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", "tmbridge"), attribute.String("service.instance.id", workerID)}
	if v := Build().Version; v != "" {
		attrs = append(attrs, attribute.String("service.version", v))
	}
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithTelemetrySDK(), resource.WithFromEnv()) // later ones win
	if err != nil {
		return nil, fmt.Errorf("OpenTelemetry resource: %w", err)
	}
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}
