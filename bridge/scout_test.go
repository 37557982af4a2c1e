package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// Tests of the claim bookkeeping: a real dev TaskManager, a fake Temporal
// (faketemporal_test.go) that loses answers and goes away on request.

// PHP filters a listing's type with LIKE: the scout's listing of a served
// "test_x" also lists "test-x" tasks. They are not counted as test_x's, so
// no claim is made that comes back empty (a 500 and an error line in PHP's
// log each time).
func TestScout_type_listing_counts_the_type_alone(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	ctx := context.Background()
	for _, name := range []string{"test_x", "test-x", "test.other"} {
		r, err := bb.api.RegisterTaskType(ctx, taskmanager.TaskTypeSpec{Name: name, Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
		require.NoError(t, err)
		if name == "test_x" {
			bb.b.types = []servedType{{Name: name, ID: r.ID, Options: workflows.DefaultTypeOptions()}}
		}
	}
	for i := range scoutPage { // a full first page of another type
		bb.create(t, "test.other", map[string]any{"n": i})
	}
	bb.create(t, "test-x", map[string]any{"n": 1})
	bb.serve(t)
	time.Sleep(20 * bb.b.cfg.PollInterval) // twenty looks of the scout
	require.Zero(t, bb.tm.Stats().ClaimCalls, "no claim for test_x, which has no task")
}

// The scout wakes as many claim loops as tasks are pending: one task
// means one claim call, never an empty one (a 500 on PHP).
func TestScout_one_pending_task_one_claim(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.only("example.echo")
	bb.serve(t)
	time.Sleep(200 * time.Millisecond) // idle: loops wait, the scout lists
	require.Zero(t, bb.tm.Stats().ClaimCalls, "no claim while nothing is pending")
	id := bb.create(t, "example.echo", map[string]any{"message": "one"})
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	require.Equal(t, 1, bb.tm.Stats().ClaimCalls, "one task, one claim (of %d loops)", ClaimsPerType)
}

// A page full of newer tasks of other types does not hide an older task
// of a waiting type.
func TestScout_full_page_does_not_hide_a_type(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": "old"})
	for i := range scoutPage + 20 {
		bb.create(t, "example.uppercase", map[string]any{"text": fmt.Sprint(i)}) // not served here
	}
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
}

// A burst of tasks is claimed without an empty claim (a 500 and an error
// line in PHP's log): a loop that used its budget up asks for a look at
// once, while other loops still claim theirs, and the look lists the
// tasks they are about to claim as pending. Those are promised already:
// before, the look woke loops for them too (23 empty claims of 64 in a
// burst of 30 tasks on the dev stack).
func TestScout_burst_makes_no_empty_claim(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MaxInFlight = 1000 })
	bb.only("example.echo")
	bb.serve(t)
	created := 0
	for burst := range 5 {
		for i := range 40 {
			bb.create(t, "example.echo", map[string]any{"message": fmt.Sprint(burst, i)})
			created++
		}
		require.Eventually(t, func() bool { return bb.tm.Stats().Claimed == created }, eventually, 5*time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the loops wait again; the scout looks
	st := bb.tm.Stats()
	require.Equal(t, st.Claimed, st.ClaimCalls, "claims that came back empty: %d of %d", st.ClaimCalls-st.Claimed, st.ClaimCalls)
}

// A loop whose claim failed does not keep the claims the scout allowed
// while it backs off: the type's other loops make them. Before, each
// loop had a budget of its own, and the tasks of a loop told to wait
// (429, Retry-After: 10 minutes) were promised to it until it woke: no
// look allowed them again.
func TestScout_loop_that_backs_off_leaves_its_claims_to_the_others(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MaxInFlight = 1000 })
	bb.only("example.echo")
	for i := range 40 {
		bb.create(t, "example.echo", map[string]any{"message": fmt.Sprint(i)})
	}
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: http.StatusTooManyRequests, RetryAfter: 10 * time.Minute, Count: 1})
	bb.serve(t)
	require.Eventually(t, func() bool { return bb.tm.Stats().Claimed == 40 }, eventually, 5*time.Millisecond,
		"all 40 claimed while one loop waits out its Retry-After")
}

// The claims a look allows go to whichever loop of the type comes next:
// a loop woken with some cannot keep the others idle. Waiting loops take
// one each; the rest wait in the type's pool, and a loop takes from it
// without waiting for a look.
func TestScout_allowed_claims_are_the_type_loops_pool(t *testing.T) {
	t.Parallel()
	s := newScout()
	ready := func(ch <-chan struct{}) bool {
		select {
		case <-ch:
			return true
		default:
			return false
		}
	}
	var waiting []<-chan struct{}
	for range 4 {
		waiting = append(waiting, s.next("t", false))
	}
	for _, ch := range waiting {
		require.False(t, ready(ch), "nothing allowed yet")
	}
	s.wakeListed(map[string]int{"t": 10}, s.madeSoFar())
	for _, ch := range waiting {
		require.True(t, ready(ch), "each waiting loop takes one")
	}
	for i := range 6 {
		require.True(t, ready(s.next("t", true)), "claim %d of the 6 left, taken at once", i+1)
	}
	require.True(t, ready(s.kick), "the first loop to wait asked for a look")
	last := s.next("t", true)
	require.False(t, ready(last), "none left")
	require.True(t, ready(s.hurry), "a loop that took the last asks for a look at once")

	// 8 of the 10 made when a look begins, 2 while it lists: those 2 may
	// be for tasks it lists pending, so of 3 listed it allows 1.
	for range 8 {
		s.made("t")
	}
	before := s.madeSoFar()
	s.made("t")
	s.made("t")
	s.wakeListed(map[string]int{"t": 3}, before)
	require.True(t, ready(last))
	require.False(t, ready(s.next("t", false)), "3 listed, 2 of them promised: 1 allowed")
	// The next look, once all were made, allows all it lists (the loop
	// above waits for one of them).
	s.made("t")
	s.wakeListed(map[string]int{"t": 2}, s.madeSoFar())
	require.True(t, ready(s.next("t", false)), "2 allowed: 1 to the waiting loop, 1 taken now")
	require.False(t, ready(s.next("t", false)))

	// An empty claim drops what is left: the look saw tasks that are gone.
	s2 := newScout()
	s2.wakeListed(map[string]int{"t": 5}, s2.madeSoFar())
	require.True(t, ready(s2.next("t", false)))
	s2.empty("t")
	require.False(t, ready(s2.next("t", false)), "the 4 left were dropped")
	s2.wakeListed(map[string]int{"t": 2}, s2.madeSoFar())
	require.Equal(t, 2, s2.types["t"].given-s2.types["t"].made-s2.types["t"].dropped, "2 allowed again; the dropped ones count as none")
}

// A wake for a claim that timed out (renewAt, the sweeper's noteClaims)
// goes to a loop that waits, or nowhere: what woke for one task may wake
// for it again, and wakes kept for later loops would claim it as many
// times (claims that come back empty).
func TestScout_wake_for_a_timed_out_claim_is_not_kept(t *testing.T) {
	t.Parallel()
	s := newScout()
	for range 3 {
		s.wake("t", 1) // no loop waits
	}
	ch := s.next("t", false)
	select {
	case <-ch:
		t.Fatal("a wake that found no loop waiting was kept")
	default:
	}
	s.wake("t", 1)
	select {
	case <-ch:
	default:
		t.Fatal("a waiting loop was not woken")
	}
}

// A listing that fails wakes every waiting loop for one claim, as if there
// were no scout; their empty claims do not ask for the next look at once
// (before, each empty claim brought a look, which failed and woke the
// loops again: thousands of empty claims a second, each a 500 and an
// error-log line on the PHP deployment). Until the next poll, the loops
// make one claim each.
func TestScout_failing_listing_does_not_claim_in_a_tight_loop(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.PollInterval = time.Hour })
	bb.only("example.echo")
	bb.serve(t)
	waiting := func() int {
		s := bb.b.scout
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.typ("example.echo").waiting)
	}
	require.Eventually(t, func() bool { return waiting() == ClaimsPerType }, eventually, 5*time.Millisecond)
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks", Method: http.MethodGet, Status: http.StatusInternalServerError})
	bb.b.scout.kick <- struct{}{} // stands for the poll interval's look
	require.Eventually(t, func() bool { return bb.tm.Stats().ClaimCalls == ClaimsPerType && waiting() == ClaimsPerType }, eventually, 5*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // what a tight loop would claim meanwhile
	require.Equal(t, ClaimsPerType, bb.tm.Stats().ClaimCalls, "claims before the next poll")
}

// The scout keeps an account only of the types this bridge serves: the
// pending tasks of others (a TaskManager with a type per tenant, served by
// other bridges) left an entry each, for ever, walked at every look.
func TestScout_keeps_no_account_of_types_it_does_not_serve(t *testing.T) {
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.only("example.echo")
	for i := range 50 {
		name := fmt.Sprintf("tenant-%d.export", i)
		_, err := bb.api.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: name, Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
		require.NoError(t, err)
		bb.create(t, name, map[string]any{"n": i})
	}
	id := bb.create(t, "example.echo", map[string]any{"message": "mine"})
	bb.serve(t)
	// Claimed only once a look listed it, with the others' tasks.
	require.Eventually(t, func() bool { return bb.status(t, id).Status != "pending" }, eventually, 10*time.Millisecond)
	bb.b.scout.mu.Lock()
	defer bb.b.scout.mu.Unlock()
	require.Equal(t, []string{"example.echo"}, slices.Collect(maps.Keys(bb.b.scout.types)))
}
