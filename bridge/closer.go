package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"

	"github.com/prismq/tmbridge/workflows"
)

// The closer learns when this worker's open runs close, for all of them at
// once, so that their max_in_flight slots come back: it holds no
// goroutine or stream per run. A run is taken as closed only when
// Temporal's Describe says so (closed, gone, or serving another worker's
// claim now), as watch does; what tells the closer where to look:
//
//   - this worker's report activity, right after it reported a task's
//     outcome (the run closes in a moment): that run is described;
//   - once a second, Temporal's visibility: the task runs of this task
//     queue closed since the last look;
//   - every closerSweepEvery, each open run, described.
//
// Without visibility (a list answers Unimplemented or InvalidArgument),
// every open run is watched on its own, as watch does.

// Cadence of the closer.
const (
	closerEvery      = time.Second
	closerSweepEvery = 30 * time.Second
	// closerOverlap is how far back each look reaches before the last
	// one: visibility may record a close a little late.
	closerOverlap = 10 * time.Second
	// closerSettle is how long a look waits after a report.
	closerSettle = 20 * time.Millisecond
)

// watchRun makes sure an open run's close is seen.
func (b *Bridge) watchRun(workflowID string) {
	if !b.closerOn.Load() {
		go b.watch(workflowID)
	}
}

// reported is told by the report activity of each attempt (counted in the
// metrics): once an outcome landed the run closes in a moment, so the
// closer describes it soon.
func (b *Bridge) reported(workflowID string, err error) {
	b.metrics.observeReport(err)
	// The run closes in a moment, or goes on (an error): either way worth a look.
	b.reportedMu.Lock()
	b.reportedIDs = append(b.reportedIDs, workflowID)
	b.reportedMu.Unlock()
	select {
	case b.closerKick <- struct{}{}:
	default: // a look is due already
	}
}

// checkReported describes the runs whose outcome was just reported; one
// that has not closed yet is looked at again on the next kick or tick.
func (b *Bridge) checkReported(ctx context.Context) error {
	b.reportedMu.Lock()
	ids := b.reportedIDs
	b.reportedIDs = nil
	b.reportedMu.Unlock()
	var left []string
	for i, id := range ids {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		done, err := b.checkRun(id)
		if err != nil {
			left = append(left, ids[i:]...)
			break
		}
		if !done {
			left = append(left, id)
		}
	}
	if len(left) > 0 && len(left) < 10_000 {
		b.reportedMu.Lock()
		b.reportedIDs = append(b.reportedIDs, left...)
		b.reportedMu.Unlock()
	}
	return nil
}

// closer runs until the bridge stops.
func (b *Bridge) closer(ctx context.Context) {
	since := time.Now()
	lastSweep := time.Now()
	tick := time.NewTicker(closerEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-b.closerKick:
			sleep(ctx, closerSettle) // let the run's last workflow task land
			_ = b.checkReported(ctx)
			continue
		}
		if b.adm.openRuns() == 0 {
			since = time.Now()
			continue
		}
		_ = b.checkReported(ctx) // those that had not closed yet
		look := time.Now()
		err := b.closedSince(ctx, since.Add(-closerOverlap))
		var unimplemented *serviceerror.Unimplemented
		var invalid *serviceerror.InvalidArgument
		switch {
		case errors.As(err, &unimplemented), errors.As(err, &invalid):
			b.log.Warn("Temporal's visibility cannot list closed runs: watching each open run instead", "err", err)
			b.closerOn.Store(false)
			for _, id := range b.adm.openIDs() {
				go b.watch(id)
			}
			return
		case err != nil:
			b.log.Debug("cannot list closed runs; looking again", "err", err)
			continue
		}
		since = look
		if time.Since(lastSweep) >= closerSweepEvery {
			lastSweep = time.Now()
			for _, id := range b.adm.openIDs() {
				// Temporal unreachable: stop here, the next sweep goes on.
				if _, err := b.checkRun(id); err != nil || ctx.Err() != nil {
					break
				}
			}
		}
	}
}

// closedSince checks the open runs among the task runs of this task queue
// that visibility shows closed since t.
func (b *Bridge) closedSince(ctx context.Context, t time.Time) error {
	query := fmt.Sprintf("WorkflowType = '%s' AND TaskQueue = '%s' AND ExecutionStatus != 'Running' AND CloseTime >= '%s'",
		workflows.TaskWorkflowName, b.cfg.Temporal.TaskQueue, t.UTC().Format(time.RFC3339Nano))
	var token []byte
	for {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := b.runs.ListWorkflow(lctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: b.namespace, Query: query, NextPageToken: token, PageSize: 1000})
		cancel()
		if err != nil {
			return err
		}
		for _, ex := range resp.Executions {
			if id := ex.GetExecution().GetWorkflowId(); b.adm.isOpen(id) {
				if _, err := b.checkRun(id); err != nil {
					return err // looked at again from the same time on
				}
			}
		}
		if token = resp.NextPageToken; len(token) == 0 {
			return nil
		}
	}
}

// checkRun describes workflowID's latest run and frees its slot when it is
// closed (or gone, or serving another worker's claim); it reports whether
// the slot is free.
func (b *Bridge) checkRun(workflowID string) (bool, error) {
	gen := b.adm.generation(workflowID)
	if gen < 0 {
		return true, nil // not open (any more)
	}
	ctx, cancel := context.WithTimeout(b.bg, 10*time.Second)
	defer cancel()
	closed, err := b.describeClosed(ctx, workflowID)
	if err != nil || !closed {
		return false, err
	}
	if b.adm.closed(workflowID, gen) {
		b.metrics.finished.WithLabelValues("closed").Inc()
		return true, nil
	}
	return false, nil
}
