package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"

	"github.com/prismq/tmbridge/taskmanager"
)

// Progress is a handler's last reported progress; it is also the heartbeat
// detail Temporal Web shows for a running handler.
type Progress struct {
	Percent int    `json:"percent"`
	Message string `json:"message,omitempty"`
}

type progressKey struct{}

type progress struct {
	a          *Activities
	taskID     string
	workflowID string
	local      bool
	attempt    int  // the claim's attempt count (its posts' queue)
	step       bool // a step's handler: its progress is not the task's
	beating    bool // the heartbeater sends its progress

	mu       sync.Mutex
	workerID string
	last     Progress
	sentAt   time.Time
	final    bool // a 100 was posted: a later one is an update like any
}

// ReportProgress reports a handler's progress (0–100, clamped) and a short
// message: as a Temporal heartbeat detail, and to TaskManager with the
// task's current claimer, at most once per ProgressInterval and within the
// ProgressBudget of all handlers (the first 100 goes at once, outside
// both, unless the budget's burst is 0: then nothing is posted; a later
// 100 is an update like any). The detail goes with the bridge's automatic
// heartbeats (every 0.7 × the heartbeat timeout, 1–60 s), sent from
// another goroutine: a call to Temporal would grow the handler goroutine's
// stack, and a thousand handlers would keep that memory while they run. A
// regular activity without a heartbeat timeout heartbeats the detail at
// once; a local activity's handler heartbeats nothing. A step's handler
// reports to Temporal only: the task's progress in TaskManager is its
// steps done. Posts to TaskManager are sent in the background, each
// claim's in order, so that a slow TaskManager does not hold the handler
// (its activity waits for them when it returns, 5 s at most); past 32
// claims being posted at once, a post other than a 100 is dropped. Outside
// a handler activity it does nothing. Progress is best effort: a failed
// call is logged, never returned.
func ReportProgress(ctx context.Context, percent int, message string) {
	p, ok := ctx.Value(progressKey{}).(*progress)
	if !ok {
		return
	}
	percent = min(max(percent, 0), 100)
	p.mu.Lock()
	p.last = Progress{Percent: percent, Message: message}
	interval := p.a.ProgressInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	final := percent == 100 && !p.final
	due := p.a.TaskManager != nil && !p.step && p.a.budgetAllows(final, time.Since(p.sentAt) >= interval)
	if due {
		p.sentAt = time.Now()
		p.final = p.final || final
	}
	workerID := p.workerID
	p.mu.Unlock()

	if !p.local && !p.beating {
		activity.RecordHeartbeat(ctx, Progress{Percent: percent, Message: message})
	}
	if due {
		// In the background, each claim's posts in order: a slow
		// TaskManager must not hold the handler (a post may take 15 s: a
		// call, a claim query, a call) past its timeout, and the report
		// waits for the one being sent.
		p.a.posts.send(markKey(p.taskID, p.attempt), func() {
			p.postAs(context.Background(), workerID, percent, message, true)
		}, percent == 100) // kept in the queue: a later post must not replace a waiting 100
	}
}

// budgetAllows reports whether an update is posted: 100 (final) always,
// unless the budget allows no call at all; another when its interval is
// up (intervalUp) and the budget has room, which it then takes.
func (a *Activities) budgetAllows(final, intervalUp bool) bool {
	b := a.ProgressBudget
	switch {
	case b == nil:
		return final || intervalUp
	case b.Burst() == 0:
		return false // no progress calls
	case final:
		return true
	default:
		return intervalUp && b.Allow()
	}
}

// postAs posts progress to TaskManager with the claim workerID; when the
// claim moved (403) and follow is set, it asks the workflow who holds the
// task now and posts with that claim. Best effort: a failure is logged.
func (p *progress) postAs(ctx context.Context, workerID string, percent int, message string, follow bool) {
	err := p.send(ctx, workerID, percent, message)
	// A local activity's own workflow task is running it: a query of its
	// workflow would wait for that task to end, so it is not asked.
	if follow && errors.Is(err, taskmanager.ErrClaimedByOther) && p.a.CurrentClaim != nil && !p.local {
		// The claim moved (the task was claimed again): ask the workflow who holds it now.
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		current, qerr := p.a.CurrentClaim(qctx, p.workflowID)
		cancel()
		if qerr == nil && current != "" && current != workerID {
			p.mu.Lock()
			p.workerID = current
			p.mu.Unlock()
			err = p.send(ctx, current, percent, message)
		}
	}
	if err != nil {
		p.a.logger().Debug("progress not reported", "task_id", p.taskID, "err", err)
	}
}

// postTaskProgress posts the task's progress that its workflow handed to
// this handler (a step of a multi-step task), in the background: the
// attempt's time is the handler's, and a slow TaskManager must not push a
// handler that succeeded past its timeout (its result would be lost and
// the handler run again). The workflow hands out only rising values; an
// attempt that starts late (a busy worker) could still post after a higher
// one, so this process never posts a value for a claim of the task below
// one it posted before, and sends each claim's values in order.
//
// It returns a channel closed once the claim's posts are sent: a handler
// waits on it, for a while, before it returns its result, so that the
// next step (which may run in another process) posts after this one.
func (p *progress) postTaskProgress(attempt int, pr Progress) <-chan struct{} {
	if p.a.TaskManager == nil {
		return nil
	}
	key := markKey(p.taskID, attempt)
	p.mu.Lock()
	workerID := p.workerID
	p.mu.Unlock()
	percent := min(max(pr.Percent, 0), 100)
	// The mark and the queue move together: two handlers of one claim
	// (parallel steps) cannot queue their values out of order.
	p.a.marks.mu.Lock()
	defer p.a.marks.mu.Unlock()
	if !p.a.marks.raiseLocked(key, pr.Percent) {
		return nil
	}
	// A background post does not follow a moved claim (that would post
	// out of the new claim's order): the new claim's handlers post.
	return p.a.posts.send(key, func() { p.postAs(context.Background(), workerID, percent, pr.Message, false) }, false)
}

// maxPosting bounds the claims whose progress is being posted at once: past
// it, a post is dropped (progress is best effort), so that a stalled
// TaskManager is not sent a request per running task.
const maxPosting = 32

// postQueue sends each claim's progress posts one at a time, in order: a
// post queued while one is being sent replaces any still waiting (the
// newest value is the one to show).
type postQueue struct {
	mu      sync.Mutex
	waiting map[string]queuedPost    // claim → the newest post not yet sent
	busy    map[string]chan struct{} // claims with a post being sent → closed once all are
	sending sync.WaitGroup
}

// queuedPost is a post waiting; keep: flush sends it rather than drop it
// (a handler's 100).
type queuedPost struct {
	post func()
	keep bool
}

// send queues post for key and returns a channel closed once key's posts
// are sent (nil: dropped, maxPosting claims are being posted). keep: a
// flush sends it, not drops it.
func (q *postQueue) send(key string, post func(), keep bool) <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.busy == nil {
		q.busy, q.waiting = map[string]chan struct{}{}, map[string]queuedPost{}
	}
	if done, ok := q.busy[key]; ok {
		q.waiting[key] = queuedPost{post: post, keep: keep}
		return done
	}
	if len(q.busy) >= maxPosting && !keep {
		return nil // a handler's 100 goes all the same
	}
	done := make(chan struct{})
	q.busy[key] = done
	q.sending.Go(func() {
		for post != nil {
			post()
			q.mu.Lock()
			post = q.waiting[key].post
			delete(q.waiting, key)
			if post == nil {
				delete(q.busy, key)
				close(done)
			}
			q.mu.Unlock()
		}
	})
	return done
}

// pending returns a channel closed once key's posts are sent (nil: none).
func (q *postQueue) pending(key string) <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.busy[key]
}

// flush drops key's post still waiting, unless it is to be kept (a
// handler's 100: then it is sent), and waits until the one being sent is
// done (a post takes 15 s at most: a call, a claim query, a call), or ctx
// ends: the claim's outcome is about to be reported, and no earlier value
// must land after it.
func (q *postQueue) flush(ctx context.Context, key string) {
	q.mu.Lock()
	if !q.waiting[key].keep {
		delete(q.waiting, key)
	}
	done, ok := q.busy[key]
	q.mu.Unlock()
	if !ok {
		return
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// idle waits until no post is being sent, or ctx ends. Call it once no
// handler runs (after a worker stop, or a test's run): a send while
// sending's count is zero would race with the Wait.
func (q *postQueue) idle(ctx context.Context) error {
	done := make(chan struct{})
	go func() { q.sending.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// progressMarks holds, per claim of a task, the highest progress this
// process posted for it.
type progressMarks struct {
	mu    sync.Mutex
	m     map[string]int
	order []string // the keys of m, oldest first
}

// maxMarks bounds the marks kept: past it, the oldest is dropped (a task
// whose report ran in another process leaves its mark behind).
const maxMarks = 10_000

func markKey(taskID string, attempt int) string { return fmt.Sprintf("%s@%d", taskID, attempt) }

// raiseLocked records percent for key and reports whether it is above
// the mark, that is, whether to post it; m.mu is held.
func (m *progressMarks) raiseLocked(key string, percent int) bool {
	if last, ok := m.m[key]; ok && percent <= last {
		return false
	}
	if m.m == nil {
		m.m = map[string]int{}
	}
	if _, ok := m.m[key]; !ok {
		if len(m.order) >= maxMarks {
			delete(m.m, m.order[0])
			m.order = m.order[1:]
		}
		m.order = append(m.order, key)
	}
	m.m[key] = percent
	return true
}

// forget drops key's mark: the claim's outcome is being reported.
func (m *progressMarks) forget(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.m[key]; ok {
		delete(m.m, key)
		m.order = slices.DeleteFunc(m.order, func(k string) bool { return k == key })
	}
}

func (p *progress) send(ctx context.Context, workerID string, percent int, message string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return p.a.TaskManager.Progress(ctx, taskmanager.ID(p.taskID), workerID, percent, message)
}

// heartbeatEvery heartbeats the last progress until stop is called, so a
// handler that never reports progress is still seen alive, and a dead
// worker's task is retried after the heartbeat timeout. One goroutine
// beats for every running handler (a thousand in flight hold no
// goroutine and ticker each). A handler beats every 0.7 × its heartbeat
// timeout, kept between 1 s and maxBeatEvery, and again a tick after a
// beat that may have been lost (recordHeartbeat): a cancel of the run
// reaches the handler with a heartbeat's answer.
func (p *progress) heartbeatEvery(ctx context.Context, timeout time.Duration) (stop func()) {
	return beats.add(ctx, p, beatInterval(timeout))
}

// beatInterval is the time between two beats of a handler whose heartbeat
// timeout is timeout.
func beatInterval(timeout time.Duration) time.Duration {
	return min(max(timeout*7/10, time.Second), maxBeatEvery)
}

// maxBeatEvery bounds the time between two beats of a handler whatever its
// heartbeat timeout: the SDK's own bound (60 s) when it batches them.
const maxBeatEvery = 60 * time.Second

// MaxHeartbeatThrottleInterval is the worker option
// (worker.Options.MaxHeartbeatThrottleInterval) the heartbeater is built
// for, and the bridge's worker sets. The SDK sends a heartbeat at once
// unless one was sent within this interval; then it keeps the detail and
// starts a goroutine that sends it when the interval ends, and that
// goroutine lives as long as heartbeats keep coming within it. By default
// the interval is 0.8 × the heartbeat timeout: with beats more often than
// that, each running handler kept such a goroutine for its whole run (a
// thousand goroutines and about 5 MB of stacks with a thousand in flight).
// At 1 s, each beat goes at once and its goroutine ends a second later;
// Temporal hears from a handler every 0.7 × its timeout instead of every
// 0.8 ×. With the SDK's default the beats are batched as before.
//
// The interval is also the time the SDK gives a heartbeat call, retries
// included (1 s at least), and a call that fails is only logged. A call
// that took that long ran into that deadline, and its beat may be lost:
// the heartbeater beats again a tick after it, then 2, 4, 8… ticks after
// while calls keep failing so. A Temporal that does not answer for a
// while (a restart, a slow frontend) is so waited for through the rest of
// the heartbeat timeout, about 0.3 × it less a call's second (nothing
// left at the 5 s minimum; 2 s of a 10 s timeout, where the SDK's one
// call of 0.8 × it left 2 s too). One case is worse than with the SDK's
// default: a "resource exhausted" answer that asks to retry 1 s or more
// later ends the call at once, and the SDK then cancels the handler;
// before, it took a delay of 0.8 × the heartbeat timeout.
const MaxHeartbeatThrottleInterval = time.Second

// beats is the process's heartbeater.
var beats = heartbeater{send: recordHeartbeat}

// recordHeartbeat heartbeats, and says whether the call ran into the
// deadline the SDK gives it (MaxHeartbeatThrottleInterval): its beat may
// not have reached Temporal.
func recordHeartbeat(ctx context.Context, details ...any) (mayBeLost bool) {
	start := time.Now()
	activity.RecordHeartbeat(ctx, details...)
	return time.Since(start) >= MaxHeartbeatThrottleInterval
}

type heartbeater struct {
	mu      sync.Mutex
	due     map[*beat]struct{}
	running bool
	// send records a heartbeat (recordHeartbeat; tests replace it).
	send func(ctx context.Context, details ...any) (mayBeLost bool)
}

type beat struct {
	ctx   context.Context
	p     *progress
	every time.Duration
	next  time.Time
	// sending: this handler's last heartbeat is still being sent (a slow
	// Temporal): the next one waits its turn rather than pile up.
	sending atomic.Bool
	// lost counts the last beats in a row whose call may have been lost
	// (written by the one sending).
	lost int
}

// beatTick is how often the heartbeater looks for beats due.
const beatTick = 250 * time.Millisecond

func (h *heartbeater) add(ctx context.Context, p *progress, every time.Duration) (remove func()) {
	b := &beat{ctx: ctx, p: p, every: every, next: time.Now().Add(every)}
	h.mu.Lock()
	if h.due == nil {
		h.due = map[*beat]struct{}{}
	}
	h.due[b] = struct{}{}
	if !h.running {
		h.running = true
		go h.loop()
	}
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		delete(h.due, b)
		h.mu.Unlock()
	}
}

// loop beats what is due until no handler runs.
func (h *heartbeater) loop() {
	t := time.NewTicker(beatTick)
	defer t.Stop()
	var now []*beat
	for range t.C {
		h.mu.Lock()
		if len(h.due) == 0 {
			h.running = false
			h.mu.Unlock()
			return
		}
		now = now[:0]
		at := time.Now()
		for b := range h.due {
			// One being sent stays due: it goes once that one is through.
			// Due within half a tick: beats come every ± an eighth of a
			// second, not every plus up to a tick.
			if b.ctx.Err() == nil && !b.sending.Load() && !at.Add(beatTick/2).Before(b.next) {
				b.next = at.Add(b.every)
				now = append(now, b)
			}
		}
		h.mu.Unlock()
		for _, b := range now {
			if b.ctx.Err() != nil {
				continue // the handler returned meanwhile
			}
			if !b.sending.CompareAndSwap(false, true) {
				continue
			}
			b.p.mu.Lock()
			last := b.p.last
			b.p.mu.Unlock()
			// A heartbeat is a call to Temporal: one slow answer must not
			// hold the others back.
			go func() {
				defer b.sending.Store(false)
				if !h.send(b.ctx, last) {
					b.lost = 0
					return
				}
				// Again a tick later, then less and less soon while
				// calls keep failing (a Temporal that does not answer
				// gets no storm of beats).
				b.lost = min(b.lost+1, 8)
				h.mu.Lock()
				b.next = time.Now().Add(min(beatTick<<(b.lost-1), b.every))
				h.mu.Unlock()
			}()
		}
		clear(now) // no hold on beats removed meanwhile
	}
}
