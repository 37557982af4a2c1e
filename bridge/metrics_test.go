package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// counterValue reads a counter.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}

// apiCalls counts the TaskManager calls answered with status.
func apiCalls(t *testing.T, m *metrics, status string) uint64 {
	t.Helper()
	fams, err := m.reg.Gather()
	require.NoError(t, err)
	var n uint64
	for _, f := range fams {
		if f.GetName() != "tmbridge_taskmanager_request_duration_seconds" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "status" && l.GetValue() == status {
					n += s.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return n
}

// While TaskManager answers every call with a 5xx, its calls keep being
// made and counted: TmbridgeTaskManagerFailing alerts on them. Claims
// stop once max_in_flight places are held for claims whose answer was
// lost (held until a sweep can look), and the alert on claim errors it
// replaced could never fire for that. (Found by a review.)
func TestMetrics_calls_keep_failing_and_counted_while_TaskManager_is_down(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MaxInFlight = 2 })
	bb.only("example.echo")
	bb.create(t, "example.echo", map[string]any{"message": "claimed before the outage"})
	bb.serve(t)
	require.Eventually(t, func() bool { return bb.b.adm.claimed() == 1 }, eventually, 5*time.Millisecond, "claiming began")
	bb.tm.InjectFault(devserver.Fault{Status: http.StatusServiceUnavailable}) // every call
	claimErrors := func() float64 { return counterValue(t, bb.b.metrics.claims.WithLabelValues("example.echo", "error")) }
	// Claims stop once the other place is held; the sweep and the scout
	// go on.
	require.Eventually(t, func() bool { return claimErrors() >= 1 && bb.b.adm.inFlight() == 2 }, eventually, 5*time.Millisecond)
	at := apiCalls(t, bb.b.metrics, "503")
	require.Eventually(t, func() bool { return apiCalls(t, bb.b.metrics, "503") >= at+3 }, eventually, 10*time.Millisecond,
		"TaskManager calls keep failing, counted (claims: %v errors)", claimErrors())
}

// A program that serves its own registry (WithMetricsRegistry, no
// metrics_addr) has the state gauges too: the alerts on claims not
// renewed need them. Before, only metrics_addr registered them. (Found by
// a review.)
func TestMetrics_state_gauges_on_a_registry_the_program_serves(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	_, err := New(newTestConfig(nil), nil, lazyClient(t), WithMetricsRegistry(reg))
	require.NoError(t, err)
	fams, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]float64{}
	for _, f := range fams {
		if len(f.GetMetric()) == 1 && f.GetMetric()[0].Gauge != nil {
			names[f.GetName()] = f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	for _, n := range []string{"tmbridge_tasks_in_flight", "tmbridge_oldest_claim_age_seconds", "tmbridge_claim_timeout_seconds", "tmbridge_max_in_flight", "tmbridge_runs_held"} {
		require.Contains(t, names, n)
	}
	require.Equal(t, float64(newTestConfig(nil).MaxInFlight), names["tmbridge_max_in_flight"])
}

// A run found open at start has a claim at least as old as the bridge's
// look: the oldest claim's age counts it (an alert on claims not renewed
// watches it). Before, it was left out: a bridge full of such runs showed
// 0. (Found by a review.)
func TestMetrics_oldest_claim_counts_runs_found_at_start(t *testing.T) {
	t.Parallel()
	a := newAdmission(1, 0)
	before := time.Now()
	require.True(t, a.adoptRun("task-1", 3))
	at := a.oldestClaim()
	require.False(t, at.IsZero(), "a run found at start has a claim")
	require.False(t, at.Before(before), "no older than the look that found it")
}

// Report attempts: ok, error (retried) and refused (TaskManager's final
// answer, not retried). Before, a final refusal (the task ended in
// TaskManager by an operator, say) counted as an error, and
// TmbridgeReportsFailing paged for it. (Found by a review.)
func TestMetrics_report_attempts_tell_refusals_from_errors(t *testing.T) {
	t.Parallel()
	m := newMetrics(nil)
	b := &Bridge{metrics: m, adm: newAdmission(1, 0)}
	b.reported("task-1", 1, temporal.NewNonRetryableApplicationError("task 1 is completed and does not hold this outcome", activities.ErrTypeNotClaimed, nil))
	b.reported("task-2", 1, activities.Transient(errors.New("TaskManager answered 503"), 0))
	b.reported("task-3", 1, errors.New("no answer"))
	b.reported("task-4", 1, nil)
	for result, want := range map[string]float64{"refused": 1, "error": 2, "ok": 1} {
		require.Equal(t, want, counterValue(t, m.reportAttempts.WithLabelValues(result)), result)
	}
}

// The bridge's own failure posts (a task Temporal refuses to start) are
// report attempts too, counted, and their retries logged. Before, a
// failure post retried against a failing TaskManager showed nowhere.
// (Found by a review.)
func TestMetrics_failing_a_task_that_cannot_start_counts_its_posts(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	var logs syncBuffer
	bb.b.log = slog.New(slog.NewTextHandler(&logs, nil))
	bb.only("example.echo")
	bb.temporal.refuse = func(workflows.TaskInput) error { return serviceerror.NewInvalidArgument("refused") }
	bb.tm.InjectFault(devserver.Fault{Path: "/complete", Status: http.StatusInternalServerError, Count: 2})
	id := bb.create(t, "example.echo", json.RawMessage(`{"message":"x"}`))
	bb.serve(t)
	require.Eventually(t, func() bool { return bb.status(t, id).Error != "" }, eventually, 10*time.Millisecond, "the failure landed")
	require.Eventually(t, func() bool { return counterValue(t, bb.b.metrics.reportAttempts.WithLabelValues("ok")) >= 1 }, eventually, 10*time.Millisecond)
	require.Equal(t, 2.0, counterValue(t, bb.b.metrics.reportAttempts.WithLabelValues("error")), "two failed posts")
	require.Equal(t, 2, strings.Count(logs.String(), "cannot fail the task in TaskManager yet; retrying"), logs.String())
}

// A failure that repeats is logged at Warn once when it starts, at Debug
// while it lasts, and at Info once when it ends.
func TestTrouble_logs_a_repeated_failure_once(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var tr trouble
	tr.ok(log, "works again") // nothing failed: nothing to say
	for range 3 {
		tr.failed(log, "cannot list", "err", "503")
	}
	tr.ok(log, "works again")
	tr.ok(log, "works again")
	tr.failed(log, "cannot list", "err", "503")
	out := buf.String()
	require.Equal(t, 2, strings.Count(out, "level=WARN"), out)
	require.Equal(t, 2, strings.Count(out, "level=DEBUG"), out)
	require.Equal(t, 1, strings.Count(out, "level=INFO msg=\"works again\""), out)
}

// syncBuffer is a bytes.Buffer that goroutines may write at once (a log).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A claim that a sweep finds with its run open already (its start landed
// after the look at start, or visibility lagged) starts nothing, and is
// not counted as started. (Found by a review.)
func TestMetrics_no_start_counted_for_a_claim_found_with_its_run_open(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.only("example.echo")
	bb.create(t, "example.echo", map[string]any{"message": "x"})
	got, err := bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: bb.b.types[0].ID})
	require.NoError(t, err)
	wf := bb.b.WorkflowID(got.ID)
	_, err = bb.temporal.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: wf, Memo: map[string]any{workflows.MemoWorkerID: "w1", workflows.MemoAttempt: int(got.Attempts)}},
		workflows.TaskWorkflowName, workflows.TaskInput{Claim: workflows.Claim{WorkerID: "w1", Attempts: int(got.Attempts)}})
	require.NoError(t, err)
	bb.b.startTask(bb.b.adm.adopt(wf), got, bb.b.types[0], time.Time{}, trace.SpanContext{}) // as the sweep does
	bb.b.starts.Wait()
	require.Len(t, bb.temporal.snapshot(wf), 1)
	require.Empty(t, bb.temporal.snapshot(wf)[0].signals, "nothing signalled")
	require.Zero(t, counterValue(t, bb.b.metrics.started.WithLabelValues("example.echo")))
}

// A post whose answer was lost (ErrTypeUncertain) is an error, not a
// refusal: TaskManager gave no answer. (Found by a review.)
func TestMetrics_a_lost_answer_is_an_error_not_a_refusal(t *testing.T) {
	t.Parallel()
	m := newMetrics(nil)
	m.observeReport(temporal.NewNonRetryableApplicationError("answer lost", activities.ErrTypeUncertain, nil))
	require.Equal(t, 1.0, counterValue(t, m.reportAttempts.WithLabelValues("error")))
	require.Zero(t, counterValue(t, m.reportAttempts.WithLabelValues("refused")))
}
