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
// is being sent replaces any still waiting; flush drops the waiting one
// (unless it is to be kept: a handler's 100) and waits for the one being
// sent; past maxPosting claims, posts drop.
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
	done := q.send("t@1", post(25, true), false) // being sent until released
	require.Equal(t, done, q.send("t@1", post(50, false), false))
	require.Equal(t, done, q.send("t@1", post(75, false), false), "replaces 50, still waiting")
	close(release)
	<-done
	require.Equal(t, []int{25, 75}, sent)

	release = make(chan struct{})
	sent = nil
	q.send("t@2", post(10, true), false)
	q.send("t@2", post(20, false), false)
	flushed := make(chan struct{})
	go func() { q.flush(context.Background(), "t@2"); close(flushed) }()
	require.Eventually(t, func() bool { // flush dropped the waiting post
		q.mu.Lock()
		defer q.mu.Unlock()
		_, waiting := q.waiting["t@2"]
		return !waiting
	}, time.Minute, time.Millisecond)
	select {
	case <-flushed:
		t.Fatal("flush returned while a post was being sent")
	default:
	}
	close(release)
	<-flushed
	require.NoError(t, q.idle(context.Background()))
	require.Equal(t, []int{10}, sent, "the waiting post was dropped: the outcome supersedes it")

	release = make(chan struct{})
	sent = nil
	q.send("t@3", post(90, true), false)
	q.send("t@3", post(100, false), true)
	flushed = make(chan struct{})
	go func() { q.flush(context.Background(), "t@3"); close(flushed) }()
	close(release)
	<-flushed
	require.Equal(t, []int{90, 100}, sent, "a kept post is sent by the flush, not dropped")

	release = make(chan struct{})
	for i := range maxPosting {
		require.NotNil(t, q.send(fmt.Sprintf("busy@%d", i), post(i, true), false))
	}
	require.Nil(t, q.send("one@1", post(1, false), false), "dropped: maxPosting claims are being posted")
	close(release)
	require.NoError(t, q.idle(context.Background()))
}
