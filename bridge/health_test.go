package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// get fetches url and returns its status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// readyz asks /readyz afresh (past the one-second cache).
func readyz(t *testing.T, b *Bridge) (int, health) {
	t.Helper()
	b.ready.mu.Lock()
	b.ready.at = time.Time{}
	b.ready.mu.Unlock()
	code, body := get(t, b.metricsURL+"/readyz")
	var h health
	require.NoError(t, json.Unmarshal([]byte(body), &h), body)
	return code, h
}

// /healthz answers while the process lives; /readyz only while
// TaskManager and Temporal answer and the worker polls, saying what failed.
func TestHealth_endpoints(t *testing.T) {
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	b := bb.b
	require.NoError(t, b.serveMetrics())

	code, body := get(t, b.metricsURL+"/healthz")
	require.Equal(t, http.StatusOK, code)
	require.JSONEq(t, `{"status":"alive"}`, body)

	code, h := readyz(t, b)
	require.Equal(t, http.StatusServiceUnavailable, code, "the worker does not poll yet")
	require.Equal(t, "not ready", h.Status)
	require.Contains(t, h.Checks["worker"], "not polling")
	require.Equal(t, "ok", h.Checks["taskmanager"])
	require.Equal(t, "ok", h.Checks["temporal"])

	b.polling.Store(true)
	code, h = readyz(t, b)
	require.Equal(t, http.StatusOK, code, h)
	require.Equal(t, health{Status: "ready", Checks: map[string]string{"worker": "ok", "taskmanager": "ok", "temporal": "ok"}}, h)

	// A prober that gave up does not fail the answer the others get.
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	b.ready.mu.Lock()
	b.ready.at = time.Time{}
	b.ready.mu.Unlock()
	require.Equal(t, "ready", b.readiness(gone).Status)

	bb.temporal.setDown(true)
	code, h = readyz(t, b)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.NotEqual(t, "ok", h.Checks["temporal"])
	require.Equal(t, "ok", h.Checks["taskmanager"])
	bb.temporal.setDown(false)

	bb.tm.InjectFault(devserver.Fault{Path: "/health", Status: http.StatusServiceUnavailable})
	code, h = readyz(t, b)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, h.Checks["taskmanager"], "503")
	require.Equal(t, "ok", h.Checks["temporal"])
	bb.tm.ClearFaults()

	// Stop first ends claiming and starts (bg), then waits for the worker
	// and its handlers, up to the shutdown grace and more: the server
	// answers all that time (/readyz: stopping). Before, it closed with bg,
	// and probes and scrapes met a refused connection for up to a minute.
	down := func() bool {
		resp, err := http.Get(b.metricsURL + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	}
	b.polling.Store(false)
	b.bgCancel()
	require.Never(t, down, 300*time.Millisecond, 10*time.Millisecond, "the server answers while Stop waits for the worker")
	code, h = readyz(t, b)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, h.Checks["worker"], "not polling")
	b.stopDoneOnce.Do(func() { close(b.stopDone) }) // what Stop ends with
	require.Eventually(t, down, eventually, 10*time.Millisecond, "the server stops with the bridge")
}

// A metrics address that cannot be listened on fails the start.
func TestHealth_address_in_use_fails_the_start(t *testing.T) {
	first := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	require.NoError(t, first.b.serveMetrics())
	addr := strings.TrimPrefix(first.b.metricsURL, "http://")
	second := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MetricsAddr = addr })
	err := second.b.serveMetrics()
	require.ErrorContains(t, err, "metrics_addr")
	require.ErrorContains(t, err, "address already in use")
}

// scrape parses /metrics.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, url+"/metrics")
	require.Equal(t, http.StatusOK, code)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	return fams
}

// The bridge's metrics count what happened: claims and their latency,
// starts' latency, TaskManager calls by endpoint and status, the age of
// the oldest open claim against the claim timeout, report attempts, and
// which build runs.
func TestMetrics_say_what_happened(t *testing.T) {
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	bb.only("example.echo")
	b := bb.b
	require.NoError(t, b.serveMetrics())
	for i := range 3 {
		bb.create(t, "example.echo", map[string]any{"message": i}) // distinct: TaskManager dedupes
	}
	bb.serve(t)
	require.Eventually(t, func() bool { return bb.temporal.runCount() == 3 }, eventually, 10*time.Millisecond)
	require.Eventually(t, func() bool { return b.adm.openRuns() == 3 }, eventually, 10*time.Millisecond) // opened: starts counted too
	b.reported("task-1", 1, nil)
	b.reported("task-1", 1, errors.New("TaskManager unreachable"))
	b.reported("task-2", 1, nil)

	fams := scrape(t, b.metricsURL)
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f, ok := fams[name]
		require.True(t, ok, "metric %s is exported", name)
	next:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
		t.Fatalf("no %s with %v", name, labels)
		return 0
	}
	require.Equal(t, 3.0, value("tmbridge_claims_total", map[string]string{"task_type": "example.echo", "result": "claimed"}))
	require.GreaterOrEqual(t, value("tmbridge_claim_duration_seconds", map[string]string{"task_type": "example.echo"}), 3.0)
	require.Equal(t, 3.0, value("tmbridge_start_duration_seconds", map[string]string{"task_type": "example.echo"}))
	require.Equal(t, 3.0, value("tmbridge_workflows_started_total", map[string]string{"task_type": "example.echo"}))
	require.GreaterOrEqual(t, value("tmbridge_taskmanager_request_duration_seconds", map[string]string{"endpoint": "claim", "status": "200"}), 3.0)
	require.Equal(t, 1.0, value("tmbridge_tasks_in_flight", nil), "two outcomes landed")
	require.Equal(t, 2.0, value("tmbridge_workflows_finished_total", map[string]string{"result": "reported"}))
	require.Greater(t, value("tmbridge_oldest_claim_age_seconds", nil), 0.0)
	require.Equal(t, 300.0, value("tmbridge_claim_timeout_seconds", nil))
	require.Equal(t, 2.0, value("tmbridge_report_attempts_total", map[string]string{"result": "ok"}))
	require.Equal(t, 1.0, value("tmbridge_report_attempts_total", map[string]string{"result": "error"}))
	bi := Build()
	require.Equal(t, 1.0, value("tmbridge_build_info", map[string]string{"version": bi.Version, "commit": bi.Commit, "go_version": bi.GoVersion, "sdk_version": bi.SDKVersion}))

	// Once every run closed, no claim is open.
	for _, id := range b.adm.openIDs() {
		bb.temporal.close(id)
	}
	require.Eventually(t, func() bool { return b.adm.inFlight() == 0 }, eventually, 10*time.Millisecond)
	fams = scrape(t, b.metricsURL)
	require.Equal(t, 0.0, value("tmbridge_oldest_claim_age_seconds", nil))
}

// A registry given with WithMetricsRegistry may hold the Go and process
// collectors already, or the metrics of an earlier bridge: New takes it
// as it is, and the state gauges read the newest bridge.
func TestMetrics_on_a_registry_in_use(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	first := newMetrics(reg)
	first.registerState(newAdmission(1, 0), 1, time.Minute)
	first.claims.WithLabelValues("t", "claimed").Inc()
	second := newMetrics(reg)
	second.registerState(newAdmission(1, 0), 2, 2*time.Minute)
	second.claims.WithLabelValues("t", "claimed").Inc()

	fams, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, f := range fams {
		if m := f.GetMetric(); len(m) == 1 && m[0].Counter != nil {
			got[f.GetName()] = m[0].Counter.GetValue()
		} else if len(m) == 1 && m[0].Gauge != nil {
			got[f.GetName()] = m[0].Gauge.GetValue()
		}
	}
	require.Equal(t, 2.0, got["tmbridge_claims_total"], "one counter, shared")
	require.Equal(t, 120.0, got["tmbridge_claim_timeout_seconds"], "the newest bridge's state")
}

// A registry whose own Go collector is configured otherwise (its runtime
// metrics collide with some of the default one's) is taken as it is.
// Before, New panicked: "descriptor … already exists". Found by a review.
func TestMetrics_on_a_registry_with_its_own_Go_collector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsGC)))
	require.NotPanics(t, func() { newMetrics(reg) })
	_, err := reg.Gather()
	require.NoError(t, err)
}

// /readyz is not ready while TaskManager refuses the API key (rotated,
// revoked): its health needs no key, but every claim and report fails.
// It says so from the bridge's own calls, adding none; ready again once a
// call passes. Before, it answered ready. (Found by a review.)
func TestHealth_not_ready_while_the_api_key_is_refused(t *testing.T) {
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	b := bb.b
	require.NoError(t, b.serveMetrics())
	b.polling.Store(true)
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks", Status: http.StatusUnauthorized, Body: `{"success":false,"error":"Invalid API key"}`})
	_, err := b.api.ListTasks(context.Background(), taskmanager.TaskFilter{Status: taskmanager.StatusPending, Limit: 1})
	require.ErrorIs(t, err, taskmanager.ErrUnauthorized)
	code, h := readyz(t, b)
	require.Equal(t, http.StatusServiceUnavailable, code, h)
	require.Contains(t, h.Checks["taskmanager"], "refuses the API key")
	require.Equal(t, "ok", h.Checks["temporal"])

	bb.tm.ClearFaults()
	_, err = b.api.ListTasks(context.Background(), taskmanager.TaskFilter{Status: taskmanager.StatusPending, Limit: 1})
	require.NoError(t, err)
	code, h = readyz(t, b)
	require.Equal(t, http.StatusOK, code, h)
}
