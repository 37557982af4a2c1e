package e2e

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// dashboardMetrics are the series the panels of Temporal's Go SDK
// dashboard query (temporalio/dashboards sdk/temporal-go-sdk-otel.json,
// last changed in f10143b89ca887b1096f5c9498ec2f1599562007, the same at
// b5d9a1bc1888f73057f1639495e5773caad783ee), with the labels the panels
// group by: those present after one task that succeeds. The others are in
// dashboardEventMetrics.
var dashboardMetrics = map[string][]string{
	"temporal_request":                                                {"namespace", "operation"},
	"temporal_request_latency_seconds_bucket":                         {"namespace", "operation", "le"},
	"temporal_long_request_latency_seconds_bucket":                    {"namespace", "operation", "le"},
	"temporal_workflow_completed":                                     {"namespace", "workflow_type"},
	"temporal_workflow_endtoend_latency_seconds_bucket":               {"namespace", "workflow_type", "le"},
	"temporal_workflow_task_queue_poll_succeed":                       {"namespace", "task_queue"},
	"temporal_workflow_task_schedule_to_start_latency_seconds_bucket": {"namespace", "task_queue", "le"},
	"temporal_workflow_task_execution_latency_seconds_bucket":         {"namespace", "workflow_type", "le"},
	"temporal_workflow_task_replay_latency_seconds_bucket":            {"namespace", "workflow_type", "le"},
	"temporal_activity_schedule_to_start_latency_seconds_count":       {"namespace"},
	"temporal_activity_schedule_to_start_latency_seconds_bucket":      {"namespace", "task_queue", "le"},
	"temporal_activity_execution_latency_seconds_bucket":              {"namespace", "activity_type", "le"},
	"temporal_activity_succeed_endtoend_latency_seconds_bucket":       {"namespace", "activity_type", "le"},
	"temporal_worker_task_slots_available":                            {"namespace"},
	"temporal_worker_task_slots_used":                                 {"namespace"},
	"temporal_sticky_cache_size":                                      {"namespace"},
	"temporal_sticky_cache_hit":                                       {"namespace"},
	// Not on the dashboard: the poller counts.
	"temporal_num_pollers": {"namespace", "poller_type"},
}

// dashboardEventMetrics are the dashboard's other series: they appear
// with their events (failures, empty polls, cache misses, local
// activities). The dashboard's temporal_local_activity_execution_failed_total
// is the one name no setting matches: the SDK's counter is
// temporal_local_activity_execution_failed, and every other counter the
// dashboard queries has no "_total".
var dashboardEventMetrics = []string{
	"temporal_request_failure", "temporal_long_request_failure",
	"temporal_workflow_failed", "temporal_workflow_task_execution_failed", "temporal_workflow_task_queue_poll_empty",
	"temporal_activity_poll_no_task", "temporal_activity_execution_failed", "temporal_activity_execution_cancelled",
	"temporal_sticky_cache_miss", "temporal_sticky_cache_total_forced_eviction",
	"temporal_local_activity_execution_latency_seconds_bucket", "temporal_local_activity_succeed_endtoend_latency_seconds_bucket",
	"temporal_local_activity_execution_failed_total",
}

// The lists above cover every series the shipped copy of the dashboard
// (deploy/grafana/dashboards/temporal-sdk.json) queries.
func TestE2E_telemetry_lists_cover_the_shipped_sdk_dashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "grafana", "dashboards", "temporal-sdk.json"))
	require.NoError(t, err)
	queried := regexp.MustCompile(`\btemporal_[a-z_]+`).FindAllString(string(raw), -1)
	require.NotEmpty(t, queried)
	for _, name := range queried {
		_, listed := dashboardMetrics[name]
		require.True(t, listed || slices.Contains(dashboardEventMetrics, name), "the dashboard queries %s, which neither list has", name)
	}
}

// One task through the tmbridge binary with --metrics-addr and an OTLP
// endpoint: its /metrics carries the SDK's metrics under the dashboard's
// names next to the bridge's own, and its spans, exported at exit to an
// OTLP collector (over HTTP, then gRPC), make one trace from the claim to
// the report.
func TestE2E_telemetry_sdk_metrics_and_one_trace_per_task(t *testing.T) {
	for _, protocol := range []string{"http/protobuf", "grpc"} {
		t.Run(strings.ReplaceAll(protocol, "/", "-"), func(t *testing.T) { testTelemetry(t, protocol) })
	}
}

func testTelemetry(t *testing.T, protocol string) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.echo")
	marker := fmt.Sprintf("params-marker-%d", time.Now().UnixNano())
	id := s.create("example.echo", map[string]any{"message": marker})

	collector := newOTLPCollector(t, protocol)
	metricsAddr := freeAddr(t)
	env := append(s.environ(), "OTEL_EXPORTER_OTLP_ENDPOINT="+collector.url, "OTEL_EXPORTER_OTLP_PROTOCOL="+protocol)
	b := startBridgeBinary(t, s, env, "traced", "--metrics-addr="+metricsAddr)

	s.waitFinal([]string{id})
	require.Equal(t, "completed", s.tm.Tasks()[0].Status)
	// The run closes after the report: its last metrics are recorded then.
	require.NoError(t, s.tc.GetWorkflow(context.Background(), s.prefix+id, "").Get(context.Background(), nil))

	// Metrics. The deadline only guards against a hang.
	var missing []string
	var fams map[string]*dto.MetricFamily
	for deadline := time.Now().Add(2 * time.Minute); ; {
		fams = scrapeMetrics(t, "http://"+metricsAddr)
		if missing = missingMetrics(fams); len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Empty(t, missing, "the dashboard's series, with the labels its panels group by")
	require.Contains(t, fams, "tmbridge_claims_total", "the bridge's own metrics on the same /metrics")
	_, text := httpGet("http://" + metricsAddr + "/metrics")
	require.NotContains(t, text, "otel_scope_")
	require.NotContains(t, text, "target_info")

	// Spans: all exported when the bridge stops.
	b.stop(t)
	requireOneTrace(t, collector.all(), id, s.prefix+id, "traced", marker)
}

// missingMetrics lists the dashboardMetrics series families lacks, or
// lacks with the labels the dashboard groups by.
func missingMetrics(families map[string]*dto.MetricFamily) []string {
	var missing []string
	for name, labels := range dashboardMetrics {
		family := families[name]
		for _, suffix := range []string{"_bucket", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && family == nil {
				family = families[base] // histograms are parsed under their base name
			}
		}
		found := false
		for _, m := range family.GetMetric() {
			have := map[string]bool{"le": family.GetType().String() == "HISTOGRAM"}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue() != ""
			}
			if !slices.ContainsFunc(labels, func(l string) bool { return !have[l] }) {
				found = true
			}
		}
		if !found {
			missing = append(missing, name)
		}
	}
	slices.Sort(missing)
	return missing
}

// span is an exported span, reduced to what the test looks at.
type span struct {
	trace, id, parent string
	name              string
	attrs             map[string]string
	resource          map[string]string
}

// requireOneTrace checks that task id's spans form one trace: claim →
// start → StartWorkflow → RunWorkflow → StartActivity → RunActivity, for
// the handler and for the report, and that no span holds its params or
// the API key.
func requireOneTrace(t *testing.T, spans []span, id, workflowID, workerID, marker string) {
	t.Helper()
	var claim *span
	for i, sp := range spans {
		if sp.name == "claim" && sp.attrs["task_id"] == id {
			claim = &spans[i]
		}
	}
	require.NotNil(t, claim, "a claim span for task %s among %d spans", id, len(spans))
	require.Equal(t, "example.echo", claim.attrs["task_type"])
	require.Empty(t, claim.parent, "the claim starts the trace")
	require.Equal(t, "tmbridge", claim.resource["service.name"])
	require.Equal(t, workerID, claim.resource["service.instance.id"])

	var trace []span
	for _, sp := range spans {
		if sp.trace == claim.trace {
			trace = append(trace, sp)
		}
	}
	// children lists the spans named name whose parent is one of parents.
	children := func(name string, parents ...span) []span {
		var found []span
		for _, sp := range trace {
			for _, p := range parents {
				if sp.parent == p.id && sp.name == name {
					found = append(found, sp)
				}
			}
		}
		return found
	}
	// child returns the one span named name under one of parents.
	child := func(name string, parents ...span) span {
		t.Helper()
		found := children(name, parents...)
		require.Len(t, found, 1, "one %q span under %q; the trace: %s", name, parents[0].name, describe(trace))
		return found[0]
	}
	start := child("start", *claim)
	require.Equal(t, workflowID, start.attrs["workflow_id"])
	startWF := child("StartWorkflow:tmbridge.Task", start)
	require.Equal(t, workflowID, startWF.attrs["temporalWorkflowID"])
	// One RunWorkflow span per workflow task run that was not a replay,
	// and a StartActivity span each time it scheduled an activity: a
	// workflow task that timed out (a loaded machine) runs again, with
	// spans of its own. Each activity ran once.
	runs := children("RunWorkflow:tmbridge.Task", startWF)
	require.NotEmpty(t, runs, "a RunWorkflow span under StartWorkflow; the trace: %s", describe(trace))
	for _, activity := range []string{"example.echo", "tmbridge.ReportOutcome"} {
		scheduled := children("StartActivity:"+activity, runs...)
		require.NotEmpty(t, scheduled, "a StartActivity:%s span under RunWorkflow; the trace: %s", activity, describe(trace))
		child("RunActivity:"+activity, scheduled...)
	}
	t.Logf("the task's trace, %d spans:%s", len(trace), describe(trace))

	for _, sp := range spans {
		for k, v := range sp.attrs {
			require.NotContains(t, v, marker, "span %s attribute %s holds the task's params", sp.name, k)
			require.NotContains(t, v, apiKey, "span %s attribute %s holds the API key", sp.name, k)
		}
	}
}

func describe(spans []span) string {
	var b strings.Builder
	for _, sp := range spans {
		fmt.Fprintf(&b, "\n  %s %s (parent %s)", sp.id, sp.name, sp.parent)
	}
	return b.String()
}

// otlpCollector is an OTLP trace receiver on 127.0.0.1, over HTTP
// (protobuf) or gRPC, keeping the spans it receives.
type otlpCollector struct {
	coltracepb.UnimplementedTraceServiceServer
	url   string
	mu    sync.Mutex
	spans []span
}

func newOTLPCollector(t *testing.T, protocol string) *otlpCollector {
	c := &otlpCollector{}
	if protocol == "grpc" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		srv := grpc.NewServer()
		coltracepb.RegisterTraceServiceServer(srv, c)
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(srv.Stop)
		c.url = "http://" + l.Addr().String()
		return c
	}
	srv := httptest.NewServer(http.HandlerFunc(c.exportHTTP))
	t.Cleanup(srv.Close)
	c.url = srv.URL
	return c
}

// Export receives spans over gRPC.
func (c *otlpCollector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.add(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// exportHTTP receives spans over HTTP.
func (c *otlpCollector) exportHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = gz
	}
	raw, err := io.ReadAll(body)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(raw, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.add(&req)
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (c *otlpCollector) add(req *coltracepb.ExportTraceServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		res := attrMap(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				c.spans = append(c.spans, span{
					trace: hex.EncodeToString(sp.GetTraceId()), id: hex.EncodeToString(sp.GetSpanId()),
					parent: hex.EncodeToString(sp.GetParentSpanId()), name: sp.GetName(),
					attrs: attrMap(sp.GetAttributes()), resource: res,
				})
			}
		}
	}
}

func (c *otlpCollector) all() []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.spans)
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		v := kv.GetValue()
		switch {
		case v.GetStringValue() != "":
			m[kv.GetKey()] = v.GetStringValue()
		default:
			m[kv.GetKey()] = fmt.Sprint(v.GetIntValue())
		}
	}
	return m
}
