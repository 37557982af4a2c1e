package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/bridge"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// freeAddr returns a 127.0.0.1 address nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// httpGet returns url's status and body; status 0 when nothing answers.
func httpGet(url string) (int, string) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// scrapeMetrics parses the bridge's /metrics.
func scrapeMetrics(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpGet(base + "/metrics")
	require.Equal(t, http.StatusOK, code, body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	return fams
}

// sample returns the value of name's series whose labels include want
// (a histogram's count), and whether there is one.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
next:
	for _, m := range fams[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// The real binary answers /healthz at once, /readyz once it claims, and
// its /metrics say what it did and which build it is.
func TestE2E_health_readiness_and_metrics(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.echo")
	var ids []string
	for i := range 3 {
		ids = append(ids, s.create("example.echo", map[string]any{"message": fmt.Sprintf("m%d", i)}))
	}
	addr := freeAddr(t)
	base := "http://" + addr
	b := startBridgeBinary(t, s, s.environ(), "observed", "--metrics-addr="+addr)

	require.Eventually(t, func() bool { code, _ := httpGet(base + "/healthz"); return code == http.StatusOK }, time.Minute, 20*time.Millisecond)
	var ready struct {
		Status string            `json:"status"`
		Checks map[string]string `json:"checks"`
	}
	require.Eventually(t, func() bool {
		code, body := httpGet(base + "/readyz")
		return code == http.StatusOK && json.Unmarshal([]byte(body), &ready) == nil
	}, time.Minute, 50*time.Millisecond)
	require.Equal(t, "ready", ready.Status)
	require.Equal(t, map[string]string{"worker": "ok", "taskmanager": "ok", "temporal": "ok"}, ready.Checks)

	s.waitFinal(ids)
	s.requireOneOutcomeEach(ids)
	fams := scrapeMetrics(t, base)
	must := func(name string, labels map[string]string) float64 {
		t.Helper()
		v, ok := sample(fams, name, labels)
		require.True(t, ok, "%s%v is exported", name, labels)
		return v
	}
	require.Equal(t, 3.0, must("tmbridge_claims_total", map[string]string{"task_type": "example.echo", "result": "claimed"}))
	require.Equal(t, 3.0, must("tmbridge_start_duration_seconds", map[string]string{"task_type": "example.echo"}))
	require.GreaterOrEqual(t, must("tmbridge_report_attempts_total", map[string]string{"result": "ok"}), 3.0)
	require.GreaterOrEqual(t, must("tmbridge_taskmanager_request_duration_seconds", map[string]string{"endpoint": "complete", "status": "200"}), 3.0)
	require.Equal(t, 300.0, must("tmbridge_claim_timeout_seconds", nil))
	// The GC runs at bridge.DefaultGOGC unless GOGC says otherwise.
	if _, set := os.LookupEnv("GOGC"); !set {
		require.Equal(t, float64(bridge.DefaultGOGC), must("go_gc_gogc_percent", nil))
	}

	// The build: the binary was built from this repository with VCS
	// stamping, so its commit is HEAD's.
	info := fams["tmbridge_build_info"].GetMetric()
	require.Len(t, info, 1)
	labels := map[string]string{}
	for _, l := range info[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	out, err := exec.Command(bin("tmbridge"), "--version").Output()
	require.NoError(t, err)
	require.Equal(t, fmt.Sprintf("tmbridge %s (commit %s, %s, Temporal Go SDK %s)\n", labels["version"], labels["commit"], labels["go_version"], labels["sdk_version"]), string(out))
	// In a clone (.git a directory; Go does not stamp from a worktree's
	// .git file) the commit must be HEAD's.
	if fi, err := os.Stat("../.git"); err == nil && fi.IsDir() {
		head, err := exec.Command("git", "rev-parse", "HEAD").Output()
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(labels["commit"], strings.TrimSpace(string(head))), "build_info commit %q is HEAD %s", labels["commit"], head)
	}

	b.stop(t)
	for key, label := range map[string]string{"version": "version", "commit": "commit", "go": "go_version", "temporal_sdk": "sdk_version"} {
		require.Contains(t, b.stderr.String(), `"`+key+`":"`+labels[label]+`"`, "the banner names the build")
	}
	code, _ := httpGet(base + "/healthz")
	require.Zero(t, code, "the health server stops with the bridge")
}

// A SIGTERM while the bridge starts (here: Temporal accepts the connection
// and never answers) stops it cleanly, exit 0, as one while it claims does.
func TestE2E_sigterm_while_starting_exits_zero(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { silent.Close() })
	accepted := make(chan struct{})
	go func() {
		var once sync.Once
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			once.Do(func() { close(accepted) })
			t.Cleanup(func() { c.Close() })
		}
	}()
	b := startBridgeBinary(t, s, s.environ(), "starting", "--temporal-address="+silent.Addr().String())
	select { // the bridge dials Temporal: it is past its banner and its checks of the config
	case <-accepted:
	case <-time.After(time.Minute): // a guard against a hang, not a timing assertion
		t.Fatal("the bridge never dialled Temporal")
	}
	b.stop(t) // requires exit 0
	require.Contains(t, b.stderr.String(), "stopped before it connected to Temporal")
	require.Zero(t, s.tm.Stats().ClaimCalls)
}
