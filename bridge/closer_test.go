package bridge

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/bridge/taskmanager/devserver"
)

// The closer's look at visibility names this worker's open runs: a list
// answer costs the server by the run it returns, and most closed runs of a
// queue are of slots freed already or of other workers. An id a query
// cannot quote is left to the sweep.
func TestCloser_lists_only_its_open_runs(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	b, ft := bb.b, bb.temporal
	for _, id := range []string{"task-1", "task-2", "task-'3", "other-1"} {
		ft.openRun(id)
	}
	for _, id := range []string{"task-1", "task-2", "task-'3"} {
		require.True(t, b.adm.adoptRun(id))
	}
	for _, id := range []string{"task-2", "task-'3", "other-1"} {
		ft.close(id)
	}

	require.NoError(t, b.closedSince(context.Background(), time.Now().Add(-time.Minute)))
	require.Equal(t, []string{"task-'3", "task-1"}, sorted(b.adm.openIDs()), "task-2 closed; task-'3 waits for the sweep")
	require.Len(t, ft.lists, 1)
	require.Contains(t, ft.lists[0], "WorkflowId IN ('task-1','task-2')")
	require.Equal(t, 1, ft.rows, "only task-2 came back")

	ft.lists = nil
	for _, id := range []string{"task-'3", "task-1"} {
		_, err := b.checkRun(id)
		require.NoError(t, err)
	}
	require.Equal(t, []string{"task-1"}, b.adm.openIDs(), "the sweep's describe finds task-'3 closed")
}

// With more open runs than one query names, the look asks for every
// closed task run of the queue, still in one call (visibility calls are
// rate limited for the whole namespace).
func TestCloser_lists_many_open_runs_in_one_call(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	b, ft := bb.b, bb.temporal
	n := closerListIDs + 1
	for i := range n {
		id := "task-" + strconv.Itoa(i)
		ft.openRun(id)
		b.adm.adoptRun(id)
		if i%2 == 0 {
			ft.close(id)
		}
	}
	require.NoError(t, b.closedSince(context.Background(), time.Now().Add(-time.Minute)))
	require.Len(t, ft.lists, 1)
	require.NotContains(t, ft.lists[0], "WorkflowId IN")
	require.Equal(t, n/2, b.adm.openRuns(), "every closed one is seen")
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}
