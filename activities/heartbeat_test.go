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
	h := &heartbeater{send: func(ctx context.Context, details ...any) {
		if ctx.Value(key{}) == "other" {
			other.Add(1)
			return
		}
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		once.Do(func() { close(first) })
		if sent.Add(1) == 1 {
			<-release // the first one is slow
		}
		inFlight.Add(-1)
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
