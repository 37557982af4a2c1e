package bridge

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/internal/heldrun"
)

// metrics are the bridge's Prometheus metrics, served on /metrics with the
// Go and process collectors. Each is documented in the README (Operating
// it: Health, metrics and version) and drawn by deploy/grafana/dashboards/tmbridge.json.
type metrics struct {
	reg            *prometheus.Registry
	claims         *prometheus.CounterVec
	claimDuration  *prometheus.HistogramVec
	startDuration  *prometheus.HistogramVec
	started        *prometheus.CounterVec
	finished       *prometheus.CounterVec
	reportAttempts *prometheus.CounterVec
	apiDuration    *prometheus.HistogramVec
}

// latencyBuckets suit calls and starts: 5 ms to 20 s.
var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20}

// newMetrics registers the bridge's metrics on reg (nil: a new registry).
func newMetrics(reg *prometheus.Registry) *metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		reg: reg,
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tmbridge_claims_total", Help: "Claim calls by task type and result: claimed (a task to run), renewed (this bridge's own running task, claimed again once its claim timed out), empty, error.",
		}, []string{"task_type", "result"}),
		claimDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tmbridge_claim_duration_seconds", Help: "How long claim calls (POST /tasks/claim) took, by task type.", Buckets: latencyBuckets,
		}, []string{"task_type"}),
		startDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tmbridge_start_duration_seconds", Help: "From a task's claim to its workflow started (or the claim signalled to its open run), by task type.", Buckets: latencyBuckets,
		}, []string{"task_type"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tmbridge_workflows_started_total", Help: "Task workflows started or signalled with a new claim.",
		}, []string{"task_type"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tmbridge_workflows_finished_total", Help: "Task workflows of this worker no longer counted in flight (once per claim that opened one): result reported (its outcome landed in TaskManager) or closed (Temporal says it closed).",
		}, []string{"result"}),
		reportAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tmbridge_report_attempts_total", Help: "Attempts to report a task's outcome to TaskManager (POST /tasks/{id}/complete), the bridge's own failures of tasks it cannot start included, by result: ok; error (retried until TaskManager has it); refused (a final answer, not retried: the task was ended or claimed again by another, is gone, or refused the outcome).",
		}, []string{"result"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tmbridge_taskmanager_request_duration_seconds", Help: "TaskManager API calls by endpoint and HTTP status (0: no answer).", Buckets: latencyBuckets,
		}, []string{"endpoint", "status"}),
	}
	bi := Build()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tmbridge_build_info", Help: "Always 1; its labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "commit": bi.Commit, "go_version": bi.GoVersion, "sdk_version": bi.SDKVersion},
	})
	info.Set(1)
	m.claims = register(reg, m.claims)
	m.claimDuration = register(reg, m.claimDuration)
	m.startDuration = register(reg, m.startDuration)
	m.started = register(reg, m.started)
	m.finished = register(reg, m.finished)
	m.reportAttempts = register(reg, m.reportAttempts)
	m.apiDuration = register(reg, m.apiDuration)
	register(reg, prometheus.Collector(info))
	registerShared(reg, collectors.NewGoCollector())
	registerShared(reg, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Results seen from the start, so that rate() and alerts work from
	// the first scrape.
	for _, result := range reportResults {
		m.reportAttempts.WithLabelValues(result)
	}
	for _, result := range finishedResults {
		m.finished.WithLabelValues(result)
	}
	return m
}

// The values of the result labels (the alert rules' tests check theirs).
var (
	claimResults    = []string{"claimed", "renewed", "empty", "error"}
	reportResults   = []string{"ok", "error", "refused"}
	finishedResults = []string{"reported", "closed"}
)

// serveTypes sets up the claim results of each type served at 0, so that
// an alert comparing rates (claims failing while none succeeds) has series
// from the first scrape.
func (m *metrics) serveTypes(types []servedType) {
	for _, t := range types {
		for _, result := range claimResults {
			m.claims.WithLabelValues(t.Name, result)
		}
	}
}

// observeAPI records one TaskManager call (taskmanager.Options.Observe).
func (m *metrics) observeAPI(endpoint string, status int, took time.Duration) {
	m.apiDuration.WithLabelValues(endpoint, strconv.Itoa(status)).Observe(took.Seconds())
}

// observeReport records one attempt to report an outcome: ok, error
// (retried), or refused (TaskManager's final answer: a non-retryable
// error, see activities.Report).
func (m *metrics) observeReport(err error) {
	var appErr *temporal.ApplicationError
	switch {
	case err == nil:
		m.reportAttempts.WithLabelValues("ok").Inc()
	case errors.As(err, &appErr) && appErr.NonRetryable() && appErr.Type() != activities.ErrTypeUncertain: // a lost answer is no answer
		m.reportAttempts.WithLabelValues("refused").Inc()
	default:
		m.reportAttempts.WithLabelValues("error").Inc()
	}
}

// register registers c on reg, or returns the collector registered
// before under its name (a registry given with WithMetricsRegistry may
// hold the Go and process collectors, or the metrics of an earlier
// bridge). Another metric under one of its names is a programming error.
func register[C prometheus.Collector](reg *prometheus.Registry, c C) C {
	err := reg.Register(c)
	var dup prometheus.AlreadyRegisteredError
	switch {
	case err == nil:
		return c
	case errors.As(err, &dup):
		if old, ok := dup.ExistingCollector.(C); ok {
			return old
		}
	}
	panic(fmt.Sprintf("tmbridge metrics: %v", err))
}

// registerShared registers a collector of the process (Go runtime,
// process) unless reg has one already, whatever its options: a registry
// given with WithMetricsRegistry may hold its own, configured otherwise,
// whose metrics then collide with some of this one's.
func registerShared(reg *prometheus.Registry, c prometheus.Collector) {
	_ = reg.Register(c)
}

// registerState adds the gauges read from the bridge's state (and the
// process's: tmbridge_runs_held) at scrape time, in place of those of an earlier bridge on the same registry (New
// calls it, so that a registry given with WithMetricsRegistry has them
// too).
func (m *metrics) registerState(adm *admission, maxInFlight int, claimTimeout time.Duration) {
	gauges := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tmbridge_tasks_in_flight", Help: "Places of max_in_flight taken: claimed tasks whose outcome has not landed and whose run has not closed, and claim calls whose answer was lost (held until a sweep of this worker's claims shows whether they took a task).",
		}, func() float64 { return float64(adm.inFlight()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tmbridge_max_in_flight", Help: "The max_in_flight configured: tmbridge_tasks_in_flight stops there.",
		}, func() float64 { return float64(maxInFlight) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tmbridge_oldest_claim_age_seconds", Help: "Age of the oldest claim of this bridge whose run is open (0: none). Past tmbridge_claim_timeout_seconds, TaskManager may hand the task to another worker; the bridge claims such a task again itself when it has room, and its run goes on either way.",
		}, func() float64 {
			at := adm.oldestClaim()
			if at.IsZero() {
				return 0
			}
			return time.Since(at).Seconds()
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tmbridge_runs_held", Help: "Task runs whose workflow code this process holds, for all its bridges (in the worker's cache, shared by the process, or in a workflow task); a local handler whose run it no longer holds reads the task before it runs.",
		}, func() float64 { return float64(heldrun.Count()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tmbridge_claim_timeout_seconds", Help: "The claim timeout configured (claim_timeout): TaskManager's, which the oldest claim's age is compared with.",
		}, func() float64 { return claimTimeout.Seconds() }),
	}
	for _, g := range gauges {
		m.reg.Unregister(g)
		m.reg.MustRegister(g)
	}
}

// runFinished counts a run no longer counted in flight: result "reported"
// when this worker's report landed its outcome, "closed" when Temporal
// said it closed (or is gone, or serves another worker's claim now).
func (m *metrics) runFinished(landed bool) {
	result := "closed"
	if landed {
		result = "reported"
	}
	m.finished.WithLabelValues(result).Inc()
}
