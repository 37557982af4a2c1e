package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestInflight_blocks_at_the_limit_and_counts_forced_slots(t *testing.T) {
	t.Parallel()
	f := newInflight(2)
	ctx := context.Background()
	require.NoError(t, f.acquire(ctx))
	require.NoError(t, f.acquire(ctx))
	full, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, f.acquire(full), context.Canceled, "a third claim waits")

	got := make(chan error, 1)
	go func() { got <- f.acquire(ctx) }()
	f.release()
	require.NoError(t, <-got, "a release lets the waiting claim go")

	f.force() // a task found running at start, past the limit
	require.Equal(t, 3, f.count())
	f.release()
	require.ErrorIs(t, f.acquire(full), context.Canceled, "2 held: still at the limit")
	f.release()
	f.release()
	require.NoError(t, f.drained(ctx))
}

func TestRunBudget_never_over_claims(t *testing.T) {
	t.Parallel()
	r := &runBudget{max: 2}
	require.True(t, r.reserve())
	require.True(t, r.reserve())
	require.False(t, r.reserve())
	r.unreserve() // that claim came up empty
	require.True(t, r.reserve())
	require.Equal(t, 2, r.used())
	require.True(t, (&runBudget{}).reserve(), "0 is unlimited")
}

func TestGate_shut_and_reopen(t *testing.T) {
	t.Parallel()
	g := newGate()
	require.NoError(t, g.wait(context.Background()))
	require.True(t, g.shut())
	require.False(t, g.shut(), "already shut")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, g.wait(ctx), context.DeadlineExceeded)
	g.reopen()
	require.NoError(t, g.wait(context.Background()))
}

func TestBackoff_grows_to_a_minute(t *testing.T) {
	t.Parallel()
	require.InDelta(t, float64(time.Second), float64(backoff(1)), float64(time.Second)/5+1)
	require.InDelta(t, float64(4*time.Second), float64(backoff(3)), float64(4*time.Second)/5+1)
	require.LessOrEqual(t, backoff(50), time.Minute*6/5)
}
