package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// Tests of the claim bookkeeping: a real dev TaskManager, a fake Temporal
// (faketemporal_test.go) that loses answers and goes away on request.

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
