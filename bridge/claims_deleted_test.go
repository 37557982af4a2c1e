package bridge

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// A claimed task deleted from TaskManager before its run could start
// (Temporal refused the first start) frees its place, and no run starts
// for it. The test waits until a start was refused: it waited for the
// claim, which holds before the first start is tried, and on a slow
// machine that start went through and the place was never freed. No
// start is counted in the metrics (one was, found by a review).
func TestClaims_task_deleted_before_its_start_frees_the_place(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MaxInFlight = 1 })
	var refusing atomic.Bool
	var refused atomic.Int32
	refusing.Store(true)
	bb.temporal.refuse = func(workflows.TaskInput) error {
		if refusing.Load() {
			refused.Add(1)
			return errDown
		}
		return nil
	}
	id := bb.create(t, "example.echo", map[string]any{"message": "gone"})
	bb.serve(t)
	require.Eventually(t, func() bool { return refused.Load() >= 1 }, eventually, 5*time.Millisecond, "the first start was refused")
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id, Method: http.MethodGet, Status: http.StatusNotFound, Body: `{"success":false,"error":"Task not found"}`})
	refusing.Store(false)
	require.Eventually(t, func() bool { return bb.b.adm.inFlight() == 0 }, eventually, 5*time.Millisecond, "the place is freed")
	require.Empty(t, bb.temporal.snapshot("task-"+id), "no run for a task that is gone")
	require.Zero(t, counterValue(t, bb.b.metrics.started.WithLabelValues("example.echo")), "no workflow started or signalled is counted")
}
