package activities

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/taskmanager"
)

// When a read shows a claim over, and when it does not (the claim of
// worker "w1" with 2 attempts).
func TestClaimSeen_endsClaim(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		seen ClaimSeen
		over bool
	}{
		{ClaimSeen{Status: "claimed", WorkerID: "w1", Attempts: 2}, false},
		{ClaimSeen{Status: "claimed", WorkerID: "w1", Attempts: 3}, false}, // this worker's renewal
		{ClaimSeen{Status: "claimed", WorkerID: "py", Attempts: 3}, true},
		{ClaimSeen{Status: "claimed", WorkerID: "py", Attempts: 2}, false}, // no later claim: a read that lags
		{ClaimSeen{Status: "claimed", Attempts: 3}, false},                 // no claimed_by
		{ClaimSeen{Status: "completed", Attempts: 2}, true},
		{ClaimSeen{Status: "failed", Attempts: 3}, true},
		{ClaimSeen{Status: "pending", Attempts: 2}, true},
		{ClaimSeen{Status: "pending", Attempts: 1}, false},
		{ClaimSeen{Status: "processing", WorkerID: "py", Attempts: 3}, false},
	} {
		require.Equal(t, tc.over, tc.seen.endsClaim("w1", 2), "%+v", tc.seen)
	}
}

// What a read saw is kept with claimed_by cut short: it goes into the
// error's details, which Temporal refuses past 2 MiB.
func TestClaimOver_keeps_a_long_claimed_by_cut_short(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("p", 3<<20)
	a := readingTask7(t, func() string { return huge })
	err := a.claimOver(context.Background(), HandlerInput{TaskID: "7", WorkerID: "w1", Attempt: 2}, "retry")
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "%v", err)
	require.Equal(t, ErrTypeClaimOver, appErr.Type())
	var seen ClaimSeen
	require.NoError(t, appErr.Details(&seen))
	require.LessOrEqual(t, len(seen.WorkerID), maxSeenWorkerID+len("…"))
	require.Less(t, len(appErr.Message()), 1024)
}

// A worker id longer than what a ClaimSeen keeps: the claim is judged on
// the whole of it, and MayHold compares it cut as kept. (Found by a
// review: this bridge's own renewal, with such an id, counted as another
// worker's claim, and the run ended unreported.)
func TestClaimOver_long_worker_id_is_judged_whole(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("w", maxSeenWorkerID+40)
	claimedBy := long
	a := readingTask7(t, func() string { return claimedBy })
	require.NoError(t, a.claimOver(context.Background(), HandlerInput{TaskID: "7", WorkerID: long, Attempt: 2}, "retry"), "this worker's renewal holds")

	claimedBy = long[:len(long)-1] + "x" // another worker, the same first 256 bytes
	err := a.claimOver(context.Background(), HandlerInput{TaskID: "7", WorkerID: long, Attempt: 2}, "retry")
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "%v", err)
	var seen ClaimSeen
	require.NoError(t, appErr.Details(&seen))
	require.True(t, seen.MayHold(claimedBy, 3), "the claim the read saw, by its whole id")
	require.False(t, seen.MayHold(long, 2))
}

// readingTask7 is Activities whose TaskManager answers every read with
// task 7, claimed (attempt 3) by claimedBy().
func readingTask7(t *testing.T, claimedBy func() string) *Activities {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"success": true, "data": map[string]any{
			"id": 7, "type": "t", "status": "claimed", "claimed_by": claimedBy(), "attempts": 3}})
	}))
	t.Cleanup(srv.Close)
	api, err := taskmanager.New(taskmanager.Options{BaseURL: srv.URL, APIKey: "k"})
	require.NoError(t, err)
	return &Activities{TaskManager: api}
}
