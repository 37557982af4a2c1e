package bridge

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"
)

// admission owns every claimed task of this bridge from before its claim
// until its outcome landed or its run closed. A claim loop takes a ticket
// before it claims; the ticket is the task's one handle until it ends, in
// one of three ways:
//
//	reserve ─┬─ empty()                      nothing was claimed
//	         ├─ (held)                       the claim's answer was lost:
//	         │                               the ticket waits for a sweep
//	         │                               (Bridge.holdUntilSweep), which
//	         │                               ends it empty() or, finding
//	         │                               the claim, goes on with claim()
//	         └─ claim(wf) ─┬─ opened(wf)     its run is open: admission
//	                       │                 now counts the run, until
//	                       │                 its outcome lands or Temporal
//	                       │                 says it closed
//	                       ├─ fail() ─ dropped()
//	                       │                 no run can serve the claim:
//	                       │                 the task is being failed in
//	                       │                 TaskManager with a reason
//	                       └─ dropped()      the claim's run already closed,
//	                                         or the bridge stops (its next
//	                                         start recovers the claim)
//
// A claim of this worker that a sweep finds without a ticket (a
// predecessor's) gets one from adopt, past claim(); a run found open at
// start is counted by adoptRun, with no ticket.
//
// Invariants, kept under one mutex:
//
//  1. len(open) + tickets + failing <= max_in_flight, except for runs and claims
//     found at start or by a sweep (adopt), which are counted but may exceed it: no
//     claim is made while the bridge has max_in_flight tasks.
//  2. open holds the workflow ids that have a run open on behalf of this
//     worker: an entry leaves when a watch saw the run closed (never on an
//     error such as Temporal being unreachable), or when the outcome of the
//     newest claim that reached it landed in TaskManager (reportLanded):
//     the task is no longer claimed, and the run closes in a moment.
//     A claim that only signals a run already in open takes no slot.
//  3. tickets <= MaxPendingStarts: few claims wait for their workflow
//     start, so claiming stops while Temporal is slow or unreachable. A
//     task that cannot be started frees its place at once (failing).
//  4. claims counts the claims of new tasks and new attempts (not a
//     renewal: the attempt right after the claim of a task whose run is
//     open here, once that claim timed out), against max_runs: a loop
//     waits while reservations may still come back empty, and stops only
//     when claims reached max_runs.
//  5. Every ticket ends exactly once; ending it twice panics.
type admission struct {
	limit   int // max_in_flight
	maxRuns int // 0: unlimited

	spent chan struct{} // closed once max_runs claims of new tasks were made

	mu       sync.Mutex
	changed  chan struct{}    // closed and replaced on every change
	tickets  int              // reserved, claiming or starting
	failing  int              // tasks being failed in TaskManager
	claims   int              // claims of new tasks made, for max_runs
	starting map[string]int   // workflow id → its claims being started (a ticket each)
	open     map[string]*open // workflow id → its open run(s)
	// landed holds the claims being started whose outcome landed already
	// (a run that ran before its start's answer came back): workflow id →
	// the claim's attempts.
	landed map[string]int
	// closing lists, with max_runs, the runs whose slot came back when
	// their outcome landed: the bridge waits for them to close before it
	// exits (bounded by max_runs).
	closing  []string
	lastGen  int               // generations only grow: a watch never mistakes a new entry for the one it read
	finished func(landed bool) // called under mu whenever an open run stops being counted (metrics)
}

// open is a workflow id with a run open for this worker. gen changes
// whenever another claim reaches it (and differs from every earlier
// entry's), so a watch that saw a run close before that claim's run
// started looks again.
type open struct {
	gen      int
	attempts int       // the newest claim of this worker that reached the run
	claimed  time.Time // when that claim was made (or found), for metrics
	sent     time.Time // when this worker sent that claim (zero: not known, a claim found at start or in a sweep)
	onClose  func()    // called when the run is no longer counted (stops its renewal timer)
	renewing int       // the claim (attempts) whose renewal timer onClose stops; 0: none
}

func newAdmission(limit, maxRuns int) *admission {
	return &admission{limit: limit, maxRuns: maxRuns, spent: make(chan struct{}), changed: make(chan struct{}), open: map[string]*open{}, starting: map[string]int{}, landed: map[string]int{}}
}

// budgetSpent is closed once max_runs claims were made: idle claim loops
// stop waiting for work.
func (a *admission) budgetSpent() <-chan struct{} { return a.spent }

// errBudgetSpent: max_runs claims were made.
var errBudgetSpent = errors.New("max_runs reached")

// ticket is a claimed (or about to be claimed) task's handle.
type ticket struct {
	a        *admission
	workflow string // set by claim
	failing  bool
	ended    bool
}

// reserve waits for room for one more claim (invariants 1, 3 and 4). It
// returns errBudgetSpent once max_runs claims were made, or ctx's error.
func (a *admission) reserve(ctx context.Context) (*ticket, error) {
	for {
		a.mu.Lock()
		if a.maxRuns > 0 && a.claims >= a.maxRuns {
			a.mu.Unlock()
			return nil, errBudgetSpent
		}
		if a.countedLocked() < a.limit && a.tickets < MaxPendingStarts &&
			(a.maxRuns == 0 || a.claims+a.tickets < a.maxRuns) {
			a.tickets++
			a.mu.Unlock()
			return &ticket{a: a}, nil
		}
		changed := a.changed
		a.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// adopt returns a ticket for a claim of this worker found at start or in a
// sweep: it is counted, even past the limit, but not against max_runs.
func (a *admission) adopt(workflowID string) *ticket {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tickets++
	a.starting[workflowID]++
	return &ticket{a: a, workflow: workflowID}
}

// broadcast wakes the waiters; a.mu is held.
func (a *admission) broadcast() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// end ends t; a.mu is held.
func (t *ticket) end() {
	if t.ended {
		panic("tmbridge: admission ticket ended twice")
	}
	t.ended = true
	if t.failing {
		t.a.failing--
	} else {
		t.a.tickets--
	}
	// Another ticket of the same workflow id (a claim found again while
	// an older one's start is still under way) keeps it starting.
	if t.workflow != "" {
		if t.a.starting[t.workflow]--; t.a.starting[t.workflow] <= 0 {
			delete(t.a.starting, t.workflow)
			delete(t.a.landed, t.workflow)
		}
	}
	t.a.broadcast()
}

// empty ends a ticket whose claim found no task.
func (t *ticket) empty() {
	t.a.mu.Lock()
	defer t.a.mu.Unlock()
	t.end()
}

// claim records that the claim answered at `at` returned attempt attempts
// of the task of workflowID: it counts against max_runs, unless it renews
// the claim of the task's run open here (that claim timed out while the
// run goes on): that is no new task. A renewal is the attempt right after
// the run's claim (no other claim came between), claimed claimTimeout or
// more after this worker sent the run's claim: sooner, TaskManager cannot
// have taken it back by timeout, so its outcome landed (reported by
// another bridge's worker) and TaskManager queued it again, a new attempt
// that counts. What is not known (a zero at, for a claim whose answer was
// lost and a sweep found; a run's claim found at start or in a sweep, with
// no sending time or attempt) does not count against a renewal.
func (t *ticket) claim(workflowID string, attempts int, at time.Time, claimTimeout time.Duration) (renewal bool) {
	t.a.mu.Lock()
	defer t.a.mu.Unlock()
	o, ok := t.a.open[workflowID]
	renewal = ok && (o.attempts == 0 || attempts == o.attempts+1) &&
		(at.IsZero() || o.sent.IsZero() || at.Sub(o.sent) >= claimTimeout)
	if !renewal {
		t.a.claims++
		if t.a.claims == t.a.maxRuns {
			close(t.a.spent)
		}
	}
	t.workflow = workflowID
	t.a.starting[workflowID]++
	return renewal
}

// fail frees the pending-start place of a ticket whose task cannot be
// started; it keeps its in-flight slot until dropped (the task is failed).
func (t *ticket) fail() {
	t.a.mu.Lock()
	defer t.a.mu.Unlock()
	if t.failing || t.ended {
		panic("tmbridge: admission ticket failed twice")
	}
	t.failing = true
	t.a.tickets--
	t.a.failing++
	t.a.broadcast()
}

// opened ends a ticket whose task has a run open under workflowID, for the
// claim with attempts made at claimedAt: the run now holds the slot. It
// reports whether the caller must watch the run (the id was not open
// already; if it was, the ticket's slot is given back), false too when the
// claim's outcome landed already.
func (t *ticket) opened(workflowID string, attempts int, claimedAt time.Time) (watch bool) {
	a := t.a
	a.mu.Lock()
	defer a.mu.Unlock()
	at, ok := a.landed[workflowID]
	landed := ok && at == attempts
	t.end()
	o, was := a.open[workflowID]
	if !was {
		o = &open{}
		a.open[workflowID] = o
	}
	o.gen = a.nextGen()
	if landed && o.attempts <= attempts {
		a.note(o, attempts, claimedAt)
		a.remove(workflowID, o, true)
		return false
	}
	a.note(o, attempts, claimedAt)
	return !was
}

// nextGen returns a generation never handed out before; a.mu is held.
func (a *admission) nextGen() int {
	a.lastGen++
	return a.lastGen
}

// dropped ends a ticket whose claim no run will serve.
func (t *ticket) dropped() {
	t.a.mu.Lock()
	defer t.a.mu.Unlock()
	t.end()
}

// adoptRun counts a run of this worker found open at start, serving the
// claim with attempts as its memo says (0: unknown); it reports whether
// the caller must watch it.
func (a *admission) adoptRun(workflowID string, attempts int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.open[workflowID]; ok {
		return false
	}
	// Its claim is at least as old as now: the oldest claim's age (an
	// alert on claims not renewed) counts from here.
	a.open[workflowID] = &open{gen: a.nextGen(), attempts: attempts, claimed: time.Now()}
	a.broadcast()
	return true
}

// generation returns the generation of an open workflow id.
func (a *admission) generation(workflowID string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if o, ok := a.open[workflowID]; ok {
		return o.gen
	}
	return -1
}

// markClosed removes workflowID if no claim reached it since generation gen
// was read; it reports whether it did (else the watch looks again).
func (a *admission) markClosed(workflowID string, gen int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	o, ok := a.open[workflowID]
	if !ok {
		return true
	}
	if o.gen != gen {
		return false
	}
	a.remove(workflowID, o, false)
	return true
}

// reportLanded is told that the outcome of the claim with attempts landed
// in TaskManager: when that claim is the newest of this worker to reach the
// run of workflowID, the task is no longer claimed and the slot comes back
// now, without waiting for Temporal to say the run closed. It reports
// whether the run is no longer counted. A run of another worker (its
// report ran here) is left alone.
func (a *admission) reportLanded(workflowID string, attempts int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	o, ok := a.open[workflowID]
	switch {
	case ok && o.attempts == attempts:
		a.remove(workflowID, o, true)
		return true
	case a.starting[workflowID] > 0:
		a.landed[workflowID] = attempts // opened frees the slot if it is that claim
	}
	return false
}

// remove stops counting the open run of workflowID, closed or (landed)
// whose outcome landed; a.mu is held.
func (a *admission) remove(workflowID string, o *open, landed bool) {
	if o.onClose != nil {
		o.onClose()
	}
	delete(a.open, workflowID)
	if landed && a.maxRuns > 0 {
		a.closing = append(a.closing, workflowID)
	}
	if a.finished != nil {
		a.finished(landed)
	}
	a.broadcast()
}

// closingIDs returns, with max_runs, the runs whose slot came back when
// their outcome landed (they may not have closed yet).
func (a *admission) closingIDs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.closing)
}

// note records a claim that reached o, sent at claimedAt (zero: found
// again, made before now); a.mu is held.
func (a *admission) note(o *open, attempts int, claimedAt time.Time) {
	if attempts >= o.attempts {
		o.sent = claimedAt
	}
	o.attempts = max(o.attempts, attempts)
	if at := cmp.Or(claimedAt, time.Now()); at.After(o.claimed) {
		o.claimed = at
	}
}

// oldestClaim returns when the oldest claim noted for an open run was
// made (zero: none).
func (a *admission) oldestClaim() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	var oldest time.Time
	for _, o := range a.open {
		if !o.claimed.IsZero() && (oldest.IsZero() || o.claimed.Before(oldest)) {
			oldest = o.claimed
		}
	}
	return oldest
}

// onClose sets what the claim with attempts does once workflowID's run is
// no longer counted (it replaces what was set before, which is done at
// once). It is done at once instead when the run is not counted, or a
// newer claim reached it (whose own onClose counts).
func (a *admission) onClose(workflowID string, attempts int, fn func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	o, ok := a.open[workflowID]
	if !ok || o.attempts > attempts {
		fn()
		return
	}
	if o.onClose != nil {
		o.onClose()
	}
	o.onClose, o.renewing = fn, attempts
}

// renewalSpent notes that the renewal timer of the claim with attempts of
// workflowID stopped trying; it reports whether that claim is still the
// run's (then the scout takes it over).
func (a *admission) renewalSpent(workflowID string, attempts int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	o, ok := a.open[workflowID]
	if !ok || o.attempts != attempts || o.renewing != attempts {
		return false
	}
	o.renewing = 0
	return true
}

// renews reports whether the claim with attempts of workflowID is renewed
// by this bridge: its start is under way, or its open run holds it and a
// renewal timer (renewAt) was armed for it. A claim found in a sweep, or
// by a run found open at start, was made at a time nobody knows: none is.
func (a *admission) renews(workflowID string, attempts int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	o, ok := a.open[workflowID]
	return a.starting[workflowID] > 0 || (ok && o.attempts == attempts && o.renewing == attempts)
}

// attempts returns the newest claim of this worker noted for workflowID
// (0: none noted, as for a run found at start whose memo said none).
func (a *admission) attempts(workflowID string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if o, ok := a.open[workflowID]; ok {
		return o.attempts
	}
	return 0
}

// isOpen reports whether workflowID has a run counted open.
func (a *admission) isOpen(workflowID string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.open[workflowID]
	return ok
}

// openIDs returns the workflow ids with a run counted open.
func (a *admission) openIDs() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Collect(maps.Keys(a.open))
}

// tracked reports whether workflowID is open or a claim of it is being
// started.
func (a *admission) tracked(workflowID string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.open[workflowID]
	return ok || a.starting[workflowID] > 0
}

// covers reports whether the claim with attempts of workflowID has reached
// this bridge: a claim of it is being started, or its open run has this
// claim or a newer one. A newer claim of an open run (its answer lost, or
// made by a process that died before signalling it) is not covered: the
// sweep must signal it to the run.
func (a *admission) covers(workflowID string, attempts int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.starting[workflowID] > 0 {
		return true
	}
	o, ok := a.open[workflowID]
	return ok && o.attempts >= attempts
}

// hasRoom reports whether a claim could be made now: a claim loop woken
// without room would wait in reserve, and claim later whatever there is
// by then (an empty claim, on PHP a 500), not what it was woken for.
func (a *admission) hasRoom() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.countedLocked() < a.limit
}

// inFlight returns the tasks counted now: open runs and tickets.
func (a *admission) inFlight() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.countedLocked()
}

// countedLocked is inFlight with a.mu held (invariant 1's left side).
func (a *admission) countedLocked() int { return len(a.open) + a.tickets + a.failing }

// openRuns returns how many workflow ids have a run open.
func (a *admission) openRuns() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.open)
}

// claimed returns the claims made (against max_runs).
func (a *admission) claimed() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.claims
}

// idle waits until no run is open and no ticket is out, or ctx ends.
func (a *admission) idle(ctx context.Context) error {
	for {
		a.mu.Lock()
		if len(a.open) == 0 && a.tickets == 0 && a.failing == 0 {
			a.mu.Unlock()
			return nil
		}
		changed := a.changed
		a.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
