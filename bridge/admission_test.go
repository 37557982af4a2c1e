package bridge

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
)

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func TestAdmission_limit_counts_open_runs_and_tickets(t *testing.T) {
	t.Parallel()
	a := newAdmission(2, 0)
	ctx := context.Background()
	t1, err := a.reserve(ctx)
	require.NoError(t, err)
	t1.claim("wf-1", 0, time.Time{}, 0)
	require.True(t, t1.opened("wf-1", 1, time.Now()), "a new run is watched")
	t2, err := a.reserve(ctx)
	require.NoError(t, err)
	_, err = a.reserve(cancelled())
	require.ErrorIs(t, err, context.Canceled, "a third claim waits")

	got := make(chan error, 1)
	go func() {
		t3, err := a.reserve(ctx)
		if err == nil {
			t3.empty()
		}
		got <- err
	}()
	t2.empty()
	require.NoError(t, <-got, "an empty claim gives its slot back")

	require.Equal(t, 1, a.inFlight())
	require.False(t, a.markClosed("wf-1", a.generation("wf-1")+1), "a watch that saw an older generation looks again")
	require.True(t, a.markClosed("wf-1", a.generation("wf-1")))
	require.Zero(t, a.inFlight())
	require.NoError(t, a.idle(ctx))
}

// A claim that only reaches a run already counted takes no second slot
// (the exactly-once issue, case 12).
func TestAdmission_claim_of_an_open_run_takes_no_slot(t *testing.T) {
	t.Parallel()
	a := newAdmission(2, 0)
	t1 := claimed(t, a, "wf-1")
	require.True(t, t1.opened("wf-1", 1, time.Now()))
	gen := a.generation("wf-1")
	t2 := claimed(t, a, "wf-1") // claimed again after its claim timed out
	require.False(t, t2.opened("wf-1", 2, time.Now()), "already watched")
	require.Equal(t, 1, a.inFlight())
	require.False(t, a.markClosed("wf-1", gen), "the new claim reached it after the watch looked: look again")
	require.Equal(t, 1, a.openRuns())
}

// The slot of a run comes back as soon as the outcome of the newest claim
// that reached it landed in TaskManager: no call to Temporal is needed to
// learn that the task is no longer claimed.
func TestAdmission_landed_outcome_frees_the_slot(t *testing.T) {
	t.Parallel()
	a := newAdmission(2, 0)
	t1 := claimed(t, a, "wf-1")
	require.True(t, t1.opened("wf-1", 1, time.Now()))
	t2 := claimed(t, a, "wf-1") // claimed again: the run serves attempt 2 now
	require.False(t, t2.opened("wf-1", 2, time.Now()))
	require.False(t, a.reportLanded("wf-1", 1), "the outcome of an older claim: the run serves a newer one")
	require.Equal(t, 1, a.openRuns())
	require.False(t, a.reportLanded("wf-other", 1), "a run of another worker whose report ran here")
	require.Empty(t, a.landed)
	require.True(t, a.reportLanded("wf-1", 2))
	require.Zero(t, a.inFlight())
	require.True(t, a.markClosed("wf-1", 0), "a watch that comes later finds it gone")
}

// With eager start, a short task's run may report its outcome before the
// start's answer reaches the bridge: the slot comes back when it does.
func TestAdmission_outcome_landed_before_the_start_answered(t *testing.T) {
	t.Parallel()
	a := newAdmission(1, 0)
	ctx := context.Background()
	tk := claimed(t, a, "wf-1")
	require.False(t, a.reportLanded("wf-1", 3))
	require.False(t, tk.opened("wf-1", 3, time.Now()), "closed at once: nothing to watch")
	require.Zero(t, a.inFlight())
	require.Empty(t, a.landed)

	tk = claimed(t, a, "wf-2")
	require.False(t, a.reportLanded("wf-2", 1), "an older claim's outcome")
	require.True(t, tk.opened("wf-2", 2, time.Now()), "the claim being started is another: counted")
	require.Equal(t, 1, a.inFlight())
	require.Empty(t, a.landed)

	_, err := a.reserve(cancelled())
	require.ErrorIs(t, err, context.Canceled)
	require.True(t, a.reportLanded("wf-2", 2))
	tk, err = a.reserve(ctx)
	require.NoError(t, err)
	tk.claim("wf-3", 0, time.Time{}, 0)
	require.False(t, a.reportLanded("wf-3", 1))
	tk.dropped()
	require.Empty(t, a.landed, "a claim that ends without a run forgets its outcome")
}

// The run serves an older claim, and the newer claim being started reached
// it (a signal) and ended before the start answered: the slot comes back.
func TestAdmission_newer_claim_landed_before_its_signal_answered(t *testing.T) {
	t.Parallel()
	a := newAdmission(2, 0)
	tk := claimed(t, a, "wf-4")
	require.True(t, tk.opened("wf-4", 1, time.Now()))
	tk = claimed(t, a, "wf-4")
	require.False(t, a.reportLanded("wf-4", 2))
	require.Equal(t, 2, a.inFlight())
	require.False(t, tk.opened("wf-4", 2, time.Now()))
	require.Zero(t, a.inFlight())
	require.Empty(t, a.landed)
}

// Two starts of one task under way at once (the first one slow past the
// claim timeout, the task claimed again): when the older claim's start
// ends last, its renewal must not replace the newer claim's. Before, it
// did: the older claim's timer fired at once, spent its tries, and the
// newer claim was never renewed.
func TestAdmission_older_claim_does_not_replace_the_newer_ones_renewal(t *testing.T) {
	t.Parallel()
	a := newAdmission(2, 0)
	ctx := context.Background()
	older, err := a.reserve(ctx)
	require.NoError(t, err)
	older.claim("wf-1", 0, time.Time{}, 0)
	newer, err := a.reserve(ctx)
	require.NoError(t, err)
	newer.claim("wf-1", 0, time.Time{}, 0)
	var stopped []string
	require.True(t, newer.opened("wf-1", 2, time.Now()))
	a.onClose("wf-1", 2, func() { stopped = append(stopped, "newer") })
	require.False(t, older.opened("wf-1", 1, time.Now().Add(-time.Hour)))
	a.onClose("wf-1", 1, func() { stopped = append(stopped, "older") })
	require.Equal(t, []string{"older"}, stopped, "the older claim's timer is stopped at once; the newer one's runs on")
	require.True(t, a.reportLanded("wf-1", 2))
	require.Equal(t, []string{"older", "newer"}, stopped)
}

// A watch that read the generation of a run whose slot came back (its
// outcome landed) never frees the entry of the task's next run: generations
// are never handed out twice. Each run stops being counted once.
func TestAdmission_generations_are_never_reused(t *testing.T) {
	t.Parallel()
	a := newAdmission(2, 0)
	finished, landed := 0, 0
	a.finished = func(l bool) {
		finished++
		if l {
			landed++
		}
	}
	tk := claimed(t, a, "wf-1")
	require.True(t, tk.opened("wf-1", 1, time.Now()))
	stale := a.generation("wf-1") // a watch reads it, then waits
	require.True(t, a.reportLanded("wf-1", 1))
	require.Equal(t, 1, finished)
	tk = claimed(t, a, "wf-1") // the task failed, was re-queued and claimed again
	require.True(t, tk.opened("wf-1", 2, time.Now()))
	require.False(t, a.markClosed("wf-1", stale), "the watch of the first run must not free the second")
	require.Equal(t, 1, a.inFlight())
	require.True(t, a.markClosed("wf-1", a.generation("wf-1")))
	require.True(t, a.markClosed("wf-1", a.generation("wf-1")), "gone: nothing to free")
	require.False(t, a.reportLanded("wf-1", 2), "counted once")
	require.Equal(t, 2, finished)
	require.Equal(t, 1, landed, "the first run's outcome landed; the second one closed")
	require.Empty(t, a.closingIDs(), "without max_runs nothing waits for the runs to close")
}

// With max_runs, the runs whose slot came back on a landed outcome are kept
// for the bridge to wait for their close before it exits.
func TestAdmission_max_runs_keeps_the_landed_runs_to_wait_for(t *testing.T) {
	t.Parallel()
	a := newAdmission(2, 2)
	ctx := context.Background()
	t1 := claimed(t, a, "wf-1")
	require.True(t, t1.opened("wf-1", 1, time.Now()))
	t2 := claimed(t, a, "wf-2")
	require.True(t, a.reportLanded("wf-1", 1))
	require.False(t, a.reportLanded("wf-2", 1))
	require.False(t, t2.opened("wf-2", 1, time.Now()))
	require.NoError(t, a.idle(ctx))
	require.Equal(t, []string{"wf-1", "wf-2"}, a.closingIDs())
}

// --max-runs counts claims: a loop waits while other reservations may come
// back empty, and stops only when max_runs claims were made (case 10).
func TestAdmission_max_runs_waits_for_reservations_then_stops(t *testing.T) {
	t.Parallel()
	a := newAdmission(10, 2)
	ctx := context.Background()
	t1, _ := a.reserve(ctx)
	t2, _ := a.reserve(ctx)
	_, err := a.reserve(cancelled())
	require.ErrorIs(t, err, context.Canceled, "budget reserved: wait, do not stop")
	t1.empty() // that type was empty
	t3, err := a.reserve(ctx)
	require.NoError(t, err, "the reservation came back: claim again")
	t2.claim("wf-2", 0, time.Time{}, 0)
	t3.claim("wf-3", 0, time.Time{}, 0)
	_, err = a.reserve(ctx)
	require.ErrorIs(t, err, errBudgetSpent)
	t2.dropped()
	t3.dropped()
	_, err = a.reserve(ctx)
	require.ErrorIs(t, err, errBudgetSpent, "max_runs counts claims, not open runs")
}

func TestAdmission_failing_frees_the_pending_place_not_the_slot(t *testing.T) {
	t.Parallel()
	a := newAdmission(MaxPendingStarts+1, 0)
	ctx := context.Background()
	var ts []*ticket
	for range MaxPendingStarts {
		tk, err := a.reserve(ctx)
		require.NoError(t, err)
		tk.claim("wf", 0, time.Time{}, 0)
		ts = append(ts, tk)
	}
	_, err := a.reserve(cancelled())
	require.ErrorIs(t, err, context.Canceled, "every pending-start place is taken")
	ts[0].fail()
	last, err := a.reserve(ctx)
	require.NoError(t, err, "a task that cannot start frees its place")
	_, err = a.reserve(cancelled())
	require.ErrorIs(t, err, context.Canceled, "but keeps its slot until it is failed in TaskManager")
	ts[0].dropped()
	last.empty()
	require.Panics(t, ts[0].dropped, "a ticket ends once")
}

// Randomized: whatever order tickets take, the counts stay within the
// limit and return to zero.
func TestAdmission_random_schedules_keep_the_invariants(t *testing.T) {
	t.Parallel()
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 1))
		limit, maxRuns := 1+rng.IntN(6), rng.IntN(8)
		a := newAdmission(limit, maxRuns)
		var live, claimed []*ticket
		var open []string
		claims := 0
		for step := 0; step < 200; step++ {
			switch rng.IntN(7) {
			case 0, 1:
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				tk, err := a.reserve(ctx)
				cancel()
				if err == nil {
					live = append(live, tk)
				}
			case 2:
				if tk := take(rng, &live); tk != nil {
					if rng.IntN(3) == 0 {
						tk.empty()
						continue
					}
					id := []string{"a", "b", "c", "d", "e", "f", "g"}[rng.IntN(7)]
					attempts := 1 + rng.IntN(3)
					// A renewal (the attempt right after the open run's
					// claim, or any when the run's is not known) is no new
					// task.
					if ran := a.attempts(id); !a.isOpen(id) || (ran != 0 && attempts != ran+1) {
						claims++
					}
					tk.claim(id, attempts, time.Time{}, 0)
					claimed = append(claimed, tk)
				}
			case 5:
				// A claimed task's start answers (its outcome may have
				// landed meanwhile, case 4).
				if tk := take(rng, &claimed); tk != nil {
					if rng.IntN(3) == 0 {
						tk.dropped()
					} else if tk.opened(tk.workflow, 1+rng.IntN(3), time.Now()) {
						open = append(open, tk.workflow)
					}
				}
			case 4:
				id := []string{"a", "b", "c", "d", "e", "f", "g"}[rng.IntN(7)]
				if a.reportLanded(id, 1+rng.IntN(3)) {
					open = slices.DeleteFunc(open, func(o string) bool { return o == id })
				}
			case 3:
				if len(open) > 0 {
					i := rng.IntN(len(open))
					if a.markClosed(open[i], a.generation(open[i])) {
						open = append(open[:i], open[i+1:]...)
					}
				}
			}
			require.LessOrEqual(t, a.inFlight(), limit, "seed %d step %d", seed, step)
			require.LessOrEqual(t, a.tickets, MaxPendingStarts, "seed %d", seed)
			require.LessOrEqual(t, len(a.landed), len(a.starting), "seed %d: only claims being started wait for their landed outcome", seed)
			if maxRuns > 0 {
				require.LessOrEqual(t, a.claimed(), maxRuns, "seed %d", seed)
			}
		}
		for _, tk := range live {
			tk.empty()
		}
		for _, tk := range claimed {
			tk.dropped()
		}
		require.Empty(t, a.landed, "seed %d", seed)
		for _, id := range open {
			require.True(t, a.markClosed(id, a.generation(id)))
		}
		require.Zero(t, a.inFlight(), "seed %d", seed)
		require.Equal(t, claims, a.claimed(), "seed %d", seed)
	}
}

// claimed reserves a ticket of a and claims workflowID with it.
func claimed(t *testing.T, a *admission, workflowID string) *ticket {
	t.Helper()
	tk, err := a.reserve(context.Background())
	require.NoError(t, err)
	tk.claim(workflowID, 0, time.Time{}, 0)
	return tk
}

// take removes a random ticket from ts (nil if none).
func take(rng *rand.Rand, ts *[]*ticket) *ticket {
	if len(*ts) == 0 {
		return nil
	}
	i := rng.IntN(len(*ts))
	tk := (*ts)[i]
	*ts = slices.Delete(*ts, i, i+1)
	return tk
}

func TestGate_shut_and_reopen(t *testing.T) {
	t.Parallel()
	g := newGate()
	require.NoError(t, g.wait(context.Background()))
	require.True(t, g.shut())
	require.False(t, g.shut(), "already shut")
	require.ErrorIs(t, g.wait(cancelled()), context.Canceled)
	g.reopen()
	require.NoError(t, g.wait(context.Background()))
}

func TestBackoff_grows_to_a_minute(t *testing.T) {
	t.Parallel()
	require.InDelta(t, float64(time.Second), float64(backoff(1)), float64(time.Second)/5+1)
	require.InDelta(t, float64(4*time.Second), float64(backoff(3)), float64(4*time.Second)/5+1)
	require.LessOrEqual(t, backoff(50), time.Minute*6/5)
}

// A renewal that spent its tries (every loop of the type busy) leaves the
// claim to the scout, as seen since it was made: the next sweep that
// lists it wakes its type. Before, the claim stayed counted as renewed,
// and nothing renewed it. (Found by a review.)
func TestAdmission_claim_whose_renewal_gave_up_goes_to_the_scout(t *testing.T) {
	a, s := newAdmission(10, 0), newScout()
	require.True(t, a.adoptRun("task-1", 1))
	a.onClose("task-1", 1, func() {}) // renewAt armed for claim 1
	require.True(t, a.renews("task-1", 1))
	require.False(t, a.renewalSpent("task-1", 2), "not that claim")
	require.True(t, a.renewalSpent("task-1", 1))
	require.False(t, a.renews("task-1", 1))

	const timeout = time.Minute
	now := time.Now()
	s.seenSince("1", 1, now.Add(-timeout-time.Second))
	ready := s.next("t", false)
	held := func(task taskmanager.Task) bool { return a.renews("task-"+string(task.ID), int(task.Attempts)) }
	s.noteClaims([]taskmanager.Task{{ID: "1", Type: "t", Status: taskmanager.StatusClaimed, ClaimedBy: "w1", Attempts: 1}}, held, timeout, now, func() bool { return true })
	select {
	case <-ready:
	default:
		t.Fatal("the type was not woken for the claim")
	}
}

// Two claims of one workflow id being started at once (a claim found again
// in a sweep while an older one's start is stuck past the claim timeout):
// the older one ending leaves the newer one starting. Before, it stopped
// counting as starting, and a sweep could adopt the same claim a third
// time, past max_in_flight, and start or signal it again. (Found by a
// review.)
func TestAdmission_older_ticket_ending_leaves_the_newer_one_starting(t *testing.T) {
	t.Parallel()
	a := newAdmission(3, 0)
	older := a.adopt("tm-7")
	newer := a.adopt("tm-7")
	older.empty()
	require.True(t, a.tracked("tm-7"))
	require.True(t, a.covers("tm-7", 2))
	newer.empty()
	require.False(t, a.tracked("tm-7"))
	require.False(t, a.covers("tm-7", 2))
}
