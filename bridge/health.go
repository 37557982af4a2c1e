package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.temporal.io/sdk/client"
)

// serveMetrics serves /metrics, /healthz and /readyz on metrics_addr (if
// set, and once) until the bridge stops. It listens before Run's first checks, so
// that an orchestrator's probes are answered while the bridge starts; an
// address that cannot be listened on fails the start.
func (b *Bridge) serveMetrics() error {
	if b.cfg.MetricsAddr == "" || b.metricsURL != "" { // off, or served by an earlier Run whose checks failed
		return nil
	}
	ln, err := net.Listen("tcp", b.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics_addr: %w", err)
	}
	b.metricsURL = "http://" + ln.Addr().String()
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(b.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeHealth(w, http.StatusOK, health{Status: "alive"})
	})
	mux.HandleFunc("GET /readyz", b.serveReady)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Error("metrics server stopped", "addr", b.cfg.MetricsAddr, "err", err)
		}
	}()
	// Up until Stop is done, not only until claiming ends: /healthz says
	// alive, /readyz not ready (its worker check says it is stopping), and
	// the last metrics can be scraped.
	go func() { <-b.stopDone; _ = srv.Close() }()
	b.log.Info("serving metrics and health", "metrics", b.metricsURL+"/metrics", "ready", b.metricsURL+"/readyz")
	return nil
}

// health is the JSON answer of /healthz and /readyz.
type health struct {
	Status string            `json:"status"`           // alive, ready or not ready
	Checks map[string]string `json:"checks,omitempty"` // check → "ok" or what failed
}

func writeHealth(w http.ResponseWriter, code int, h health) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(h)
}

// readyCache keeps the last readiness answer: probes of several
// orchestrators at once cost TaskManager and Temporal one call a second.
type readyCache struct {
	mu   sync.Mutex
	at   time.Time
	last health
}

// readyFor is how long a readiness answer is reused.
const readyFor = time.Second

// readyTimeout bounds each readiness check: below the usual probe timeout
// (timeoutSeconds: 3 in deploy/kubernetes), so that a slow dependency
// is a 503 that says which, not a probe timeout.
const readyTimeout = 2 * time.Second

// serveReady answers 200 when TaskManager and Temporal answer and the
// worker polls, else 503 with what failed.
func (b *Bridge) serveReady(w http.ResponseWriter, r *http.Request) {
	h := b.readiness(r.Context())
	code := http.StatusOK
	if h.Status != "ready" {
		code = http.StatusServiceUnavailable
	}
	writeHealth(w, code, h)
}

// readiness checks the worker, TaskManager and Temporal, or gives the
// answer of a check less than readyFor ago.
func (b *Bridge) readiness(ctx context.Context) health {
	b.ready.mu.Lock()
	defer b.ready.mu.Unlock()
	if time.Since(b.ready.at) < readyFor {
		return b.ready.last
	}
	// Not the prober's context: one that gave up must not fail the
	// answer every prober gets for the next second.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyTimeout)
	defer cancel()
	checks := map[string]string{"worker": "ok", "taskmanager": "ok", "temporal": "ok"}
	var wg sync.WaitGroup
	var mu sync.Mutex
	set := func(name string, err error) {
		if err != nil {
			mu.Lock()
			checks[name] = err.Error() // the clients' errors never hold a secret
			mu.Unlock()
		}
	}
	if !b.polling.Load() {
		checks["worker"] = "not polling: the bridge is starting or stopping"
	}
	wg.Go(func() {
		_, err := b.api.Health(ctx)
		if err == nil && b.auth.refused.Load() {
			// Its health needs no key; claims and reports do.
			err = errors.New("TaskManager refuses the API key (401) on the bridge's calls: check TASKMANAGER_API_KEY")
		}
		set("taskmanager", err)
	})
	wg.Go(func() {
		_, err := b.runs.CheckHealth(ctx, &client.CheckHealthRequest{})
		set("temporal", err)
	})
	wg.Wait()
	h := health{Status: "ready", Checks: checks}
	for _, v := range checks {
		if v != "ok" {
			h.Status = "not ready"
		}
	}
	b.ready.at, b.ready.last = time.Now(), h
	return h
}

// keyRefusal follows whether TaskManager refuses the API key: its last
// answer to a call that sends the key (every call but its health) was a
// 401, until one is answered otherwise. Readiness reports it without a
// call of its own: an idle bridge still lists pending tasks every poll
// interval.
type keyRefusal struct{ refused atomic.Bool }

// apiObserver is the TaskManager client's Observe: each call goes to the
// metrics and to auth.
func apiObserver(m *metrics, auth *keyRefusal) func(endpoint string, status int, took time.Duration) {
	return func(endpoint string, status int, took time.Duration) {
		m.observeAPI(endpoint, status, took)
		auth.note(endpoint, status)
	}
}

// note takes one answered call.
func (k *keyRefusal) note(endpoint string, status int) {
	if endpoint == "health" || status == 0 { // no key sent, or no answer
		return
	}
	k.refused.Store(status == http.StatusUnauthorized)
}
