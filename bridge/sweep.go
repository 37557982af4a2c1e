package bridge

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/prismq/tmbridge/taskmanager"
	"github.com/prismq/tmbridge/workflows"
)

// sweepEvery is how often, at most, the sweeper looks without being asked
// (more often with a claim timeout under twice it, never more often than
// the poll interval).
const sweepEvery = time.Minute

// sweepPage is how many claimed tasks one list call asks for.
const sweepPage = 100

// sweepOverlap is how many tasks each page of the sweep's listing shares
// with the page before it while no task ends. Tasks that leave the
// claimed state while the sweep lists move later ones to lower offsets;
// the overlap shows whether one may have slid past a page's start unseen.
// Tasks claimed while it lists (claiming goes on) move later ones to
// higher offsets: listed twice, never missed.
const sweepOverlap = 20

// maxSweepRequests bounds a sweep's listing: some 80,000 claimed tasks,
// or fewer when many of them end while it lists.
const maxSweepRequests = 1000

// sweepStuck is how many list requests in a row may find no task the
// listing had not seen before it gives up.
const sweepStuck = 10

// listClaimed lists every task TaskManager shows claimed, each once, page
// by page of sweepPage, each page sweepOverlap tasks back from the end of
// the one before. It relies on TaskManager listing in an order that does
// not change while it lists (see docs/taskmanager-contract.md).
//
// A page that holds no task already listed means that sweepOverlap or
// more tasks before it left the claimed state meanwhile: a task may have
// slid past the page's start unseen. The listing then steps back a page at a
// time until a page holds a task it saw (or it is back at the start):
// every task after that one is on that page or on a later one. It gives
// up after sweepStuck requests in a row that found no new task.
func (b *Bridge) listClaimed(ctx context.Context) ([]taskmanager.Task, error) {
	const step = sweepPage - sweepOverlap
	var all, prev []taskmanager.Task
	seen := map[taskmanager.ID]bool{}
	prevOffset, stuck := 0, 0
	for offset, requests := 0, 0; ; requests++ {
		if stuck == sweepStuck {
			return nil, fmt.Errorf("list claimed tasks: %d requests in a row found no task not listed before (do %d or more claimed tasks end between two requests, or is TaskManager's order unstable?)", sweepStuck, sweepOverlap)
		}
		if requests == maxSweepRequests {
			return nil, fmt.Errorf("list claimed tasks: more than %d requests for %d claimed tasks (do many end while they are listed, or is TaskManager's order unstable?)", maxSweepRequests, len(all))
		}
		page, err := b.api.ListTasks(ctx, taskmanager.TaskFilter{Status: taskmanager.StatusClaimed, Limit: sweepPage, Offset: offset})
		if err != nil {
			return nil, err
		}
		// A server that ignores offset answers every page alike: the
		// listing would never end (and claiming waits while it runs).
		if offset > prevOffset && len(prev) > 0 && len(page) > 0 && page[0].ID == prev[0].ID {
			return nil, fmt.Errorf("list claimed tasks: TaskManager answered offset %d with the page of offset %d (is offset ignored?)", offset, prevOffset)
		}
		stuck++ // until the page lists a task not seen before
		if offset > 0 && !slices.ContainsFunc(page, func(t taskmanager.Task) bool { return seen[t.ID] }) {
			b.log.Debug("sweep: claimed tasks moved while listed; stepping back", "offset", offset)
			offset = max(0, offset-step)
			continue
		}
		for _, t := range page {
			if !seen[t.ID] {
				seen[t.ID] = true
				all = append(all, t)
				stuck = 0
			}
		}
		if len(page) < sweepPage {
			return all, nil
		}
		prev, prevOffset = page, offset
		offset += step
	}
}

// requestSweep asks the sweeper to look for claims of this worker that
// have no run (coalesced: one sweep at a time, one waiting at most).
func (b *Bridge) requestSweep() {
	select {
	case b.sweeps <- struct{}{}:
	default:
	}
}

// holdUntilSweep keeps the slot of a ticket whose claim failed in a way
// that may hide a claim the server made (an answer lost or not decodable),
// and asks for a sweep: the slot is given back once a sweep has looked, so
// such a claim never takes this worker past max_in_flight.
func (b *Bridge) holdUntilSweep(tk *ticket, taskType string) {
	b.held.mu.Lock()
	if b.held.ended { // claiming stopped: no sweep will end it
		b.held.mu.Unlock()
		tk.empty()
		return
	}
	b.held.list = append(b.held.list, suspect{tk, taskType, time.Now()})
	b.held.mu.Unlock()
	b.requestSweep()
}

// heldClaims are the tickets of claims that failed in a way that may hide
// a claim (holdUntilSweep); the sweeper ends them once it has looked.
type heldClaims struct {
	mu    sync.Mutex
	list  []suspect
	ended bool // the sweeper ended: a ticket held now would never end
}

// suspect is a ticket held for a sweep, and when its claim failed. A claim
// the client gave up on may still land on the server later (a slow
// database): only a sweep that starts api_timeout after the failure
// releases it.
type suspect struct {
	tk       *ticket
	taskType string // the claim's
	failed   time.Time
}

// ticketFor returns the ticket for a claim of this worker with no run that
// a sweep found. While a claim of its type whose answer was lost is held,
// it takes that claim's ticket: the claim is most likely this process's,
// and it counts against max_runs as a claim that answered does. Else the
// claim is adopted (a predecessor's): counted in flight, not against
// max_runs.
func (b *Bridge) ticketFor(taskType, workflowID string, attempts int) *ticket {
	b.held.mu.Lock()
	var tk *ticket
	if i := slices.IndexFunc(b.held.list, func(s suspect) bool { return s.taskType == taskType }); i >= 0 {
		tk = b.held.list[i].tk
		b.held.list = slices.Delete(b.held.list, i, i+1)
	}
	b.held.mu.Unlock()
	if tk == nil {
		return b.adm.adopt(workflowID)
	}
	tk.claim(workflowID, attempts, time.Time{}, 0) // answered at a time not known
	return tk
}

// sweeper runs the sweeps asked for, at most one per poll interval. A
// ticket held for a sweep ends after a sweep that succeeded and started
// api_timeout after the ticket's claim failed, or claim_timeout after
// that whatever the sweeps (or when claiming stops); while any is held,
// the sweeper asks itself for the next sweep.
func (b *Bridge) sweeper(ctx context.Context) {
	undecodable := map[taskmanager.ID]*strikes{}
	first := false
	release := func(keep func(suspect) bool) {
		b.held.mu.Lock()
		var done []suspect
		kept := b.held.list[:0]
		for _, s := range b.held.list {
			if keep(s) {
				kept = append(kept, s)
			} else {
				done = append(done, s)
			}
		}
		b.held.list = kept
		left := len(kept)
		b.held.mu.Unlock()
		for _, s := range done {
			s.tk.empty()
		}
		if left > 0 {
			b.requestSweep()
		}
	}
	defer func() {
		b.held.mu.Lock()
		b.held.ended = true
		b.held.mu.Unlock()
		release(func(suspect) bool { return false })
	}()
	// A slow sweep now and then also finds what no error announced: a
	// claim of a predecessor of this worker id that landed after it died.
	// It also finds other workers' claims that timed out (scout.noteClaims),
	// so it looks at least twice per claim timeout.
	every := time.NewTicker(max(min(sweepEvery, b.cfg.ClaimTimeout/2), b.cfg.PollInterval))
	defer every.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.sweeps:
		case <-every.C:
		}
		start := time.Now()
		if err := b.sweep(ctx, undecodable); err != nil {
			b.log.Warn("cannot sweep this worker's claims; trying again", "err", err)
			// A claim a lost answer hid has timed out in TaskManager by
			// claim_timeout after it: it runs nowhere, and is anyone's to
			// claim again (a later sweep that finds it still ours starts
			// it). Its place comes back, or listings that keep failing
			// would take every place, one lost answer at a time.
			release(func(s suspect) bool { return time.Since(s.failed) < b.cfg.ClaimTimeout+b.cfg.APITimeout })
			b.requestSweep()
		} else {
			if !first {
				first = true
				close(b.swept)
			}
			release(func(s suspect) bool { return start.Before(s.failed.Add(b.cfg.APITimeout)) })
		}
		sleep(ctx, b.cfg.PollInterval)
	}
}

// strikes counts the sweeps in a row that could not decode a task of ours.
// A task is failed in TaskManager only after undecodableSweeps strikes over
// at least Bridge.undecodableFor: a garbled answer from a proxy passes.
type strikes struct {
	n     int
	first time.Time
}

// undecodableSweeps: see strikes.
const undecodableSweeps = 3

// defaultUndecodableFor: see strikes.
const defaultUndecodableFor = time.Minute

// sweep finds the tasks TaskManager shows claimed by this worker that no
// run serves and no start is under way for (it fails, to be run again, while
// any of them could not be read): claims whose answer was lost
// or could not be decoded, or claims of an earlier process of this worker
// that died before their workflow started. Each is started (or its run
// found and signalled), or failed in TaskManager when the bridge cannot
// read it; none is left claimed until its claim times out.
func (b *Bridge) sweep(ctx context.Context, undecodable map[taskmanager.ID]*strikes) error {
	mine, err := b.listMine(ctx, undecodable)
	if err != nil {
		return err
	}
	served := map[string]servedType{}
	for _, t := range b.types {
		served[t.Name] = t
	}
	var unread []string
	for _, row := range mine {
		if b.adm.covers(b.WorkflowID(row.ID), int(row.Attempts)) {
			continue // started, or its run has it
		}
		t, ok := served[row.Type]
		if !ok {
			b.log.Warn("a task claimed by this worker id is of a type this bridge does not serve; left to the bridge that serves it", "task_id", string(row.ID), "task_type", row.Type)
			continue
		}
		if !b.recoverClaim(ctx, row, t, undecodable) {
			unread = append(unread, string(row.ID))
		}
	}
	if len(unread) > 0 {
		return fmt.Errorf("claimed tasks not read yet: %s", strings.Join(unread, ", "))
	}
	return nil
}

// listMine lists the claimed tasks, and once the claim calls under way
// when the listing ended are handled, returns this worker's. Along the
// way it tells the scout of claims that timed out (scout.noteClaims), and
// forgets the strikes of tasks no longer claimed here.
func (b *Bridge) listMine(ctx context.Context, undecodable map[taskmanager.ID]*strikes) ([]taskmanager.Task, error) {
	all, err := b.listClaimed(ctx)
	if err == nil {
		// A claim call under way may have claimed a task listed here: once
		// its answer is handled, a task listed as ours is either tracked
		// or its claim's answer is gone. Later calls go on meanwhile.
		err = b.calls.wait(ctx)
	}
	var mine []taskmanager.Task
	for _, t := range all {
		if t.ClaimedBy == b.cfg.WorkerID {
			mine = append(mine, t)
		}
	}
	b.log.Debug("sweep: listed this worker's claims", "claims", len(mine), "err", err)
	if err != nil {
		return nil, err
	}
	maps.DeleteFunc(undecodable, func(id taskmanager.ID, _ *strikes) bool {
		return !slices.ContainsFunc(mine, func(t taskmanager.Task) bool { return t.ID == id })
	})
	// Claims that timed out elsewhere, or here with nothing to renew
	// them: no run, or a run whose claim was found, not made here.
	held := func(t taskmanager.Task) bool {
		return t.ClaimedBy == b.cfg.WorkerID && b.adm.renews(b.WorkflowID(t.ID), int(t.Attempts))
	}
	b.scout.noteClaims(all, held, b.cfg.ClaimTimeout, time.Now(), b.adm.hasRoom)
	return mine, nil
}

// recoverClaim reads a claim of this worker (row, of served type t) that
// no run covers, and starts its run, or signals it to the task's open run.
// It reports false when the task was not read (the sweep is tried again).
func (b *Bridge) recoverClaim(ctx context.Context, row taskmanager.Task, t servedType, undecodable map[taskmanager.ID]*strikes) bool {
	id := b.WorkflowID(row.ID)
	task, err := b.api.GetTask(ctx, row.ID)
	b.log.Debug("sweep: read task", "task_id", string(row.ID), "err", err)
	switch {
	case err != nil && b.adm.tracked(id):
		// A newer claim of an open run, not read now: the next sweep
		// tries again, and this one does not fail for it (its run
		// reads the task, and answers for it).
		return true
	case err != nil && undecodableAnswer(err):
		return b.undecodableClaim(ctx, row, err, undecodable)
	case err != nil:
		return false
	}
	delete(undecodable, row.ID)
	if task.Status != taskmanager.StatusClaimed || task.ClaimedBy != b.cfg.WorkerID || b.adm.covers(id, int(task.Attempts)) {
		return true // it moved on since the list
	}
	task.Type = t.Name // as listed, and served: the read may leave it out
	b.log.Info("found a claim of this worker that no run has: starting it (or signalling it to the task's open run)", "task_id", string(task.ID), "attempts", int(task.Attempts))
	b.startTask(b.ticketFor(t.Name, id, int(task.Attempts)), task, t, time.Time{}, trace.SpanContext{}) // its age is unknown: look for its run first
	return true
}

// undecodableClaim counts a strike against a claim of this worker whose
// task's read (err) does not decode. Once it had undecodableSweeps strikes
// over undecodableFor, the claim goes to the run that serves it, if one
// does (a claim that moved to this worker), else the task is failed with
// a message saying so. It reports false while the task waits for more
// strikes, or its run could not be looked up.
func (b *Bridge) undecodableClaim(ctx context.Context, row taskmanager.Task, err error, undecodable map[taskmanager.ID]*strikes) bool {
	st := undecodable[row.ID]
	if st == nil {
		st = &strikes{first: time.Now()}
		undecodable[row.ID] = st
	}
	st.n++
	if st.n < undecodableSweeps || time.Since(st.first) < b.undecodableFor {
		return false
	}
	id := b.WorkflowID(row.ID)
	state, _, cerr := b.claimRun(ctx, id, workflows.Claim{WorkerID: b.cfg.WorkerID, Attempts: int(row.Attempts)})
	if cerr != nil {
		return false
	}
	delete(undecodable, row.ID)
	tk := b.ticketFor(row.Type, id, int(row.Attempts))
	switch state {
	case runOpen:
		if tk.opened(id, int(row.Attempts), time.Time{}) { // found now: claimed at a time not known
			b.watchRun(id)
		}
	case runDone:
		tk.dropped()
	default:
		tk.fail()
		b.failTask(tk, row, time.Time{}, "tmbridge cannot read this task from TaskManager: "+err.Error(), false)
	}
	return true
}
