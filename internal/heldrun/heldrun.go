// Package heldrun tells a local handler whether the workflow run that
// scheduled it is still held by this process: the SDK runs a local
// activity it had queued for a free slot even after its run left the
// worker (a workflow task that failed or timed out, a run reset or
// terminated), and another bridge may have taken the run over and
// reported by then. workflows.TaskWorkflow holds its run; the handler
// activity reads the task first when the run was released.
//
// The state is the process's, as the SDK's cache of runs is: bridges in
// one process share it.
package heldrun

import (
	"sync"
	"sync/atomic"
)

var (
	held      sync.Map // token → struct{}
	seq       atomic.Uint64
	heldCount atomic.Int64
)

// Hold records that the calling workflow run's code runs in this process
// until release is called. A workflow calls it first and defers release:
// the SDK runs deferred calls when it drops the run from the worker, as
// when the run ends. Calling it from workflow code is safe as long as
// the token feeds only local activities' inputs, which Temporal does not
// record.
func Hold() (token uint64, release func()) {
	token = seq.Add(1)
	held.Store(token, struct{}{})
	heldCount.Add(1)
	return token, func() {
		if _, ok := held.LoadAndDelete(token); ok {
			heldCount.Add(-1)
		}
	}
}

// Released reports whether the run of token (from Hold) left this
// process, or never held it.
func Released(token uint64) bool {
	_, ok := held.Load(token)
	return !ok
}

// Count is how many runs this process holds: those in the worker's cache
// or in a workflow task.
func Count() int { return int(heldCount.Load()) }
