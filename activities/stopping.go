package activities

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
)

// runningHandlers lists the handlers running in this process, so that a
// handler does not start beside one of the same work that was told to
// stop and still runs, or beside an earlier execution of its own activity.
//
// Temporal does not always wait for a handler it stopped. A local
// activity's cancel or timeout settles at once, whatever its handler
// does: a cancelled `local: true` run reports at once, TaskManager
// re-queues the task, and its next claim's handler would start here, in
// the same bridge, while the first one (slow to stop, or ignoring its
// context) still runs. A local activity that its run starts again after
// a failed workflow task or a cache eviction runs beside the first
// execution, which the SDK does not stop. An evicted run's local activity
// is not even cancelled: when the run, replayed, is cancelled before it
// starts the activity again, it reports the cancel while the first
// execution runs on with a live context. And a regular activity's attempt
// that timed out is retried while its handler may still run.
//
// So a handler first waits for every handler of the same task, step and
// params that has not returned yet and whose context ended, or that is
// another run's (one run of a task's workflow is open at a time: the
// other run has closed, and its handler has not heard of it, or never
// will), or that is an execution of the same activity of the same run.
// Other handlers of the same run whose context is live are siblings (the
// items of a for_each step) and are not waited for. A handler in another
// process is not waited for.
type runningHandlers struct {
	mu sync.Mutex
	m  map[handlerKey][]*runningHandler
	// waiting, when set (tests), is called when a handler starts to wait
	// for n earlier ones.
	waiting func(n int)
}

// handlerKey is the work a handler does: the task, its step ("" for a
// task of one handler) and its params (a for_each item's).
type handlerKey struct {
	taskID, step string
	params       uint64
}

type runningHandler struct {
	ctx        context.Context
	runID      string // the run of the execution
	activityID string // and its activity id
	done       chan struct{}
}

var paramsSeed = maphash.MakeSeed()

func keyOf(in HandlerInput) handlerKey {
	return handlerKey{taskID: in.TaskID, step: in.Step, params: maphash.Bytes(paramsSeed, in.Params)}
}

// enter records a handler of in, run by activity activityID of run runID,
// about to run, and waits until no handler of the same work that was told
// to stop, or of another run, or of the same activity, still runs in this
// process. It returns the function to call when the handler returned, or,
// when ctx ends first (the attempt's start-to-close timeout, at the
// latest), an error saying what it waited for; the attempt is then retried
// as Temporal's retry policy says. A regular activity heartbeats while it
// waits, so that a cancel of its own run still reaches it.
func (r *runningHandlers) enter(ctx context.Context, in HandlerInput, runID, activityID string, log *slog.Logger) (leave func(), err error) {
	key, self := keyOf(in), &runningHandler{ctx: ctx, runID: runID, activityID: activityID, done: make(chan struct{})}
	r.mu.Lock()
	if r.m == nil {
		r.m = map[handlerKey][]*runningHandler{}
	}
	var stopping []*runningHandler
	for _, h := range r.m[key] {
		if h.ctx.Err() != nil || h.runID != runID || h.activityID == activityID {
			stopping = append(stopping, h)
		}
	}
	r.m[key] = append(r.m[key], self)
	waiting := r.waiting
	r.mu.Unlock()
	leave = func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		hs := r.m[key]
		for i, h := range hs {
			if h == self {
				hs = append(hs[:i:i], hs[i+1:]...)
				break
			}
		}
		if len(hs) == 0 {
			delete(r.m, key)
		} else {
			r.m[key] = hs
		}
		close(self.done)
	}
	if len(stopping) > 0 {
		log.Warn("a handler of this task that was told to stop, or of another run, or an earlier execution of this activity, still runs in this process: waiting for it to return before this one starts", "task_id", in.TaskID, "task_type", in.TaskType, "step", in.Step, "attempt", in.Attempt)
		if waiting != nil {
			waiting(len(stopping))
		}
	}
	for _, h := range stopping {
		select {
		case <-h.done:
		case <-ctx.Done():
			leave()
			log.Warn("gave up waiting for a handler of this task that was told to stop, or of another run, or an earlier execution of this activity: this attempt ends without running", "task_id", in.TaskID, "task_type", in.TaskType, "step", in.Step, "attempt", in.Attempt, "err", ctx.Err())
			return nil, fmt.Errorf("a handler of task %s that was told to stop (a cancelled or timed-out run), or of another run, or an earlier execution of this activity, still runs in this process: this attempt did not start beside it: %w", in.TaskID, ctx.Err())
		}
	}
	return leave, nil
}
