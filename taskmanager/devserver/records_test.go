package devserver_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

var styles = []devserver.Style{devserver.StyleDocumented, devserver.StylePHP}

type fixture struct {
	srv    *devserver.Server
	c      *taskmanager.Client
	clock  *devserver.Clock
	typeID taskmanager.ID
}

func newFixture(t *testing.T, style devserver.Style) fixture {
	t.Helper()
	clock := devserver.NewClock(time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC))
	srv := devserver.New(devserver.Options{Style: style, APIKey: "k", Now: clock.Now})
	c, err := taskmanager.New(taskmanager.Options{BaseURL: srv.Start(t), APIKey: "k"})
	require.NoError(t, err)
	r, err := c.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: "example.echo", Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
	require.NoError(t, err)
	return fixture{srv: srv, c: c, clock: clock, typeID: r.ID}
}

func (f fixture) create(t *testing.T, msg string) taskmanager.ID {
	t.Helper()
	cr, err := f.c.CreateTask(context.Background(), "example.echo", map[string]any{"message": msg})
	require.NoError(t, err)
	return cr.ID
}

func (f fixture) claim(t *testing.T, worker string) taskmanager.Task {
	t.Helper()
	task, err := f.c.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: worker, TaskTypeID: f.typeID})
	require.NoError(t, err)
	return task
}

func TestRecords_claims_and_completions(t *testing.T) {
	ctx := context.Background()
	for _, style := range styles {
		t.Run(string(style), func(t *testing.T) {
			f := newFixture(t, style)
			a, b := f.create(t, "a"), f.create(t, "b")
			f.clock.Add(time.Second)
			t0 := f.clock.Now()

			require.Equal(t, a, f.claim(t, "w1").ID)
			require.Equal(t, b, f.claim(t, "w1").ID)
			f.clock.Add(301 * time.Second) // both claims time out
			t1 := f.clock.Now()
			require.Equal(t, a, f.claim(t, "w1").ID, "w1 claims a again")
			require.Equal(t, b, f.claim(t, "w2").ID)
			_, err := f.c.Claim(ctx, taskmanager.ClaimRequest{WorkerID: "w3", TaskTypeID: f.typeID})
			require.ErrorIs(t, err, taskmanager.ErrNoTask)

			require.Equal(t, []devserver.ClaimEvent{
				{TaskID: string(a), WorkerID: "w1", Attempts: 1, HeldByWorker: 0, At: t0},
				{TaskID: string(b), WorkerID: "w1", Attempts: 1, HeldByWorker: 1, Held: []string{string(a)}, At: t0},
				{TaskID: string(a), WorkerID: "w1", Attempts: 2, HeldByWorker: 1, Held: []string{string(b)}, At: t1}, // b, though timed out
				{TaskID: string(b), WorkerID: "w2", Attempts: 2, HeldByWorker: 0, At: t1},
			}, f.srv.Claims())

			f.clock.Add(time.Second)
			t2 := f.clock.Now()
			_, err = f.c.Complete(ctx, b, taskmanager.Completion{WorkerID: "w1", Success: true, Result: json.RawMessage(`{"x":1}`)})
			require.ErrorIs(t, err, taskmanager.ErrClaimedByOther)
			_, err = f.c.Complete(ctx, a, taskmanager.Completion{WorkerID: "w1", Success: true, Result: json.RawMessage(`{"x":1}`)})
			require.NoError(t, err)
			_, err = f.c.Complete(ctx, a, taskmanager.Completion{WorkerID: "w1", Success: true, Result: json.RawMessage(`{"x":1}`)})
			require.ErrorIs(t, err, taskmanager.ErrNotClaimed)
			_, err = f.c.Complete(ctx, "999", taskmanager.Completion{WorkerID: "w1", Success: true})
			require.ErrorIs(t, err, taskmanager.ErrNotFound)

			cb := f.srv.Completions(string(b))
			require.Len(t, cb, 1)
			require.Equal(t, 403, cb[0].Status)
			require.Equal(t, "claimed", cb[0].StatusBefore)
			require.Equal(t, 2, cb[0].AttemptsBefore)
			require.Equal(t, "w2", cb[0].ClaimedByBefore)
			require.Equal(t, t2, cb[0].At)

			ca := f.srv.Completions(string(a))
			require.Len(t, ca, 2)
			require.True(t, ca[0].Accepted)
			require.Equal(t, "claimed", ca[0].StatusBefore)
			require.Equal(t, 2, ca[0].AttemptsBefore)
			require.Equal(t, "w1", ca[0].ClaimedByBefore)
			require.False(t, ca[1].Accepted)
			require.True(t, ca[1].DuplicateSuccess)
			require.Equal(t, "completed", ca[1].StatusBefore)
			if style == devserver.StylePHP {
				require.Equal(t, "w1", ca[1].ClaimedByBefore, "PHP keeps claimed_by after completion")
			} else {
				require.Empty(t, ca[1].ClaimedByBefore)
			}

			unknown := f.srv.Completions("999")
			require.Len(t, unknown, 1)
			require.Equal(t, 404, unknown[0].Status)
			require.Empty(t, unknown[0].StatusBefore)
			require.Zero(t, unknown[0].AttemptsBefore)
			require.Empty(t, unknown[0].ClaimedByBefore)
			require.Equal(t, t2, unknown[0].At)

			st := f.srv.Stats()
			require.Equal(t, 5, st.ClaimCalls)
			require.Equal(t, 4, st.Claimed)
			require.Equal(t, 1, st.DuplicateSuccesses)
		})
	}
}

func TestSetClaimTimeout(t *testing.T) {
	f := newFixture(t, devserver.StylePHP)
	id := f.create(t, "a")
	f.claim(t, "w1")
	f.srv.SetClaimTimeout(10 * time.Second)
	f.clock.Add(11 * time.Second)
	got := f.claim(t, "w2")
	require.Equal(t, id, got.ID)
	require.EqualValues(t, 2, got.Attempts)
	f.srv.SetClaimTimeout(0) // back to 300s
	f.clock.Add(11 * time.Second)
	_, err := f.c.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w3", TaskTypeID: f.typeID})
	require.ErrorIs(t, err, taskmanager.ErrNoTask)
}

// TestOversizedValues: PHP's TEXT columns hold 65,535 bytes of what PHP
// stores; a longer value is a 500 naming the column, in both styles, and the
// task stays claimed.
func TestOversizedValues(t *testing.T) {
	ctx := context.Background()
	for _, style := range styles {
		t.Run(string(style), func(t *testing.T) {
			f := newFixture(t, style)
			id := f.create(t, "big")
			f.claim(t, "w1")
			result := func(text string) json.RawMessage { return json.RawMessage(`{"text":"` + text + `"}`) }

			for _, tc := range []struct {
				name   string
				comp   taskmanager.Completion
				column string
			}{
				{"result", taskmanager.Completion{WorkerID: "w1", Success: true, Result: result(strings.Repeat("a", 70_000))}, "result_json"},
				{"result_one_byte_over", taskmanager.Completion{WorkerID: "w1", Success: true, Result: result(strings.Repeat("a", taskmanager.MaxStoredBytes-10))}, "result_json"},
				{"result_unicode", taskmanager.Completion{WorkerID: "w1", Success: true, Result: result(strings.Repeat("é", 33_000))}, "result_json"},
				{"error", taskmanager.Completion{WorkerID: "w1", Error: strings.Repeat("e", 70_000)}, "error_message"},
				{"error_invalid_utf8", taskmanager.Completion{WorkerID: "w1", Error: strings.Repeat("\xff", 21_846)}, "error_message"},
			} {
				_, err := f.c.Complete(ctx, id, tc.comp)
				require.ErrorIs(t, err, taskmanager.ErrPayloadTooLarge, tc.name)
				require.False(t, taskmanager.Retryable(err))
				require.Contains(t, err.Error(), "500")
				require.Contains(t, err.Error(), "Data too long for column '"+tc.column+"' at row 1", tc.name)
				st, _ := f.srv.Task(string(id))
				require.Equal(t, "claimed", st.Status, tc.name)
				require.Equal(t, "w1", st.ClaimedBy)
				require.Equal(t, 1, st.Attempts)
				require.Empty(t, st.Error)
				require.Empty(t, st.Result)
			}
			for _, c := range f.srv.Completions(string(id)) {
				require.Equal(t, 500, c.Status)
				require.False(t, c.Accepted)
			}

			// What counts is PHP's re-encoding: escaped slashes and unicode
			// shrink, so a body longer than the column may fit.
			exact := result(strings.Repeat(`\/`, 20_000) + strings.Repeat(`\u00e9`, 5_000) + strings.Repeat("a", taskmanager.MaxStoredBytes-11-20_000-10_000))
			require.Greater(t, len(exact), taskmanager.MaxStoredBytes)
			require.Equal(t, taskmanager.MaxStoredBytes, taskmanager.StoredResultSize(exact))
			status, err := f.c.Complete(ctx, id, taskmanager.Completion{WorkerID: "w1", Success: true, Result: exact})
			require.NoError(t, err)
			require.Equal(t, "completed", status)
		})
	}
}

func TestEmptyResult(t *testing.T) {
	ctx := context.Background()
	for _, style := range styles {
		t.Run(string(style), func(t *testing.T) {
			f := newFixture(t, style)
			id := f.create(t, "empty")
			f.claim(t, "w1")
			require.NoError(t, f.c.Progress(ctx, id, "w1", 40, ""))
			_, err := f.c.Complete(ctx, id, taskmanager.Completion{WorkerID: "w1", Success: true, Result: json.RawMessage(`{}`)})
			require.NoError(t, err)
			got, err := f.c.GetTask(ctx, id)
			require.NoError(t, err)
			st, _ := f.srv.Task(string(id))
			if style == devserver.StylePHP {
				require.Empty(t, got.Result, "PHP stores {} as NULL")
				require.Empty(t, st.Result)
				require.Equal(t, "w1", got.ClaimedBy)
				require.EqualValues(t, 40, got.Progress)
			} else {
				require.JSONEq(t, `{}`, string(got.Result))
				require.Empty(t, got.ClaimedBy)
				require.EqualValues(t, 100, got.Progress)
			}
		})
	}
}

// PHP decodes params into arrays: a nested {} comes back as [] in the
// claim's answer and the read. The documented style keeps {}.
// (Found by a review: a handler that wants an object there ran on the dev
// server and failed on PHP.)
func TestParams_as_PHP_stores_them(t *testing.T) {
	ctx := context.Background()
	for _, style := range styles {
		t.Run(string(style), func(t *testing.T) {
			f := newFixture(t, style)
			cr, err := f.c.CreateTask(ctx, "example.echo", json.RawMessage(`{"opts":{},"n":1}`))
			require.NoError(t, err)
			claimed := f.claim(t, "w1")
			got, err := f.c.GetTask(ctx, cr.ID)
			require.NoError(t, err)
			want := `{"opts":{},"n":1}`
			if style == devserver.StylePHP {
				want = `{"opts":[],"n":1}`
			}
			require.JSONEq(t, want, string(claimed.Params))
			require.JSONEq(t, want, string(got.Params))
		})
	}
}

// A fault's Matched hears of a request it matches before its latency ends:
// the request is under way, not yet served.
func TestFault_Matched_is_told_before_the_latency(t *testing.T) {
	t.Parallel()
	f := newFixture(t, devserver.StylePHP)
	id := f.create(t, "m")
	matched := make(chan struct{}, 1)
	f.srv.InjectFault(devserver.Fault{Path: "/tasks/" + string(id), Method: "GET", Latency: time.Minute, Count: 1, Matched: matched})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := f.c.GetTask(ctx, id); done <- err }()
	select {
	case <-matched:
	case <-time.After(time.Minute):
		t.Fatal("the fault was not matched")
	}
	select {
	case err := <-done:
		t.Fatalf("the request was answered before its latency: %v", err)
	default:
	}
	cancel()
	require.Error(t, <-done)
}
