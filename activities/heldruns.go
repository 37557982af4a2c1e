package activities

import (
	"sync"
	"sync/atomic"
)

// Which workflow runs this process holds: a local handler's run may have
// left the worker (its workflow task failed or timed out) while the
// handler waited for a slot, and the SDK runs it anyway. Another bridge
// may have taken the run over and reported by then.
var (
	heldRuns sync.Map // token → struct{}
	runSeq   atomic.Uint64
	held     atomic.Int64
)

// HoldRun records that the calling workflow run's code runs in this
// process, until release is called. A workflow calls it first and defers
// release: the SDK runs deferred calls when it evicts the run from the
// worker, as when the run ends. The token goes into the HandlerInput of
// each local handler the run schedules (HandlerInput.Run); a handler
// whose run was released reads the task before it runs. Calling it from
// workflow code is safe: the token feeds only local activities' inputs,
// which Temporal does not record.
func HoldRun() (token uint64, release func()) {
	token = runSeq.Add(1)
	heldRuns.Store(token, struct{}{})
	held.Add(1)
	return token, func() {
		if _, ok := heldRuns.LoadAndDelete(token); ok {
			held.Add(-1)
		}
	}
}

// HeldRuns is how many runs hold a token (HoldRun) in this process: those
// in the worker's cache or in a workflow task.
func HeldRuns() int { return int(held.Load()) }

// released reports whether the run of token (from HoldRun) left this
// process.
func released(token uint64) bool {
	_, ok := heldRuns.Load(token)
	return !ok
}
