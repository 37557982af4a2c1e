package bridge

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager/devserver"
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
		require.True(t, b.adm.adoptRun(id, 0))
	}
	for _, id := range []string{"task-2", "task-'3", "other-1"} {
		ft.close(id)
	}

	named, err := b.closedSince(context.Background(), time.Now().Add(-time.Minute))
	require.NoError(t, err)
	require.True(t, named)
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
		b.adm.adoptRun(id, 0)
		if i%2 == 0 {
			ft.close(id)
		}
	}
	named, err := b.closedSince(context.Background(), time.Now().Add(-time.Minute))
	require.NoError(t, err)
	require.False(t, named)
	require.Len(t, ft.lists, 1)
	require.NotContains(t, ft.lists[0], "WorkflowId IN")
	require.Equal(t, n/2, b.adm.openRuns(), "every closed one is seen")
}

// Long workflow ids: a list names no more than closerListBytes of them.
func TestCloser_names_no_more_than_a_bounded_query(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	b, ft := bb.b, bb.temporal
	long := strings.Repeat("x", 200)
	for i := range closerListBytes / 200 {
		id := "task-" + long + strconv.Itoa(i)
		ft.openRun(id)
		b.adm.adoptRun(id, 0)
	}
	named, err := b.closedSince(context.Background(), time.Now().Add(-time.Minute))
	require.NoError(t, err)
	require.False(t, named)
	require.Less(t, len(ft.lists[0]), 1024)
}

// A visibility that refuses a list naming runs (InvalidArgument) gets
// lists of the queue's closed runs from then on: the closer goes on, it
// does not fall back to one watch per run.
func TestCloser_visibility_refusing_named_lists(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	b, ft := bb.b, bb.temporal
	ft.refuseNamedLists = true
	ft.openRun("task-1")
	b.adm.adoptRun("task-1", 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.runCloser(ctx)
	ft.close("task-1")
	require.Eventually(t, func() bool { return b.adm.openRuns() == 0 }, eventually, 10*time.Millisecond)
	require.True(t, b.closer.on.Load(), "still one closer for all runs")
	require.True(t, b.closer.unnamed.Load())
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}
