package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// An older claim's outcome landing (its start still under way)
// does not free the slot of the run that serves a newer claim.
func TestAdmission_landed_older_claim_keeps_the_newer_run_counted(t *testing.T) {
	t.Parallel()
	a := newAdmission(2, 0)
	t1 := claimed(t, a, "wf")
	require.True(t, t1.opened("wf", 2, time.Now())) // the run serves attempt 2
	t2 := claimed(t, a, "wf")                       // attempt 1's slow start ends last
	require.False(t, a.reportLanded("wf", 1))
	require.False(t, t2.opened("wf", 1, time.Now()))
	require.Equal(t, 1, a.openRuns(), "attempt 2's run is still open and counted")
	require.Equal(t, 1, a.inFlight())
}

// A task being failed in TaskManager holds its slot for hasRoom
// too (the renewal's wake), as for reserve.
func TestAdmission_has_room_counts_failing(t *testing.T) {
	t.Parallel()
	a := newAdmission(1, 0)
	tk, err := a.reserve(context.Background())
	require.NoError(t, err)
	tk.claim("wf", 0, time.Time{}, 0)
	tk.fail()
	require.False(t, a.hasRoom())
}

// Only runs whose outcome landed are waited for at --max-runs' end.
func TestAdmission_closing_lists_only_landed_runs(t *testing.T) {
	t.Parallel()
	a := newAdmission(2, 2)
	t1 := claimed(t, a, "wf-1")
	require.True(t, t1.opened("wf-1", 1, time.Now()))
	require.True(t, a.markClosed("wf-1", a.generation("wf-1")))
	require.Empty(t, a.closingIDs())
}

// A claim of a task whose run is open here is a renewal only when the
// run's claim may have timed out: sooner, TaskManager cannot have handed
// the task out again by timeout, so its outcome landed (reported by
// another bridge's worker) and the task was queued again, a new attempt
// that counts against max_runs. A claim whose sending time is not known
// (found at start or in a sweep) is taken for a renewal. Before, every
// claim of an open run was a renewal, and a bridge with --max-runs ran
// more tasks than that.
func TestAdmission_claim_of_an_open_run_within_claim_timeout_is_a_new_attempt(t *testing.T) {
	t.Parallel()
	const timeout = 5 * time.Minute
	sent := time.Now()
	a := newAdmission(4, 0)
	t1, err := a.reserve(context.Background())
	require.NoError(t, err)
	require.False(t, t1.claim("wf", 1, sent, timeout))
	require.True(t, t1.opened("wf", 1, sent))

	t2, err := a.reserve(context.Background())
	require.NoError(t, err)
	require.False(t, t2.claim("wf", 2, sent.Add(time.Second), timeout), "queued again after its outcome landed elsewhere")
	require.False(t, t2.opened("wf", 2, sent.Add(time.Second)))
	require.Equal(t, 2, a.claimed(), "two attempts, two runs of --max-runs")

	t3, err := a.reserve(context.Background())
	require.NoError(t, err)
	require.True(t, t3.claim("wf", 3, sent.Add(time.Second+timeout), timeout), "claimed again once attempt 2's claim timed out")
	require.False(t, t3.opened("wf", 3, sent.Add(time.Second+timeout)))
	require.Equal(t, 2, a.claimed())

	require.True(t, a.adoptRun("found", 1))
	t4, err := a.reserve(context.Background())
	require.NoError(t, err)
	require.True(t, t4.claim("found", 2, sent.Add(time.Second), timeout), "a run found at start: its claim's time is not known")
	require.Equal(t, 2, a.claimed())

	// Another worker's claim came between (attempt 4, then its failure
	// queued the task again): attempt 5 is new, however old the run's
	// claim. (Found by a review.)
	t5, err := a.reserve(context.Background())
	require.NoError(t, err)
	require.False(t, t5.claim("wf", 5, sent.Add(time.Hour), timeout))
	require.Equal(t, 3, a.claimed())
}
