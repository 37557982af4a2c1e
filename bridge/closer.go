package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/workflows"
)

// closerState is the closer's part of a Bridge.
type closerState struct {
	on      atomic.Bool // the closer sees runs close (else: one watch per run)
	list    trouble     // listing closed runs fails
	unnamed atomic.Bool // visibility refused a list naming runs: list the queue's
	once    sync.Once
}

// The closer learns when this worker's open runs close, for all of them at
// once, so that their max_in_flight slots come back: it holds no
// goroutine or stream per run. A slot comes back when
//
//   - the report activity, run by this worker, landed the outcome of the
//     newest claim that reached the run: the task is no longer claimed
//     and the run closes in a moment (reported; no call to Temporal);
//   - else Temporal's Describe says the run closed (or is gone, or serves
//     another worker's claim now), as watch does. What tells the closer
//     where to look: once a second, Temporal's visibility (this worker's
//     open runs that closed since the last look, closedSince); every
//     closerSweepEvery, each open run, described.
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
	// closerListIDs and closerListBytes bound the open runs one list names
	// (a query of about 30 KB with the default workflow ids).
	closerListIDs   = 1000
	closerListBytes = 64 << 10
)

// watchRun makes sure an open run's close is seen.
func (b *Bridge) watchRun(workflowID string) {
	if !b.closer.on.Load() {
		go b.watch(workflowID)
	}
}

// reported is told by the report activity of each attempt to report the
// outcome of the claim with attempts (counted in the metrics). Once an
// outcome landed, the task is no longer claimed: its slot comes back.
func (b *Bridge) reported(workflowID string, attempts int, err error) {
	b.metrics.observeReport(err)
	if err == nil {
		b.adm.reportLanded(workflowID, attempts)
	}
}

// runCloser is the closer: it runs until the bridge stops.
func (b *Bridge) runCloser(ctx context.Context) {
	since := time.Now()
	lastSweep := time.Now()
	tick := time.NewTicker(closerEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if b.adm.openRuns() == 0 {
			since = time.Now()
			continue
		}
		look := time.Now()
		named, err := b.closedSince(ctx, since.Add(-closerOverlap))
		var unimplemented *serviceerror.Unimplemented
		var invalid *serviceerror.InvalidArgument
		switch {
		case named && errors.As(err, &invalid):
			b.log.Warn("Temporal's visibility refuses a list that names runs: asking for every closed task run of the queue instead", "err", err)
			b.closer.unnamed.Store(true)
		case errors.As(err, &unimplemented), errors.As(err, &invalid):
			b.log.Warn("Temporal's visibility cannot list closed runs: watching each open run instead", "err", err)
			b.closer.on.Store(false)
			for _, id := range b.adm.openIDs() {
				go b.watch(id)
			}
			return
		case err != nil:
			b.closer.list.failed(b.log, fmt.Sprintf("cannot list closed runs in Temporal's visibility; looking again each second (open runs are also described one by one every %s)", closerSweepEvery), "err", err)
		default:
			b.closer.list.ok(b.log, "closed runs listed again")
			since = look
		}
		// The sweep goes on when lists fail (visibility over its rate
		// limit, say): describes are not limited with them.
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

// closedSince checks the open runs that visibility shows closed since t,
// in one list call (visibility calls are rate limited per namespace, for
// every worker and Temporal Web together). Up to closerListIDs open runs
// (closerListBytes of ids), the call names them (named): a list answer
// costs the server by the run it returns, and a queue's closed runs are
// mostly of slots freed already (their outcome landed) or of other
// workers. A run whose id a query cannot quote is left to the sweep. With
// more open runs, or a visibility that refused a named list, the call
// asks for every task run of the task queue closed since t.
func (b *Bridge) closedSince(ctx context.Context, t time.Time) (named bool, err error) {
	query := fmt.Sprintf("WorkflowType = '%s' AND TaskQueue = '%s' AND ExecutionStatus != 'Running' AND CloseTime >= '%s'",
		workflows.TaskWorkflowName, b.cfg.Temporal.TaskQueue, t.UTC().Format(time.RFC3339Nano))
	if ids := b.adm.openIDs(); len(ids) <= closerListIDs && !b.closer.unnamed.Load() {
		ids = slices.DeleteFunc(ids, func(id string) bool { return !quotable(id) })
		size := 0
		for _, id := range ids {
			size += len(id) + 3
		}
		if len(ids) == 0 {
			return false, nil
		}
		if size <= closerListBytes {
			slices.Sort(ids)
			query += " AND WorkflowId IN ('" + strings.Join(ids, "','") + "')"
			named = true
		}
	}
	var token []byte
	for {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := b.runs.ListWorkflow(lctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: b.namespace, Query: query, NextPageToken: token, PageSize: 1000})
		cancel()
		if err != nil {
			return named, err
		}
		for _, ex := range resp.Executions {
			if id := ex.GetExecution().GetWorkflowId(); b.adm.isOpen(id) {
				if _, err := b.checkRun(id); err != nil {
					return named, err // looked at again from the same time on
				}
			}
		}
		if token = resp.NextPageToken; len(token) == 0 {
			return named, nil
		}
	}
}

// quotable reports whether id can stand in a visibility query's string
// literal as it is.
func quotable(id string) bool {
	return !strings.ContainsAny(id, `'"\`) && !strings.ContainsFunc(id, unicode.IsControl)
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
	return b.adm.markClosed(workflowID, gen), nil
}

// watch waits until no run of workflowID is open, as Temporal says, then
// gives its admission slot back; without visibility, each open run has one
// (the closer above watches them all at once). An error (Temporal unreachable for longer
// than a history long poll, say) never frees the slot: the watch asks
// again until Temporal answers.
func (b *Bridge) watch(workflowID string) {
	for failures := 0; b.bg.Err() == nil; {
		gen := b.adm.generation(workflowID)
		if gen < 0 {
			return // no longer counted: its outcome landed
		}
		closed, err := b.runClosed(workflowID)
		switch {
		case err != nil:
			failures++
			b.log.Debug("cannot tell whether the run closed; asking again", "workflow_id", workflowID, "err", err)
			sleep(b.bg, backoff(failures))
		case !closed:
			failures = 0
		case b.adm.markClosed(workflowID, gen):
			return
		}
	}
}

// runClosed waits for the latest run of workflowID (and the runs it
// continues as) to close, then asks Temporal whether it is closed.
func (b *Bridge) runClosed(workflowID string) (bool, error) {
	getErr := b.runs.GetWorkflow(b.bg, workflowID, "").Get(b.bg, nil)
	ctx, cancel := context.WithTimeout(b.bg, 10*time.Second)
	defer cancel()
	closed, err := b.describeClosed(ctx, workflowID)
	if err != nil || closed {
		return closed, err
	}
	if getErr != nil && !isWorkflowResult(getErr) {
		return false, fmt.Errorf("wait for the run: %w", getErr)
	}
	return false, nil // still ours, or another run of ours started since
}

// describeClosed asks Temporal whether workflowID's latest run is closed:
// closed, gone, or serving another worker's claim now (it counts there).
func (b *Bridge) describeClosed(ctx context.Context, workflowID string) (bool, error) {
	desc, err := b.runs.DescribeWorkflowExecution(ctx, workflowID, "")
	var gone *serviceerror.NotFound
	if errors.As(err, &gone) {
		return true, nil // deleted, or its retention passed
	}
	if err != nil {
		return false, err
	}
	info := desc.GetWorkflowExecutionInfo()
	if info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return true, nil
	}
	// The open run serves another worker's claim now: it counts there.
	// Not while the run has yet to take this worker's newer claim (its
	// memo still names the claim before).
	if c := workflows.ClaimInMemo(info.GetMemo()); c.WorkerID != "" && c.WorkerID != b.cfg.WorkerID && c.Attempts >= b.adm.attempts(workflowID) {
		return true, nil
	}
	return false, nil
}

// isWorkflowResult reports whether err is a run's own outcome (it failed,
// was cancelled, …) rather than a failure to learn it.
func isWorkflowResult(err error) bool {
	var wee *temporal.WorkflowExecutionError
	return errors.As(err, &wee)
}
