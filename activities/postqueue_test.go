package activities

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A claim's posts go out one at a time, in order; a post queued while one
// is being sent replaces any still waiting; flush waits for both; past
// maxPosting claims, posts drop.
func TestPostQueue(t *testing.T) {
	var q postQueue
	var mu sync.Mutex
	var sent []int
	release := make(chan struct{})
	post := func(v int, block bool) func() {
		return func() {
			if block {
				<-release
			}
			mu.Lock()
			sent = append(sent, v)
			mu.Unlock()
		}
	}
	done := q.send("t@1", post(25, true)) // being sent until released
	require.Equal(t, done, q.send("t@1", post(50, false)))
	require.Equal(t, done, q.send("t@1", post(75, false)), "replaces 50, still waiting")
	close(release)
	<-done
	require.Equal(t, []int{25, 75}, sent)

	release = make(chan struct{})
	sent = nil
	q.send("t@2", post(10, true))
	q.send("t@2", post(20, false))
	flushed := make(chan struct{})
	go func() { q.flush(context.Background(), "t@2"); close(flushed) }()
	time.Sleep(10 * time.Millisecond) // flush is waiting (had it returned, the select below says so)
	select {
	case <-flushed:
		t.Fatal("flush returned while a post was being sent")
	default:
	}
	close(release)
	<-flushed
	require.NoError(t, q.idle(context.Background()))
	require.Equal(t, []int{10, 20}, sent, "the waiting post was sent too (a handler's 100 may be waiting)")

	release = make(chan struct{})
	for i := range maxPosting {
		require.NotNil(t, q.send(fmt.Sprintf("busy@%d", i), post(i, true)))
	}
	require.Nil(t, q.send("one@1", post(1, false)), "dropped: maxPosting claims are being posted")
	close(release)
	require.NoError(t, q.idle(context.Background()))
}
