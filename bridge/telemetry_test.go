package bridge

import (
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.temporal.io/sdk/client"

	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// The SDK's metrics come out under the names of Temporal's Go SDK
// dashboard (sdk/temporal-go-sdk-otel.json): timers in seconds with the
// unit in the name, counters without "_total", gauges as they are, and no
// OpenTelemetry scope labels or target_info.
func TestTelemetry_sdk_metrics_have_the_dashboard_names(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	mh, err := NewTemporalMetrics(reg)
	require.NoError(t, err)
	h := mh.WithTags(map[string]string{"namespace": "default", "operation": "StartWorkflowExecution"})
	h.Counter("temporal_request").Inc(2)
	h.Timer("temporal_request_latency").Record(30 * time.Millisecond)
	h.Gauge("temporal_worker_task_slots_available").Update(4)

	families, err := reg.Gather()
	require.NoError(t, err)
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	require.NotContains(t, byName, "target_info")

	req := byName["temporal_request"]
	require.NotNil(t, req, "counter named as the dashboard's rate(temporal_request[…])")
	require.Equal(t, 2.0, req.GetMetric()[0].GetGauge().GetValue())

	lat := byName["temporal_request_latency_seconds"]
	require.NotNil(t, lat, "timer named as the dashboard's temporal_request_latency_seconds_bucket")
	require.Equal(t, dto.MetricType_HISTOGRAM, lat.GetType())
	hist := lat.GetMetric()[0].GetHistogram()
	require.Equal(t, 0.03, hist.GetSampleSum(), "in seconds")
	var bounds []float64
	for _, b := range hist.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
	}
	require.Equal(t, sdkLatencyBuckets, bounds)

	slots := byName["temporal_worker_task_slots_available"]
	require.NotNil(t, slots)
	require.Equal(t, 4.0, slots.GetMetric()[0].GetGauge().GetValue())

	labels := map[string]string{}
	for _, l := range lat.GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	require.Equal(t, map[string]string{"namespace": "default", "operation": "StartWorkflowExecution"}, labels, "the SDK's tags only: no otel_scope_* labels")
}

// The OTEL_* variables decide whether traces are exported: an endpoint or
// OTEL_TRACES_EXPORTER=otlp turns them on, none or OTEL_SDK_DISABLED off;
// an exporter or protocol tmbridge has not is an error.
func TestTelemetry_tracing_follows_the_otel_variables(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		env     []string
		on      bool
		wantErr string
	}{
		{env: nil},
		{env: []string{"OTEL_SERVICE_NAME=x", "OTEL_EXPORTER_OTLP_HEADERS=a=b"}},
		{env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318"}, on: true},
		{env: []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://collector:4318/v1/traces"}, on: true},
		{env: []string{"OTEL_TRACES_EXPORTER=otlp"}, on: true},
		{env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"}, on: true},
		{env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318", "OTEL_TRACES_EXPORTER=none"}},
		{env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318", "OTEL_SDK_DISABLED=TRUE"}},
		{env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318", "OTEL_SDK_DISABLED=false"}, on: true},
		{env: []string{"OTEL_TRACES_EXPORTER=console"}, wantErr: "OTLP only"},
		{env: []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json"}, wantErr: "http/json"},
	} {
		on, err := tracingWanted(envList(c.env))
		if c.wantErr != "" {
			require.ErrorContains(t, err, c.wantErr, "%v", c.env)
			continue
		}
		require.NoError(t, err, "%v", c.env)
		require.Equal(t, c.on, on, "%v", c.env)
	}
}

// The endpoint is logged without credentials, in the start-up line and in
// the exporter's errors.
func TestTelemetry_endpoint_is_logged_without_userinfo(t *testing.T) {
	t.Parallel()
	env := envList{"OTEL_EXPORTER_OTLP_ENDPOINT=https://user:s3cret@collector:4318/?token=s3cret"}
	got := otlpEndpoint(env)
	require.NotContains(t, got, "s3cret")
	require.Contains(t, got, "collector:4318")
	got = redactEndpoints("failed to send to https://user:s3cret@collector:4318/?token=s3cret: 503 Service Unavailable", env)
	require.NotContains(t, got, "s3cret")
	require.Contains(t, got, "collector:4318")
}

// Without OTEL_* variables and metrics_addr, nothing is added to the
// client and no tracer provider is installed.
func TestTelemetry_off_without_otel_variables(t *testing.T) {
	prev := otel.GetTracerProvider()
	var copts client.Options
	opts, flush, err := telemetry(Config{}, []string{"PATH=/bin"}, &copts, slog.Default())
	require.NoError(t, err)
	flush()
	require.Empty(t, opts)
	require.Nil(t, copts.MetricsHandler)
	require.Empty(t, copts.Interceptors)
	require.Equal(t, prev, otel.GetTracerProvider())

	opts, _, err = telemetry(Config{MetricsAddr: "127.0.0.1:0"}, nil, &copts, slog.Default())
	require.NoError(t, err)
	require.Len(t, opts, 1, "the metrics registry")
	require.NotNil(t, copts.MetricsHandler)
	require.Empty(t, copts.Interceptors)
}

// An OTLP endpoint installs the tracer provider and Temporal's tracing
// interceptor; the flush at exit returns.
func TestTelemetry_on_with_an_otlp_endpoint(t *testing.T) {
	prev := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	var copts client.Options
	_, flush, err := telemetry(Config{WorkerID: "w1"}, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1"}, &copts, slog.Default())
	require.NoError(t, err)
	require.Len(t, copts.Interceptors, 1)
	_, ok := otel.GetTracerProvider().(*sdktrace.TracerProvider)
	require.True(t, ok)
	flush() // no span yet: nothing to send
}

// A claimed task's spans: "claim", then "start" as its child, and the
// workflow start is made under "start", where Temporal's tracing
// interceptor picks the trace up for the workflow's header.
func TestTelemetry_claim_and_start_spans_make_one_trace(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)))
	t.Cleanup(func() { otel.SetTracerProvider(prev) })

	bb := setupBridge(t, devserver.StylePHP, nil)
	id := bb.create(t, "example.echo", map[string]any{"message": "traced"})
	bb.serve(t)
	require.Eventually(t, func() bool {
		return len(bb.temporal.snapshot("task-"+id)) == 1 && len(endedSpans(spans, id)) == 2
	}, eventually, 5*time.Millisecond)

	got := endedSpans(spans, id)
	claim, start := got["claim"], got["start"]
	require.NotNil(t, claim)
	require.NotNil(t, start)
	require.Equal(t, trace.SpanKindClient, claim.SpanKind())
	require.False(t, claim.Parent().IsValid(), "a claim starts its trace")
	require.Equal(t, claim.SpanContext().TraceID(), start.SpanContext().TraceID())
	require.Equal(t, claim.SpanContext().SpanID(), start.Parent().SpanID())
	require.Equal(t, start.SpanContext(), bb.temporal.snapshot("task-" + id)[0].span, "the start is made under the start span")
	attrs := map[string]string{}
	for _, kv := range start.Attributes() {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	require.Equal(t, map[string]string{"task_type": "example.echo", "task_id": id, "workflow_id": "task-" + id, "run": "open"}, attrs, "ids and names only")
}

// endedSpans are the ended spans of task id, by name.
func endedSpans(rec *tracetest.SpanRecorder, id string) map[string]sdktrace.ReadOnlySpan {
	out := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		for _, kv := range s.Attributes() {
			if kv.Key == "task_id" && kv.Value.AsString() == id {
				out[s.Name()] = s
			}
		}
	}
	return out
}
