package bridge

import (
	"context"
	"sync"
)

// inflight bounds the claimed tasks that are not finished: a slot is taken
// before a claim and given back when the task's workflow closes (or the
// claim came up empty). A claim starts TaskManager's claim-timeout clock, so
// never claiming more than can run keeps tasks from timing out in a queue.
type inflight struct {
	mu      sync.Mutex
	limit   int
	held    int
	changed chan struct{} // closed and replaced on every release
}

func newInflight(limit int) *inflight {
	return &inflight{limit: limit, changed: make(chan struct{})}
}

// acquire takes a slot, waiting while all are held.
func (f *inflight) acquire(ctx context.Context) error {
	return f.waitFor(ctx, func() bool {
		if f.held < f.limit {
			f.held++
			return true
		}
		return false
	})
}

// waitFor waits until cond, called with the lock held, is true.
func (f *inflight) waitFor(ctx context.Context, cond func() bool) error {
	for {
		f.mu.Lock()
		if cond() {
			f.mu.Unlock()
			return nil
		}
		changed := f.changed
		f.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// force takes a slot even past the limit: tasks of this bridge found still
// running at start count against the limit until they finish.
func (f *inflight) force() {
	f.mu.Lock()
	f.held++
	f.mu.Unlock()
}

// release gives a slot back.
func (f *inflight) release() {
	f.mu.Lock()
	f.held--
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// count returns how many slots are held.
func (f *inflight) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.held
}

// drained waits until no slot is held or ctx ends.
func (f *inflight) drained(ctx context.Context) error {
	return f.waitFor(ctx, func() bool { return f.held == 0 })
}
