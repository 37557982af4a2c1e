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
	tk.claim("wf")
	tk.fail()
	require.False(t, a.hasRoom())
}

// Only runs whose outcome landed are waited for at --max-runs' end.
func TestAdmission_closing_lists_only_landed_runs(t *testing.T) {
	t.Parallel()
	a := newAdmission(2, 2)
	t1 := claimed(t, a, "wf-1")
	require.True(t, t1.opened("wf-1", 1, time.Now()))
	require.True(t, a.closed("wf-1", a.generation("wf-1")))
	require.Empty(t, a.closingIDs())
}
