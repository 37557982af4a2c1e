package activities

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// While Temporal is slow to take a handler's heartbeat, the heartbeater
// sends it no other: heartbeats wait their turn instead of piling up one
// goroutine per beat (a thousand handlers times every beat of a slow
// minute). Once the slow one is through, beats go on.
func TestHeartbeater_one_heartbeat_in_flight_per_handler(t *testing.T) {
	type key struct{}
	release := make(chan struct{})
	var inFlight, most, sent, other atomic.Int64
	var once sync.Once
	first := make(chan struct{})
	h := &heartbeater{send: func(ctx context.Context, details ...any) bool {
		if ctx.Value(key{}) == "other" {
			other.Add(1)
			return false
		}
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		once.Do(func() { close(first) })
		if sent.Add(1) == 1 {
			<-release // the first one is slow
		}
		inFlight.Add(-1)
		return false
	}}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "slow"))
	defer cancel()
	remove := h.add(ctx, &progress{}, time.Millisecond) // due at every tick
	defer remove()
	removeOther := h.add(context.WithValue(ctx, key{}, "other"), &progress{}, time.Millisecond)
	defer removeOther()
	<-first
	require.Eventually(t, func() bool { return other.Load() >= 3 }, time.Minute, beatTick, "another handler keeps beating meanwhile")
	require.EqualValues(t, 1, sent.Load(), "no second heartbeat while the first is being sent")
	close(release)
	require.Eventually(t, func() bool { return sent.Load() >= 3 }, time.Minute, beatTick)
	require.EqualValues(t, 1, most.Load())
}

// With the heartbeater running, ReportProgress leaves the heartbeat to it:
// it makes no call to Temporal on the handler's goroutine (whose stack a
// call would grow for the rest of the handler's run); the heartbeater's
// next beat carries the value. Without one, it heartbeats at once. (A
// context that is no activity's makes the SDK's RecordHeartbeat panic.)
func TestReportProgress_leaves_the_heartbeat_to_the_heartbeater(t *testing.T) {
	t.Parallel()
	p := &progress{a: &Activities{}, beating: true}
	ctx := context.WithValue(context.Background(), progressKey{}, p)
	require.NotPanics(t, func() { ReportProgress(ctx, 42, "x") }, "no heartbeat from the handler's goroutine")
	require.Equal(t, Progress{Percent: 42, Message: "x"}, p.last, "the heartbeater's next beat sends it")

	p.beating = false
	require.Panics(t, func() { ReportProgress(ctx, 43, "y") }, "without a heartbeater, it heartbeats at once")
}

// A handler beats every 0.7 × its heartbeat timeout, within 1 s to 60 s:
// more than MaxHeartbeatThrottleInterval apart from the minimum
// heartbeat_timeout up, so that each is sent at once, and 30 % of the
// timeout left for a beat that may have been lost to be sent again.
func TestBeatInterval(t *testing.T) {
	for timeout, want := range map[time.Duration]time.Duration{
		time.Second:      time.Second, // below the minimum heartbeat_timeout: only in tests
		5 * time.Second:  3500 * time.Millisecond,
		10 * time.Second: 7 * time.Second,
		time.Minute:      42 * time.Second,
		time.Hour:        time.Minute,
	} {
		require.Equal(t, want, beatInterval(timeout), "heartbeat timeout %s", timeout)
		if timeout >= 5*time.Second { // workflows.MinHeartbeatTimeout
			require.Greater(t, beatInterval(timeout), MaxHeartbeatThrottleInterval, "sent at once, not batched")
		}
	}
}

// A beat whose call may have been lost (it ran into the deadline the SDK
// gives it) is sent again a tick later, not a whole interval later, when
// the heartbeat timeout may have passed. A beat that went through waits
// for the next interval.
func TestHeartbeater_beats_again_after_a_call_that_may_have_been_lost(t *testing.T) {
	var sent atomic.Int64
	h := &heartbeater{send: func(ctx context.Context, details ...any) bool {
		return sent.Add(1) == 1 // the first call may have been lost
	}}
	remove := h.add(context.Background(), &progress{}, time.Hour)
	defer remove()
	dueNow(h)
	require.Eventually(t, func() bool { return sent.Load() >= 2 }, time.Minute, 10*time.Millisecond, "no beat again after a call that may have been lost")
	time.Sleep(4 * beatTick)
	require.EqualValues(t, 2, sent.Load(), "the beat that went through waits for the next interval")
}

// While calls keep failing (a Temporal that does not answer), a handler's
// beats come less and less soon after each: a tick, then 2, 4, 8 ticks,
// not one a tick.
func TestHeartbeater_beats_again_less_and_less_soon(t *testing.T) {
	var sent atomic.Int64
	h := &heartbeater{send: func(ctx context.Context, details ...any) bool {
		sent.Add(1)
		return true
	}}
	remove := h.add(context.Background(), &progress{}, time.Hour)
	defer remove()
	dueNow(h)
	require.Eventually(t, func() bool { return sent.Load() >= 1 }, time.Minute, 10*time.Millisecond)
	time.Sleep(7 * beatTick) // a beat each tick would be 7 more
	require.LessOrEqual(t, sent.Load(), int64(4), "beats again and again at every tick")
}

// A beat that falls due while the last is still being sent goes once that
// one is through, not an interval later.
func TestHeartbeater_beat_due_while_sending_goes_after(t *testing.T) {
	var sent atomic.Int64
	release := make(chan struct{})
	h := &heartbeater{send: func(ctx context.Context, details ...any) bool {
		if sent.Add(1) == 1 {
			<-release // a slow call
		}
		return false
	}}
	remove := h.add(context.Background(), &progress{}, time.Hour)
	defer remove()
	dueNow(h)
	require.Eventually(t, func() bool { return sent.Load() >= 1 }, time.Minute, 10*time.Millisecond)
	dueNow(h) // the next beat falls due while the first is being sent
	time.Sleep(2 * beatTick)
	require.EqualValues(t, 1, sent.Load(), "one call at a time")
	close(release)
	require.Eventually(t, func() bool { return sent.Load() >= 2 }, time.Minute, 10*time.Millisecond, "the beat due meanwhile was dropped")
}

// dueNow makes every beat of h due now.
func dueNow(h *heartbeater) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for b := range h.due {
		b.next = time.Now()
	}
}
