package bridge

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// A claim call is not cut off the moment claiming stops (a claim
// the server made must reach us); only claimStopGrace later.
func TestClaims_claim_context_outlives_the_stop(t *testing.T) {
	t.Parallel()
	ctx, stop := context.WithCancel(context.Background())
	cctx, done := claimContext(ctx)
	defer done()
	stop()
	require.NoError(t, cctx.Err(), "still running right after the stop")
	done()
	require.Error(t, cctx.Err(), "ended by its own cancel")
}

// A sweep waits for the claim calls under way, and for no later one.
func TestClaims_claim_calls_wait_for_the_calls_under_way(t *testing.T) {
	t.Parallel()
	var c claimCalls
	handled := c.begin()
	require.ErrorIs(t, c.wait(cancelled()), context.Canceled, "a call under way is waited for")
	handled()
	require.NoError(t, c.wait(cancelled()), "none under way")
}
