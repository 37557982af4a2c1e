package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prismq/tmbridge/taskmanager"
)

// claimLoop claims tasks of one type: again at once while tasks come,
// and once the type is empty, when the scout sees one pending (scout.go),
// with exponential backoff on errors (and Retry-After on 429). It takes an
// admission ticket before each claim (so it waits while max_in_flight
// tasks run, while starts are pending, and stops when max_runs claims were
// made), waits while Temporal is unreachable, and hands each claimed task
// to startTask. An error that may hide a claim the server made (an answer
// lost or not decodable) asks for a sweep of this worker's claims.
func (b *Bridge) claimLoop(ctx context.Context, t servedType) {
	log := b.log.With("task_type", t.Name)
	if !b.waitFirstSweep(ctx, log) {
		return
	}
	// Claims come from the scout (scout.go): it allows as many as it saw
	// tasks pending that no claim is promised to, so that no claim comes
	// back empty; this loop takes them one at a time.
	failures := 0
	hurry := false
	for ctx.Err() == nil {
		select {
		case <-b.scout.next(t.Name, hurry):
		case <-b.adm.budgetSpent():
			return
		case <-ctx.Done():
			return
		}
		hurry = false
		// ctx.Err: the select may take an allowance that came with the
		// stop, and the gate pass with room; no claim starts after Stop.
		if b.gate.wait(ctx) != nil || ctx.Err() != nil {
			b.scout.unused(t.Name)
			return
		}
		tk, err := b.adm.reserve(ctx)
		if err != nil {
			b.scout.unused(t.Name)
			return // stopping, or max_runs claims made
		}
		claimedAt := time.Now()
		task, err := b.claimOne(ctx, tk, t, log)
		switch {
		case err == nil:
			failures = 0
			hurry = true // more may be pending: the scout looks at once if none is left
			b.startTask(tk, task, t, claimedAt, traceClaim(t, task, claimedAt))
		case errors.Is(err, taskmanager.ErrNoTask):
			failures = 0
			tk.empty()
		default:
			if !errors.Is(err, taskmanager.ErrTransient) {
				tk.empty() // a transient error's ticket is held for a sweep
			}
			failures++
			wait := max(backoff(failures), taskmanager.RetryAfter(err))
			log.Warn("claim failed", "err", err, "retry_in", wait.Round(time.Millisecond))
			sleep(ctx, wait)
			hurry = true // the task may still be pending: try again, not at the next poll
		}
	}
}

// waitFirstSweep waits until this worker's claims from before are counted
// (the first sweep); if TaskManager's task listing keeps failing, claiming
// starts anyway after firstSweepWait. It reports false when ctx ended.
func (b *Bridge) waitFirstSweep(ctx context.Context, log *slog.Logger) bool {
	select {
	case <-b.swept:
	case <-time.After(firstSweepWait):
		log.Error("cannot list this worker's claimed tasks (GET /tasks?status=claimed): claiming without them; claims left by a crash are not recovered until the listing works", "waited", firstSweepWait)
	case <-ctx.Done():
		return false
	}
	return true
}

// claimOne makes one claim of type t with ticket tk, and counts it (the
// scout, metrics, logs). A task it returns is tk's (ticket.claim); on an
// error that may hide a claim the server made (ErrTransient), tk is held
// until a sweep has looked. Any other error leaves tk to the caller.
func (b *Bridge) claimOne(ctx context.Context, tk *ticket, t servedType, log *slog.Logger) (taskmanager.Task, error) {
	req := taskmanager.ClaimRequest{WorkerID: b.cfg.WorkerID, TaskTypeID: t.ID, SortBy: b.cfg.ClaimSortBy, SortOrder: b.cfg.ClaimSortOrder}
	// Not cancelled with ctx: a claim the server made must reach us.
	// A sweep waits for the answers of the calls under way when its
	// listing ended (claimCalls).
	handled := b.calls.begin()
	began := time.Now()
	cctx, cancelClaim := claimContext(ctx)
	task, err := b.api.Claim(cctx, req)
	cancelClaim()
	b.metrics.claimDuration.WithLabelValues(t.Name).Observe(time.Since(began).Seconds())
	renewal := false
	if err == nil {
		if task.Type != t.Name {
			// The answer left it out, or names another type (a broken
			// server): the task was claimed by t's id and runs t's
			// handler, so it is t's in history, memo and metrics.
			if task.Type != "" {
				log.Warn("the claim's answer names another task type: the task runs as the type claimed", "task_id", string(task.ID), "answer_type", fmt.Sprintf("%.64q", task.Type))
			}
			task.Type = t.Name
		}
		renewal = tk.claim(b.WorkflowID(task.ID), int(task.Attempts), time.Now(), b.cfg.ClaimTimeout)
	} else if errors.Is(err, taskmanager.ErrTransient) {
		// The server may have claimed a task whose answer we lost: the
		// ticket keeps its slot until a sweep has looked. Held before
		// the answer counts as handled, so that a sweep that finds the
		// claim finds its ticket too (and counts it against max_runs).
		b.holdUntilSweep(tk, t.Name)
	}
	handled()

	if errors.Is(err, taskmanager.ErrNoTask) {
		b.scout.empty(t.Name)
	} else {
		b.scout.made(t.Name)
	}
	switch {
	case err == nil && renewal:
		b.metrics.claims.WithLabelValues(t.Name, "renewed").Inc()
		log.Info("✓ claimed task again while its run goes on (its claim had timed out)", "task_id", string(task.ID), "attempts", int(task.Attempts))
	case err == nil:
		b.metrics.claims.WithLabelValues(t.Name, "claimed").Inc()
		log.Info("✓ claimed task", "task_id", string(task.ID), "attempts", int(task.Attempts))
	case errors.Is(err, taskmanager.ErrNoTask):
		b.metrics.claims.WithLabelValues(t.Name, "empty").Inc() // another worker was first
	default:
		b.metrics.claims.WithLabelValues(t.Name, "error").Inc()
	}
	return task, err
}

// claimCalls are the claim calls under way. A sweep that listed this
// worker's claimed tasks waits for the answers of the calls under way when
// its listing ended (a task it lists may be theirs: tracked once handled,
// or held for a sweep) and for no later call: claiming goes on while it
// lists and waits, whatever one hanging call does.
type claimCalls struct {
	mu   sync.Mutex
	next uint64
	open map[uint64]chan struct{} // closed once the call's answer is handled
}

// begin notes a claim call; handled ends it once its answer is handled.
func (c *claimCalls) begin() (handled func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open == nil {
		c.open = map[uint64]chan struct{}{}
	}
	n, done := c.next, make(chan struct{})
	c.next++
	c.open[n] = done
	return func() {
		c.mu.Lock()
		delete(c.open, n)
		c.mu.Unlock()
		close(done)
	}
}

// wait waits until every call under way now is handled, or ctx ends.
func (c *claimCalls) wait(ctx context.Context) error {
	c.mu.Lock()
	open := slices.Collect(maps.Values(c.open))
	c.mu.Unlock()
	for _, done := range open {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// claimContext is the context of one claim call: not cancelled when
// claiming stops (a claim the server made must reach us), but
// claimStopGrace later, so that a slow TaskManager cannot hold the stop
// past StopTimeout (api_timeout may be minutes). A claim cut off then is
// found by the next start of this worker (its sweep) and started.
func claimContext(ctx context.Context) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(claimStopGrace, cancel)
		context.AfterFunc(cctx, func() { t.Stop() })
	})
	return cctx, func() { stop(); cancel() }
}

// claimStopGrace is how long a claim under way may go on once claiming
// stops (part of StopTimeout).
var claimStopGrace = 5 * time.Second

// firstSweepWait bounds how long claim loops wait for the first sweep.
const firstSweepWait = time.Minute

// backoff returns 1s, 2s, 4s … up to a minute, with jitter.
func backoff(failures int) time.Duration {
	d := time.Second << min(failures-1, 6)
	return jitter(min(d, time.Minute))
}

// jitter spreads d by ±20% so that bridges do not poll in step.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// gate stops claiming while Temporal is unreachable.
type gate struct {
	mu   sync.Mutex
	open chan struct{} // closed while claiming may go on
}

func newGate() *gate {
	g := &gate{open: make(chan struct{})}
	close(g.open)
	return g
}

// wait blocks while the gate is shut.
func (g *gate) wait(ctx context.Context) error {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	select {
	case <-open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// shut closes the gate; it reports whether it was open.
func (g *gate) shut() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
		return true
	default:
		return false
	}
}

// reopen opens the gate.
func (g *gate) reopen() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}
