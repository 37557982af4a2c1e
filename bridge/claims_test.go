package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/prismq/tmbridge/bridge/taskmanager"
	"github.com/prismq/tmbridge/bridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// Tests of the claim bookkeeping: a real dev TaskManager, a fake Temporal
// (faketemporal_test.go) that loses answers and goes away on request.

type bridgeBundle struct {
	b        *Bridge
	tm       *devserver.Server
	api      *taskmanager.Client // the test's own client (the bridge's is b.api)
	temporal *fakeTemporal
}

var testTypes = []string{"example.echo", "example.uppercase", "example.math.add", "example.sleep", "example.error"}

// setupBridge builds a Bridge on a fake Temporal, serving testTypes as
// worker w1; change adjusts its config.
func setupBridge(t *testing.T, style devserver.Style, change func(*Config)) *bridgeBundle {
	t.Helper()
	return setupBridgeWith(t, devserver.Options{Style: style}, change)
}

// setupBridgeClock is setupBridge with TaskManager on a test clock.
func setupBridgeClock(t *testing.T, clock *devserver.Clock, change func(*Config)) *bridgeBundle {
	t.Helper()
	return setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, Now: clock.Now}, change)
}

func setupBridgeWith(t *testing.T, opts devserver.Options, change func(*Config)) *bridgeBundle {
	t.Helper()
	opts.APIKey = "k"
	tm := devserver.New(opts)
	url := tm.Start(t)
	m := newMetrics(nil)
	auth := new(keyRefusal)
	api, err := taskmanager.New(taskmanager.Options{BaseURL: url, APIKey: "k", Timeout: 5 * time.Second, Observe: apiObserver(m, auth)})
	require.NoError(t, err)
	cfg := Config{
		APIURL: url, WorkerID: "w1", PollInterval: 20 * time.Millisecond, MaxInFlight: 10, APITimeout: 5 * time.Second, ClaimTimeout: 300 * time.Second,
		Temporal: TemporalConfig{TaskQueue: "q", WorkflowIDPrefix: "task-"},
	}
	if change != nil {
		change(&cfg)
	}
	bg, cancel := context.WithCancel(context.Background())
	ft := newFakeTemporal()
	b := &Bridge{
		cfg: cfg, log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name()),
		api: api, runs: ft, adm: newAdmission(cfg.MaxInFlight, cfg.MaxRuns), sweeps: make(chan struct{}, 1), gate: newGate(), scout: newScout(),
		bg: bg, bgCancel: cancel, metrics: m, auth: auth, undecodableFor: 100 * time.Millisecond, fatal: make(chan error, 1), stopDone: make(chan struct{}),
	}
	b.adm.finished = m.runFinished
	m.registerState(b.adm, cfg.MaxInFlight, cfg.ClaimTimeout) // as New does
	b.closerOn.Store(true)
	t.Cleanup(cancel)
	for _, name := range testTypes {
		r, err := api.RegisterTaskType(context.Background(), taskmanager.TaskTypeSpec{Name: name, Version: "1", ParamSchema: json.RawMessage(`{"type":"object"}`)})
		require.NoError(t, err)
		b.types = append(b.types, servedType{Name: name, ID: r.ID, Options: workflows.DefaultTypeOptions()})
	}
	// The test's own calls (creating tasks of megabytes, claiming as
	// another worker) get time: a slow machine must not fail a test.
	testAPI, err := taskmanager.New(taskmanager.Options{BaseURL: url, APIKey: "k", Timeout: 2 * time.Minute})
	require.NoError(t, err)
	return &bridgeBundle{b: b, tm: tm, api: testAPI, temporal: ft}
}

// serve runs the bridge's claiming until the test ends; stop ends it and
// returns serve's error.
func (bb *bridgeBundle) serve(t *testing.T) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bb.b.serve(ctx) }()
	var err error
	stopped := false
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
			bb.b.bgCancel()
			bb.b.starts.Wait()
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// only narrows the served types to names.
func (bb *bridgeBundle) only(names ...string) {
	var ts []servedType
	for _, t := range bb.b.types {
		if slices.Contains(names, t.Name) {
			ts = append(ts, t)
		}
	}
	bb.b.types = ts
}

func (bb *bridgeBundle) create(t *testing.T, typ string, params any) string {
	t.Helper()
	c, err := bb.api.CreateTask(context.Background(), typ, params)
	require.NoError(t, err)
	return string(c.ID)
}

func (bb *bridgeBundle) status(t *testing.T, id string) devserver.TaskState {
	t.Helper()
	st, ok := bb.tm.Task(id)
	require.True(t, ok)
	return st
}

// unreadable garbles the answer of the next claim (with task id the only
// one pending, the claim that takes it) and of every read of task id.
func (bb *bridgeBundle) unreadable(id string) {
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: 200, After: true, Count: 1, Body: `garbage`})
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id, Method: "GET", Status: 200, Body: `{"success":true,"data":{"items":[{"id":` + id + `,"attempts":"many"}]}}`})
}

const eventually = 30 * time.Second

// 5. A start Temporal will never accept (InvalidArgument, an input over its
// payload limit) fails the task in TaskManager with a clear message and
// frees its pending-start place: before, four such tasks held all four
// places and the bridge stopped claiming anything.
func TestClaims_permanent_start_errors_fail_the_task_and_free_the_place(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.temporal.refuse = func(in workflows.TaskInput) error {
		var p map[string]any
		_ = json.Unmarshal(in.Task.Params, &p)
		if p["bad"] == "invalid" {
			return serviceerror.NewInvalidArgument("some field is invalid")
		}
		return nil
	}
	var bad []string
	for i := range 3 {
		bad = append(bad, bb.create(t, "example.echo", map[string]any{"message": fmt.Sprint(i), "bad": "invalid"}))
		bad = append(bad, bb.create(t, "example.uppercase", map[string]any{"text": fmt.Sprint(i), "bad": "invalid"}))
	}
	huge := bb.create(t, "example.echo", map[string]any{"message": strings.Repeat("7", MaxStartBytes)})
	bad = append(bad, huge)
	deep := bb.create(t, "example.echo", json.RawMessage(`{"message":"deep","n":`+strings.Repeat("[", MaxParamsDepth)+strings.Repeat("]", MaxParamsDepth)+`}`))
	bad = append(bad, deep)
	good := bb.create(t, "example.math.add", map[string]any{"a": 1, "b": 2})
	bb.serve(t)

	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+good)) == 1 }, eventually, 5*time.Millisecond, "the good task starts")
	require.Eventually(t, func() bool {
		for _, id := range bad {
			if bb.status(t, id).Status != "failed" {
				return false
			}
		}
		return true
	}, eventually, 5*time.Millisecond, "every task that cannot start ends failed (after TaskManager's attempts)")
	for _, id := range bad {
		require.Contains(t, bb.status(t, id).Error, "could not start a Temporal workflow for this task")
	}
	require.Contains(t, bb.status(t, huge).Error, "over the 2000000 bytes Temporal accepts")
	require.Contains(t, bb.status(t, deep).Error, "its params nest 101 levels deep, over the 100 accepted")
}

// A start refused for want of permission is the fault of the bridge's
// Temporal credentials, the same for every task: the task keeps its claim
// and its start is retried until the credentials are fixed. Before, each
// such task was failed in TaskManager, re-queued, claimed and failed
// again: wrong credentials failed the whole queue.
func TestClaims_permission_denied_keeps_the_claim_and_retries(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	var denied atomic.Bool
	var refused atomic.Int64
	denied.Store(true)
	bb.temporal.refuse = func(workflows.TaskInput) error {
		if denied.Load() {
			refused.Add(1)
			return serviceerror.NewPermissionDenied("Request unauthorized.", "")
		}
		return nil
	}
	ids := []string{
		bb.create(t, "example.echo", map[string]any{"message": "a"}),
		bb.create(t, "example.uppercase", map[string]any{"text": "b"}),
	}
	bb.serve(t)
	require.Eventually(t, func() bool { return refused.Load() >= 2*int64(len(ids)) }, eventually, 5*time.Millisecond, "each start refused, then retried")
	for _, id := range ids {
		st := bb.status(t, id)
		require.Equal(t, "claimed", st.Status, "the task keeps its claim")
		require.EqualValues(t, 1, st.Attempts)
	}
	denied.Store(false) // the credentials are fixed
	for _, id := range ids {
		require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond, "the start goes through")
		st := bb.status(t, id)
		require.Equal(t, "claimed", st.Status)
		require.EqualValues(t, 1, st.Attempts, "on its first claim")
	}
}

// A namespace that lost the TaskType and TaskID search attributes after
// the bridge started refuses every start that sets them: the bridge starts
// its runs without them, and no task is failed for it.
func TestClaims_search_attributes_gone_starts_without_them(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.b.searchAttrs.Store(true)
	bb.temporal.noSearchAttributes = true
	id := bb.create(t, "example.echo", map[string]any{"message": "a"})
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond, "the run starts without them")
	require.False(t, bb.b.searchAttrs.Load())
	st := bb.status(t, id)
	require.Equal(t, "claimed", st.Status)
	require.EqualValues(t, 1, st.Attempts)
}

// The SDK stops the worker for good (its namespace gone): the bridge is no
// longer ready, stops claiming and serve returns the error, so that the
// process exits and is restarted. Before, it claimed on while no worker
// ran the tasks, and /readyz said ok.
func TestServe_worker_stopped_for_good_ends_claiming(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.b.polling.Store(true)
	done := make(chan error, 1)
	go func() { done <- bb.b.serve(context.Background()) }()
	id := bb.create(t, "example.echo", map[string]any{"message": "before"})
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
	bb.b.workerFailed(serviceerror.NewNamespaceNotFound("default"))
	select {
	case err := <-done:
		require.ErrorContains(t, err, "Temporal worker stopped")
		var nf *serviceerror.NamespaceNotFound
		require.ErrorAs(t, err, &nf)
	case <-time.After(eventually):
		t.Fatal("serve goes on claiming after the worker stopped")
	}
	require.False(t, bb.b.polling.Load(), "not ready")
	after := bb.create(t, "example.echo", map[string]any{"message": "after"})
	time.Sleep(100 * time.Millisecond) // five poll intervals
	require.Equal(t, "pending", bb.status(t, after).Status, "nothing claimed once it stopped")
	bb.b.bgCancel()
	bb.b.starts.Wait()
}

// A slow TaskManager read while a start is retried times out: that is no
// sign that Temporal is unreachable, and claiming is not paused for it.
func TestClaimHolds_TaskManager_timeout_is_not_Temporal_unreachable(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	id := bb.create(t, "example.echo", map[string]any{"message": "slow"})
	task, err := bb.api.GetTask(context.Background(), taskmanager.ID(id))
	require.NoError(t, err)
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id, Method: http.MethodGet, Latency: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = bb.b.claimHolds(ctx, task)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.False(t, temporalUnreachable(err), "a TaskManager timeout")
	require.True(t, temporalUnreachable(serviceerror.NewUnavailable("down")))
}

// A claim under way when claiming stops may go on for claimStopGrace, no
// longer: a TaskManager that answers in minutes (api_timeout allows ten)
// cannot hold the stop past StopTimeout. Not parallel: it sets the grace.
func TestServe_stop_cuts_a_slow_claim_off(t *testing.T) {
	defer func(g time.Duration) { claimStopGrace = g }(claimStopGrace)
	claimStopGrace = 100 * time.Millisecond
	bb := setupBridge(t, devserver.StylePHP, nil)
	api, err := taskmanager.New(taskmanager.Options{BaseURL: bb.b.cfg.APIURL, APIKey: "k", Timeout: 10 * time.Minute})
	require.NoError(t, err)
	bb.b.api = api
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/claim", Latency: time.Minute})
	bb.create(t, "example.echo", map[string]any{"message": "slow"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bb.b.serve(ctx) }()
	claiming := func() bool { // a claim call is under way
		bb.b.calls.mu.Lock()
		defer bb.b.calls.mu.Unlock()
		return len(bb.b.calls.open) > 0
	}
	require.Eventually(t, func() bool { return bb.b.adm.inFlight() >= 1 && claiming() }, eventually, 5*time.Millisecond, "a claim is under way (the scout may start another: the task stays pending until the slow claim is served)")
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(eventually):
		t.Fatal("a claim under way held the stop")
	}
	bb.b.bgCancel()
	bb.b.starts.Wait()
}

// otherWorkersRows returns n rows of a claimed-task listing (ids 1 to n),
// each claimed by another worker, as PHP writes them.
func otherWorkersRows(n int) []string {
	var items []string
	for i := range n {
		items = append(items, fmt.Sprintf(`{"id":%d,"type":"example.echo","status":"claimed","attempts":1,"claimed_by":"other","claimed_at":"2026-11-29 07:10:23"}`, i+1))
	}
	return items
}

// A TaskManager that ignores offset answers every page of the sweep's
// listing alike: the sweep says so and ends, instead of listing forever
// while claiming waits for it.
func TestSweep_listing_that_ignores_offset_ends(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	items := otherWorkersRows(sweepPage)
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks", Method: http.MethodGet, Status: http.StatusOK,
		Body: `{"success":true,"message":"Success","data":{"items":[` + strings.Join(items, ",") + `],"count":100}}`})
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	defer cancel()
	err := bb.b.sweep(ctx, map[taskmanager.ID]*strikes{})
	require.ErrorContains(t, err, "answered offset 80 with the page of offset 0 (is offset ignored?)")
	require.NoError(t, ctx.Err(), "it ended on its own")
}

// Tasks that leave the claimed state while the sweep lists move later ones
// to lower offsets. Before, the sweep paged by whole pages, and a claim of
// this worker that slid from the second page to the first one's end went
// unseen until the next sweep (its slot and task held meanwhile). Now
// pages overlap: a few moved tasks are seen on the next page; when many
// moved, the listing steps back a page.
func TestSweep_finds_claims_that_moved_while_it_listed(t *testing.T) {
	t.Parallel()
	for _, ended := range []int{10, 30} { // fewer than the overlap; more
		t.Run(fmt.Sprintf("%d ended", ended), func(t *testing.T) {
			t.Parallel()
			bb := setupBridge(t, devserver.StylePHP, nil)
			bb.only("example.echo")
			typeID := bb.b.types[0].ID
			claim := func(worker string, n int) []string {
				var ids []string
				for range n {
					task, err := bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: worker, TaskTypeID: typeID})
					require.NoError(t, err)
					ids = append(ids, string(task.ID))
				}
				return ids
			}
			// The listing is newest first: this worker's claims, whose
			// answers were lost, come after a full page of another's.
			for i := range 10 {
				bb.create(t, "example.echo", map[string]any{"mine": i})
			}
			mine := claim("w1", 10)
			for i := range sweepPage {
				bb.create(t, "example.echo", map[string]any{"other": i})
			}
			others := claim("other", sweepPage)
			// Before the listing's second page, the newest of the other
			// worker's tasks end.
			var lists atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && r.URL.Query().Get("status") == "claimed" {
					if lists.Add(1) == 2 {
						for _, id := range others[len(others)-ended:] {
							_, err := bb.api.Complete(context.Background(), taskmanager.ID(id), taskmanager.Completion{WorkerID: "other", Success: true, Result: json.RawMessage(`{}`)})
							assert.NoError(t, err)
						}
					}
				}
				bb.tm.Handler().ServeHTTP(w, r)
			}))
			t.Cleanup(srv.Close)
			base, err := url.Parse(bb.b.cfg.APIURL)
			require.NoError(t, err)
			api, err := taskmanager.New(taskmanager.Options{BaseURL: srv.URL + base.Path, APIKey: "k"})
			require.NoError(t, err)
			bb.b.api = api
			require.NoError(t, bb.b.sweep(context.Background(), map[taskmanager.ID]*strikes{}))
			for _, id := range mine {
				require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond, "task %s, claimed by this worker, got its run", id)
			}
			// Offsets 0 and 80; then, when the page at 80 was empty, 0 again.
			require.EqualValues(t, map[int]int{10: 2, 30: 3}[ended], lists.Load(), "list requests")
			bb.b.bgCancel()
			bb.b.starts.Wait()
		})
	}
}

// A listing whose next page never holds a task it saw (a full first page,
// then nothing) steps back and forth sweepStuck times, no more, and ends
// with an error.
func TestSweep_listing_that_keeps_moving_ends(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	items := otherWorkersRows(sweepPage)
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		page := strings.Join(items, ",")
		if off := r.URL.Query().Get("offset"); off != "" && off != "0" {
			page = ""
		}
		fmt.Fprintf(w, `{"success":true,"message":"Success","data":{"items":[%s],"count":%d}}`, page, len(items))
	}))
	t.Cleanup(srv.Close)
	api, err := taskmanager.New(taskmanager.Options{BaseURL: srv.URL, APIKey: "k"})
	require.NoError(t, err)
	bb.b.api = api
	_, err = bb.b.listClaimed(context.Background())
	require.ErrorContains(t, err, "10 requests in a row found no task not listed before")
	require.EqualValues(t, 1+sweepStuck, requests.Load(), "the first page, then ten that found nothing new")
}

// Stop called before Run reached its claim loops (an embedder stopping at
// once): nothing is claimed. Before, Run went on and claimed tasks it
// could no longer start.
func TestServe_stop_before_serve_claims_nothing(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	id := bb.create(t, "example.echo", map[string]any{"message": "never"})
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	defer cancel()
	bb.b.mu.Lock()
	bb.b.stopped = true // what Stop does first (the bundle has no worker to stop)
	bb.b.mu.Unlock()
	require.NoError(t, bb.b.serve(ctx))
	require.NoError(t, ctx.Err(), "serve returned at once")
	require.Equal(t, "pending", bb.status(t, id).Status, "nothing claimed")
	require.Zero(t, bb.tm.Stats().ClaimCalls)
}

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

func TestJSONDepth(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]int{
		`1`: 0, `"[[["`: 0, `{}`: 1, `{"a":[1,{"b":[]}]}`: 4, `["\"[", "\\", [[]]]`: 3, `[{"x]}":"{\"}"}]`: 2,
	} {
		require.Equal(t, want, jsonDepth([]byte(raw)), raw)
	}
}

// 8. A start whose answer was lost after Temporal created the run, when that
// run already closed (a fast local handler): the retry must find the run of
// this claim, not start a second one.
func TestClaims_ambiguous_start_does_not_start_a_second_run(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.temporal.loseStartAnswers = 1
	bb.temporal.closeOnStart = true
	id := bb.create(t, "example.echo", map[string]any{"message": "once"})
	bb.serve(t)
	require.Eventually(t, func() bool { return bb.b.adm.claimed() == 1 && bb.b.adm.inFlight() == 0 }, eventually, 5*time.Millisecond)
	require.Len(t, bb.temporal.snapshot("task-"+id), 1, "one run for one claim")
}

// 6. While Temporal is unreachable, a watched run's wait fails: its slot
// must stay taken until Temporal says the run closed.
func TestClaims_outage_keeps_open_runs_counted(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MaxInFlight = 2 })
	a := bb.create(t, "example.echo", map[string]any{"message": "a"})
	c := bb.create(t, "example.echo", map[string]any{"message": "c"})
	bb.serve(t)
	// Both runs started (a start still under way counts in flight too).
	require.Eventually(t, func() bool {
		return bb.b.adm.inFlight() == 2 && len(bb.temporal.snapshot("task-"+a)) == 1 && len(bb.temporal.snapshot("task-"+c)) == 1
	}, eventually, 5*time.Millisecond)

	bb.temporal.setDown(true)
	for i := range 4 {
		bb.create(t, "example.echo", map[string]any{"message": fmt.Sprint("more ", i)})
	}
	time.Sleep(300 * time.Millisecond) // the watches' waits fail meanwhile
	bb.temporal.setDown(false)
	time.Sleep(300 * time.Millisecond)
	require.Equal(t, 2, bb.temporal.runCount(), "nothing more is started while both runs are open")
	require.Equal(t, 2, bb.b.adm.inFlight())
	claimed := 0
	for _, st := range bb.tm.Tasks() {
		if st.Status == "claimed" {
			claimed++
		}
	}
	require.Equal(t, 2, claimed, "nothing more is claimed")

	bb.temporal.close("task-" + a)
	require.Eventually(t, func() bool { return bb.temporal.runCount() == 3 }, eventually, 5*time.Millisecond, "a closed run frees one slot")
}

// 9a. A claim whose workflow was not yet started when the process died is
// found by the next start of the same worker id and started.
func TestClaims_claims_left_by_a_crash_are_started(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	var ids []string
	for i := range 4 {
		ids = append(ids, bb.create(t, "example.echo", map[string]any{"message": fmt.Sprint(i)}))
		// the process that died claimed it
		_, err := bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: bb.b.types[0].ID})
		require.NoError(t, err)
	}
	bb.serve(t)
	for _, id := range ids {
		require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
		run := bb.temporal.snapshot("task-" + id)[0]
		require.Equal(t, workflows.Claim{WorkerID: "w1", Attempts: 1}, run.input.Claim)
	}
	for _, id := range ids {
		require.Equal(t, 1, bb.status(t, id).Attempts, "no claim was spent again")
	}
}

// 9b. A claim whose answer was lost or could not be decoded: the server
// claimed the task but the bridge never saw it. A sweep finds it at once.
func TestClaims_claim_with_a_garbled_answer_is_found(t *testing.T) {
	t.Parallel()
	// One in flight: one claim call at a time, so the garbled answer is
	// the one that claimed the task.
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MaxInFlight = 1 })
	bb.only("example.echo") // the garbled answer is this type's claim
	id := bb.create(t, "example.echo", map[string]any{"message": "garbled"})
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: 200, After: true, Count: 1, Body: `{"success":true,"data":{"id":`})
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
	st := bb.status(t, id)
	require.Equal(t, 1, st.Attempts, "started for the claim the garbled answer made, not claimed again")
}

// 9c. A task of ours that the bridge cannot read at all is failed with a
// clear message, never dropped nor claimed again forever.
func TestClaims_unreadable_claimed_task_is_failed(t *testing.T) {
	t.Parallel()
	// One attempt: the failure is final, so no later claim of the task
	// (the scout would see it pending again) races the assertions. One in
	// flight: one claim call at a time, so the garbled answer is the one
	// that claimed the task (with two under way, the other could claim it
	// first and the garbled one come back empty).
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, MaxAttempts: 1}, func(c *Config) { c.MaxInFlight = 1 })
	bb.only("example.echo") // the garbled answer is this type's claim
	id := bb.create(t, "example.echo", map[string]any{"message": "unreadable"})
	bb.unreadable(id)
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.tm.Completions(id)) > 0 }, eventually, 5*time.Millisecond)
	first := bb.tm.Completions(id)[0]
	require.True(t, first.Accepted && !first.Success, "failed in TaskManager")
	require.Contains(t, first.Error, "cannot read this task from TaskManager")
	require.Zero(t, bb.temporal.runCount(), "no run for a task the bridge cannot read")
}

// A task the bridge cannot read whose failure's answer is lost (a 502
// after the write): the failing ends (the sweep looks at the task again),
// and its place comes back. Before, every retry read first, could not,
// and retried until the bridge stopped, holding the task's max_in_flight
// slot.
func TestClaims_unreadable_task_whose_failure_answer_is_lost_frees_its_place(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, MaxAttempts: 1}, func(c *Config) { c.MaxInFlight = 1 })
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": "unreadable"})
	bb.unreadable(id)
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id + "/complete", Method: "POST", Status: http.StatusBadGateway, After: true, Count: 1})
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.tm.Completions(id)) > 0 }, eventually, 5*time.Millisecond)
	require.True(t, bb.tm.Completions(id)[0].Accepted, "the failure landed")
	other := bb.create(t, "example.echo", map[string]any{"message": "next"})
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+other)) == 1 }, eventually, 5*time.Millisecond,
		"the unreadable task's place comes back: the next task is claimed and started")
	require.Equal(t, "failed", bb.status(t, id).Status)
}

// The failure of a task the bridge cannot read lands, but its answer is
// lost; TaskManager re-queues the task (attempts left) and this bridge
// claims it again and runs it. The failure is not posted again: that post,
// blind, would end the newer claim whose run is open (TaskManager checks
// the worker id, not the attempt). Found by a review of the first fix,
// which retried the post.
func TestClaims_unreadable_task_failure_is_not_posted_again_onto_a_newer_claim(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, MaxAttempts: 3}, nil)
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": "unreadable"})
	bb.unreadable(id)
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id + "/complete", Method: "POST", Status: http.StatusBadGateway, After: true, Count: 1})
	bb.serve(t)
	require.Eventually(t, func() bool {
		rs := bb.temporal.snapshot("task-" + id)
		return len(rs) == 1 && bb.b.adm.inFlight() == 1
	}, eventually, 5*time.Millisecond, "attempt 2 runs, and the failing of attempt 1 ended")
	require.Equal(t, 2, bb.temporal.snapshot("task-" + id)[0].input.Claim.Attempts)
	cs := bb.tm.Completions(id)
	require.Len(t, cs, 1, "posted once")
	require.Equal(t, 1, cs[0].AttemptsBefore)
	st := bb.status(t, id)
	require.Equal(t, "claimed", st.Status)
	require.Equal(t, 2, int(st.Attempts))
}

// A claim of this worker (its answer lost, or a process that died) whose
// task row has a field of an odd kind, in every listing and in its read:
// the listings still list it (by its id, type and claim), the sweep finds
// the claim and fails the task, and the next task is claimed. Before,
// every listing that held the row failed: the sweep never found the
// claim, and the task stayed claimed.
func TestClaims_task_row_with_an_odd_field_is_failed_not_left_claimed(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, MaxAttempts: 1}, func(c *Config) { c.MaxInFlight = 1 })
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": "odd"})
	_, err := bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: bb.b.types[0].ID})
	require.NoError(t, err)
	row := `{"id":` + id + `,"type":"example.echo","status":"claimed","claimed_by":"w1","attempts":1,"params":{"message":"odd"},"priority":"high"}`
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks", Method: "GET", Status: 200, Body: `{"success":true,"data":{"items":[` + row + `]}}`})
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id, Method: "GET", Status: 200, Body: `{"success":true,"data":{"items":[` + row + `]}}`})
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.tm.Completions(id)) > 0 }, eventually, 5*time.Millisecond)
	first := bb.tm.Completions(id)[0]
	require.True(t, first.Accepted && !first.Success, "failed in TaskManager")
	require.Contains(t, first.Error, "cannot read this task from TaskManager")
	other := bb.create(t, "example.echo", map[string]any{"message": "next"})
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+other)) == 1 }, eventually, 5*time.Millisecond, "its place came back")
}

// A timestamp TaskManager sends as a Unix number does not make a task
// unreadable (the bridge only shows it): a claim of this worker with such
// rows is found by the sweep and run. Before, no listing or read of it
// could be decoded, and the task stayed claimed.
func TestClaims_unix_timestamps_are_read(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": "unix"})
	_, err := bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: bb.b.types[0].ID})
	require.NoError(t, err)
	row := `{"id":` + id + `,"type":"example.echo","status":"claimed","claimed_by":"w1","attempts":1,"params":{"message":"unix"},"created_at":1700000000,"claimed_at":1700000001}`
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks", Method: "GET", Status: 200, Body: `{"success":true,"data":{"items":[` + row + `]}}`})
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id, Method: "GET", Status: 200, Body: `{"success":true,"data":{"items":[` + row + `]}}`})
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
	run := bb.temporal.snapshot("task-" + id)[0]
	require.Equal(t, "w1", run.input.Claim.WorkerID)
	require.Equal(t, 1, run.input.Claim.Attempts)
	require.Empty(t, bb.tm.Completions(id))
}

// A claim's answer that names another task type than the one claimed (a
// broken server): the task runs as the type claimed, whose handler runs,
// and is that type's in the memo and the metrics. Before, the answer's
// type went to the memo, the search attribute, the summary and the
// metric labels (any string a server sent), beside the claimed type's
// handler.
func TestClaims_answer_naming_another_type_runs_as_the_type_claimed(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": "m"})
	row := `{"id":` + id + `,"type":"not.this.type","status":"claimed","claimed_by":"w1","attempts":1,"params":{"message":"m"}}`
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: 200, After: true, Count: 1, Body: `{"success":true,"data":` + row + `}`})
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
	run := bb.temporal.snapshot("task-" + id)[0]
	require.Equal(t, "example.echo", run.input.Task.Type)
	require.Equal(t, "example.echo", run.memo[workflows.MemoTaskType])
}

// 10. --max-runs counts claims: a loop whose type is empty while others
// hold reservations waits instead of ending, and the bridge ends once
// max_runs tasks were claimed and their runs closed.
func TestClaims_max_runs_claims_every_type_and_ends(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MaxRuns = 2 })
	bb.temporal.closeOnStart = true
	a := bb.create(t, "example.uppercase", map[string]any{"text": "a"})
	b := bb.create(t, "example.uppercase", map[string]any{"text": "b"})
	bb.create(t, "example.uppercase", map[string]any{"text": "not this one"})
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	defer cancel()
	require.NoError(t, bb.b.serve(ctx))
	require.NoError(t, ctx.Err(), "serve returned because max_runs were done, not because the test gave up")
	require.Equal(t, 2, bb.b.adm.claimed())
	require.Len(t, bb.temporal.snapshot("task-"+a), 1)
	require.Len(t, bb.temporal.snapshot("task-"+b), 1)
}

// A claim whose answer was lost counts against --max-runs when the sweep
// finds that it landed: its run is one of max_runs, not one more.
func TestClaims_max_runs_counts_a_claim_found_by_the_sweep(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.MaxRuns = 1; c.APITimeout = 100 * time.Millisecond })
	bb.only("example.echo")
	bb.temporal.closeOnStart = true
	first := bb.create(t, "example.echo", map[string]any{"message": "claimed, answer lost"})
	second := bb.create(t, "example.echo", map[string]any{"message": "not this one"})
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: http.StatusBadGateway, After: true, Count: 1})
	ctx, cancel := context.WithTimeout(context.Background(), eventually)
	defer cancel()
	require.NoError(t, bb.b.serve(ctx))
	require.NoError(t, ctx.Err(), "serve returned because max_runs were done, not because the test gave up")
	require.Len(t, bb.temporal.snapshot("task-"+first), 1, "the claim found by the sweep ran")
	require.Empty(t, bb.temporal.snapshot("task-"+second), "max_runs is 1")
	require.Equal(t, "pending", bb.status(t, second).Status)
}

// 12. A task running longer than the claim timeout is claimed again; that
// claim only signals the open run and takes no second slot.
func TestClaims_reclaim_of_a_long_task_takes_no_second_slot(t *testing.T) {
	t.Parallel()
	clock := devserver.NewClock(time.Now())
	bb := setupBridgeClock(t, clock, func(c *Config) { c.MaxInFlight = 2 })
	id := bb.create(t, "example.sleep", map[string]any{"duration": 30})
	bb.serve(t)
	require.Eventually(t, func() bool { return bb.b.adm.inFlight() == 1 && len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
	clock.Add(301 * time.Second)        // the claim times out; this bridge claims it again
	bb.b.scout.wake("example.sleep", 1) // as renewAt does once the claim timeout passed
	require.Eventually(t, func() bool {
		rs := bb.temporal.snapshot("task-" + id)
		return len(rs) == 1 && len(rs[0].signals) == 1
	}, eventually, 5*time.Millisecond, "the new claim is signalled to the open run")
	require.Equal(t, 1, bb.b.adm.openRuns(), "one task, one run counted")
	other := bb.create(t, "example.echo", map[string]any{"message": "fits"})
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+other)) == 1 }, eventually, 5*time.Millisecond, "the second slot is free")
}

// A long task's renewal claim lands but its answer is lost (a 502 after
// the write): the sweep finds the newer claim of the open run and
// signals it. Before, it skipped any claim of a workflow id with an open
// run: the run never had the claim, its report met "claim lost", its
// result was thrown away, and a later sweep ran the handler again.
func TestSweep_signals_a_newer_claim_of_an_open_run(t *testing.T) {
	t.Parallel()
	clock := devserver.NewClock(time.Now())
	bb := setupBridgeClock(t, clock, func(c *Config) { c.MaxInFlight = 2 })
	bb.only("example.sleep")
	id := bb.create(t, "example.sleep", map[string]any{"duration": 30})
	bb.serve(t)
	require.Eventually(t, func() bool { return bb.b.adm.inFlight() == 1 && len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/claim", Status: http.StatusBadGateway, After: true, Count: 1})
	clock.Add(301 * time.Second)        // the claim times out
	bb.b.scout.wake("example.sleep", 1) // as renewAt does
	require.Eventually(t, func() bool {
		rs := bb.temporal.snapshot("task-" + id)
		return len(rs) == 1 && len(rs[0].signals) == 1
	}, eventually, 5*time.Millisecond, "the claim whose answer was lost reaches the open run")
	require.Equal(t, workflows.Claim{WorkerID: "w1", Attempts: 2}, bb.temporal.snapshot("task-" + id)[0].signals[0])
	st := bb.status(t, id)
	require.Equal(t, 2, int(st.Attempts))
	require.Len(t, bb.temporal.snapshot("task-"+id), 1, "one run")
	require.Eventually(t, func() bool { return bb.b.adm.inFlight() == 1 }, eventually, 5*time.Millisecond, "one task, one slot")
}

// claimedTwice creates a long example.sleep task and claims it as w1 (the
// bridge not serving), calls between, lets the claim time out and claims
// the task again: it is claimed by w1 at attempt 2.
func claimedTwice(t *testing.T, between func(bb *bridgeBundle, id string)) (*bridgeBundle, string) {
	t.Helper()
	clock := devserver.NewClock(time.Now())
	bb := setupBridgeClock(t, clock, nil)
	bb.only("example.sleep")
	id := bb.create(t, "example.sleep", map[string]any{"duration": 30})
	claim := taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: bb.b.types[0].ID}
	_, err := bb.api.Claim(context.Background(), claim)
	require.NoError(t, err)
	between(bb, id)
	clock.Add(301 * time.Second)
	_, err = bb.api.Claim(context.Background(), claim)
	require.NoError(t, err)
	return bb, id
}

// A newer claim of an open run that cannot be read now (a 500) is left for
// the next sweep; this sweep does not fail for it. A failed sweep holds
// the places of lost claims, which only a sweep that ends well gives back.
func TestSweep_newer_claim_of_an_open_run_not_read_does_not_fail_it(t *testing.T) {
	t.Parallel()
	bb, id := claimedTwice(t, func(bb *bridgeBundle, id string) { bb.b.adm.adoptRun("task-"+id, 1) })
	ctx := context.Background()
	bb.tm.InjectFault(devserver.Fault{Path: "/tasks/" + id, Method: "GET", Status: http.StatusInternalServerError})
	require.NoError(t, bb.b.sweep(ctx, map[taskmanager.ID]*strikes{}))
}

// A process of this worker claimed a long task again when its claim timed
// out, then died before signalling the new claim to the open run: the
// next process adopts the run (its memo names the first claim) and its
// sweep signals the newer claim. Before, the sweep skipped any claim of a
// run it counted.
func TestSweep_signals_a_renewal_claim_left_by_a_crash(t *testing.T) {
	t.Parallel()
	bb, id := claimedTwice(t, func(bb *bridgeBundle, id string) { // the first claim's run, then the process died
		opts := client.StartWorkflowOptions{ID: "task-" + id, Memo: map[string]any{workflows.MemoWorkerID: "w1", workflows.MemoAttempt: 1}}
		_, err := bb.temporal.ExecuteWorkflow(context.Background(), opts, workflows.TaskWorkflowName, workflows.TaskInput{Claim: workflows.Claim{WorkerID: "w1", Attempts: 1}})
		require.NoError(t, err)
	})
	bb.serve(t)
	require.Eventually(t, func() bool {
		rs := bb.temporal.snapshot("task-" + id)
		return len(rs) == 1 && len(rs[0].signals) == 1
	}, eventually, 5*time.Millisecond, "the newer claim reaches the adopted run")
	require.Equal(t, workflows.Claim{WorkerID: "w1", Attempts: 2}, bb.temporal.snapshot("task-" + id)[0].signals[0])
	// The run counts the newer claim once its start ends (after the
	// signal: seen first on a loaded machine).
	require.Eventually(t, func() bool { return bb.b.adm.attempts("task-"+id) == 2 }, eventually, 5*time.Millisecond)
	require.Equal(t, 1, bb.b.adm.inFlight())
}

// A run found open at start (a process of this worker started it, then
// stopped: an upgrade) holds a claim whose time nobody knows: once it
// timed out, this bridge claims the task again and the new claim reaches
// the run, as it would for a claim it made itself (renewAt). Before, such
// a claim was renewed by nothing, and the scout skipped it as one a run
// renews: another worker could claim the task and run it again.
func TestSweep_claim_of_a_run_found_at_start_is_renewed(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, ClaimTimeout: time.Second}, func(c *Config) { c.ClaimTimeout = time.Second })
	bb.only("example.sleep")
	id := bb.create(t, "example.sleep", map[string]any{"duration": 30})
	_, err := bb.api.Claim(context.Background(), taskmanager.ClaimRequest{WorkerID: "w1", TaskTypeID: bb.b.types[0].ID})
	require.NoError(t, err)
	opts := client.StartWorkflowOptions{ID: "task-" + id, Memo: map[string]any{workflows.MemoWorkerID: "w1", workflows.MemoAttempt: 1}}
	_, err = bb.temporal.ExecuteWorkflow(context.Background(), opts, workflows.TaskWorkflowName, workflows.TaskInput{Claim: workflows.Claim{WorkerID: "w1", Attempts: 1}})
	require.NoError(t, err)
	bb.serve(t)
	require.Eventually(t, func() bool {
		rs := bb.temporal.snapshot("task-" + id)
		return len(rs) == 1 && len(rs[0].signals) >= 1
	}, eventually, 5*time.Millisecond, "the claim is renewed")
	got := bb.temporal.snapshot("task-" + id)[0].signals[0]
	require.Equal(t, "w1", got.WorkerID)
	require.Equal(t, 2, got.Attempts)
	require.Len(t, bb.temporal.snapshot("task-"+id), 1, "one run")
}

// A run that closed without reporting (terminated in Temporal Web) leaves
// its task claimed by this worker: once the claim timed out, this bridge
// claims the task again and a new run serves it, as another worker
// would. Before, the sweep dropped it and the scout woke only for other
// workers' claims: with one bridge the task stayed claimed for good.
func TestSweep_task_of_a_terminated_run_is_claimed_again(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, ClaimTimeout: time.Second}, func(c *Config) { c.ClaimTimeout = time.Second })
	bb.only("example.sleep")
	id := bb.create(t, "example.sleep", map[string]any{"duration": 30})
	bb.serve(t)
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+id)) == 1 }, eventually, 5*time.Millisecond)
	bb.temporal.close("task-" + id) // terminated
	require.Eventually(t, func() bool {
		rs := bb.temporal.snapshot("task-" + id)
		return len(rs) == 2
	}, eventually, 5*time.Millisecond, "a new run for a new claim")
	st := bb.status(t, id)
	require.Equal(t, "w1", st.ClaimedBy)
	require.Equal(t, st.Attempts, bb.temporal.snapshot("task-" + id)[1].input.Claim.Attempts)
}

// A task running longer than TaskManager's claim timeout is claimed again
// by this bridge, on its own (renewAt), against PHP that stores claimed_at
// in whole seconds: the new claim reaches the open run. Before, the one
// wake came 100 ms after the timeout, most often before PHP hands the task
// out again, and there was no second: another worker could take it.
func TestClaims_long_task_is_renewed_against_whole_second_claims(t *testing.T) {
	t.Parallel()
	bb := setupBridgeWith(t, devserver.Options{Style: devserver.StylePHP, ClaimTimeout: time.Second}, func(c *Config) { c.ClaimTimeout = time.Second })
	id := bb.create(t, "example.sleep", map[string]any{"duration": 30})
	bb.serve(t)
	require.Eventually(t, func() bool {
		rs := bb.temporal.snapshot("task-" + id)
		return len(rs) == 1 && len(rs[0].signals) >= 2
	}, eventually, 5*time.Millisecond, "the claim is renewed, and the renewal renewed")
	require.Len(t, bb.temporal.snapshot("task-"+id), 1, "one run")
	st := bb.status(t, id)
	require.Equal(t, "w1", st.ClaimedBy)
	for _, c := range bb.tm.Claims() {
		require.Equal(t, "w1", c.WorkerID)
	}
}

// A task whose params are over a bound (added after its run started, or
// the run of an earlier claim) is not failed while its run is open: the
// claim is signalled to that run.
func TestClaims_unstartable_task_with_an_open_run_gets_the_claim(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.only("example.echo")
	deep := json.RawMessage(`{"message":"deep","n":` + strings.Repeat("[", MaxParamsDepth+1) + strings.Repeat("]", MaxParamsDepth+1) + `}`)
	id := bb.create(t, "example.echo", deep)
	bb.temporal.openRun("task-" + id)
	bb.serve(t)
	require.Eventually(t, func() bool {
		rs := bb.temporal.snapshot("task-" + id)
		return len(rs) == 1 && len(rs[0].signals) == 1
	}, eventually, 5*time.Millisecond, "the open run gets the claim")
	require.Equal(t, "claimed", bb.status(t, id).Status, "not failed")
	// Counted once its start ends, after the signal.
	require.Eventually(t, func() bool { return bb.b.adm.openRuns() == 1 }, eventually, 5*time.Millisecond)
}

// Found by the fault simulation (seed 1): the report that fails a task
// that cannot start met a refused message ("Data too long") and gave up,
// leaving the task claimed and uncounted. It now shortens the message.
func TestClaims_failing_an_unstartable_task_survives_a_refused_message(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.only("example.echo")
	id := bb.create(t, "example.echo", map[string]any{"message": strings.Repeat("7", MaxStartBytes)})
	bb.tm.InjectFault(devserver.Fault{Path: "/complete", Status: 500, Count: 1,
		Body: `{"success":false,"error":"SQLSTATE[22001]: String data, right truncated: 1406 Data too long for column 'error_message' at row 1"}`})
	bb.serve(t)
	require.Eventually(t, func() bool { return bb.status(t, id).Status == "failed" }, eventually, 5*time.Millisecond)
	require.Contains(t, bb.status(t, id).Error, "could not start a Temporal workflow")
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

// listClaimed against a listing that changes between every two requests
// (seeded: tasks end anywhere, most near the front, and new claims come
// in at the front, as the dev server lists newest first): every task
// claimed for the whole listing is listed, and each task once.
func TestSweep_listing_finds_every_task_that_stayed_claimed(t *testing.T) {
	t.Parallel()
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 0))
		var rows []int // the listing, newest first
		next := 0
		for range rng.IntN(600) {
			rows = append(rows, next)
			next++
		}
		ended := map[int]bool{}
		churn := rng.IntN(60) // tasks that end between two requests, at most
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for range rng.IntN(churn + 1) {
				if len(rows) == 0 {
					break
				}
				i := rng.IntN(len(rows))
				if rng.IntN(2) == 0 {
					i = rng.IntN(min(len(rows), 100)) // near the front
				}
				ended[rows[i]] = true
				rows = slices.Delete(rows, i, i+1)
			}
			for range rng.IntN(5) {
				rows = slices.Insert(rows, 0, next)
				next++
			}
			offset, _ := strconv.Atoi(r.URL.Query().Get("offset"))
			limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
			var items []string
			for _, id := range rows[min(offset, len(rows)):min(offset+limit, len(rows))] {
				items = append(items, fmt.Sprintf(`{"id":%d,"type":"example.echo","status":"claimed","attempts":1,"claimed_by":"other"}`, id+1))
			}
			fmt.Fprintf(w, `{"success":true,"message":"Success","data":{"items":[%s],"count":%d}}`, strings.Join(items, ","), len(items))
		}))
		api, err := taskmanager.New(taskmanager.Options{BaseURL: srv.URL, APIKey: "k"})
		require.NoError(t, err)
		b := &Bridge{api: api, log: slog.New(slog.DiscardHandler)}
		first := slices.Clone(rows)
		got, err := b.listClaimed(context.Background())
		srv.Close()
		require.NoError(t, err, "seed %d", seed)
		listed := map[taskmanager.ID]int{}
		for _, task := range got {
			listed[task.ID]++
		}
		for id, n := range listed {
			require.Equal(t, 1, n, "seed %d: task %s listed %d times", seed, id, n)
		}
		for _, id := range first {
			if !ended[id] {
				require.Contains(t, listed, taskmanager.ID(strconv.Itoa(id+1)), "seed %d: task %d stayed claimed and was not listed", seed, id+1)
			}
		}
	}
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

// The strikes of a task the bridge could not read end when the task is no
// longer claimed here (its claim timed out and another worker took it):
// they were kept for the life of the process.
func TestSweep_forgets_strikes_of_tasks_no_longer_claimed_here(t *testing.T) {
	bb := setupBridge(t, devserver.StylePHP, nil)
	bb.only("example.echo")
	undecodable := map[taskmanager.ID]*strikes{"999": {n: 1, first: time.Now()}}
	require.NoError(t, bb.b.sweep(context.Background(), undecodable))
	require.Empty(t, undecodable)
}

// A claim call that hangs (a slow TaskManager: up to api_timeout) holds up
// neither the sweep's listing nor the claims of other types. Before, a
// sweep waited for every claim call under way before it listed, and every
// new claim waited behind the sweep (a waiting writer of an RWMutex): one
// type's hanging claim stalled all claiming, again at each sweep. (Found
// by a review.)
func TestClaims_hanging_claim_holds_up_neither_the_sweep_nor_other_types(t *testing.T) {
	t.Parallel()
	bb := setupBridge(t, devserver.StylePHP, func(c *Config) { c.APITimeout = time.Minute })
	bb.temporal.closeOnStart = true
	bb.only("example.echo", "example.uppercase")
	slow := bb.b.types[slices.IndexFunc(bb.b.types, func(t servedType) bool { return t.Name == "example.echo" })].ID
	release, hanging := make(chan struct{}), make(chan struct{}, 1)
	var listings atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/tasks/claim") {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			var req struct {
				TypeID taskmanager.ID `json:"task_type_id"`
			}
			if json.Unmarshal(body, &req) == nil && req.TypeID == slow {
				select {
				case hanging <- struct{}{}:
				default:
				}
				<-release
			}
		}
		if r.Method == http.MethodGet && r.URL.Query().Get("status") == "claimed" {
			listings.Add(1)
		}
		bb.tm.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	base, err := url.Parse(bb.b.cfg.APIURL)
	require.NoError(t, err)
	bb.b.api, err = taskmanager.New(taskmanager.Options{BaseURL: srv.URL + base.Path, APIKey: "k", Timeout: time.Minute})
	require.NoError(t, err)

	echo := bb.create(t, "example.echo", map[string]any{"message": "slow"})
	bb.serve(t)
	select {
	case <-hanging:
	case <-time.After(eventually): // a guard against a hang, not a timing assertion
		t.Fatal("the claim of example.echo never came")
	}
	before := listings.Load()
	bb.b.requestSweep()
	require.Eventually(t, func() bool { return listings.Load() > before }, eventually, 5*time.Millisecond, "a sweep lists while a claim hangs")
	upper := bb.create(t, "example.uppercase", map[string]any{"text": "fast"})
	require.Eventually(t, func() bool { return bb.status(t, upper).Status != "pending" }, eventually, 5*time.Millisecond, "another type claims while a claim hangs")
	require.Equal(t, "pending", bb.status(t, echo).Status, "still hanging")

	close(release)
	require.Eventually(t, func() bool { return len(bb.temporal.snapshot("task-"+echo)) == 1 }, eventually, 5*time.Millisecond, "the hanging claim's task is started")
	bb.b.requestSweep()
	require.Eventually(t, func() bool { return listings.Load() > before+1 }, eventually, 5*time.Millisecond)
	require.Len(t, bb.temporal.snapshot("task-"+echo), 1, "started once")
}
