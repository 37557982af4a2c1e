package bridge

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the bridge's Prometheus metrics.
type metrics struct {
	reg      *prometheus.Registry
	claims   *prometheus.CounterVec
	started  *prometheus.CounterVec
	finished *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tmbridge_claims_total", Help: "Claim calls by task type and result (claimed, empty, error).",
		}, []string{"task_type", "result"}),
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tmbridge_workflows_started_total", Help: "Task workflows started or signalled with a new claim.",
		}, []string{"task_type"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tmbridge_workflows_finished_total", Help: "Task workflows of this worker that closed.",
		}, []string{"result"}),
	}
	m.reg.MustRegister(m.claims, m.started, m.finished, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler(adm *admission) http.Handler {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tmbridge_tasks_in_flight", Help: "Claimed tasks whose workflow has not closed.",
	}, func() float64 { return float64(adm.inFlight()) }))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return mux
}
