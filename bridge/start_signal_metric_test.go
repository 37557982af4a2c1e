package bridge

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/serviceerror"

	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// lossySignals delivers the first signal sent to a run by id, records its
// claim in the run's memo (as the run's upsert does), and loses the answer.
type lossySignals struct {
	*fakeTemporal
	lost atomic.Bool
}

func (l *lossySignals) SignalWorkflow(ctx context.Context, id, runID, name string, arg any) error {
	err := l.fakeTemporal.SignalWorkflow(ctx, id, runID, name, arg)
	if err != nil || runID == "" || l.lost.Swap(true) {
		return err
	}
	l.fakeTemporal.mu.Lock()
	r := l.fakeTemporal.latest(id)
	m := map[string]any{}
	for k, v := range r.memo {
		m[k] = v
	}
	m[workflows.MemoAttempt] = arg.(workflows.Claim).Attempts
	r.memo = m
	l.fakeTemporal.mu.Unlock()
	return serviceerror.NewDeadlineExceeded("answer lost")
}

// A renewal's signal (sent by run id) whose answer is lost still counts
// in tmbridge_workflows_started_total: the retry finds the run naming the
// claim, and a signal was sent. (Found by a review of a first version.)
func TestStart_signal_whose_answer_was_lost_is_counted_started(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, ClaimTimeout: time.Second}, func(c *Config) { c.ClaimTimeout = time.Second })
	bb.only("example.sleep")
	lossy := &lossySignals{fakeTemporal: bb.temporal}
	bb.b.runs = lossy
	id := bb.create(t, "example.sleep", map[string]any{"duration": 30})
	wf := "task-" + id
	bb.serve(t)
	require.Eventually(t, func() bool { return lossy.lost.Load() && bb.b.adm.attempts(wf) >= 2 }, eventually, 10*time.Millisecond, "claim 2 reached the run")
	runs := bb.temporal.snapshot(wf)
	require.Len(t, runs, 1)
	var m dto.Metric
	require.NoError(t, bb.b.metrics.started.WithLabelValues("example.sleep").Write(&m))
	require.Equal(t, 2.0, m.GetCounter().GetValue(), "one start and one signal (signals: %v)", runs[0].signals)
}
