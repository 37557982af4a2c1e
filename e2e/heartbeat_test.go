package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// A running handler's heartbeats keep no goroutine in the SDK for its
// whole run: the bridge's worker sets activities.MaxHeartbeatThrottleInterval,
// so each beat is sent at once and the SDK's batching goroutine ends a
// second later. With the SDK's default interval (0.8 × the heartbeat
// timeout, longer than the time between beats) every running handler kept
// one until it returned: a thousand goroutines, about 5 MB of stacks, with
// a thousand tasks in flight.
func TestE2E_heartbeats_keep_no_goroutine_per_handler(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("test.hold")
	reg := activities.NewRegistry()
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	activities.Register(reg, "test.hold", func(ctx context.Context, _ struct{}) (struct{}, error) {
		once.Do(func() { close(started) })
		select {
		case <-release:
		case <-ctx.Done():
		}
		return struct{}{}, ctx.Err()
	})
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte("types:\n  test.hold: { heartbeat_timeout: 5s }\n"), 0o600))
	before := heartbeatBatchers() // any left by earlier tests' bridges
	id := s.create("test.hold", map[string]any{"n": 1})
	s.runBridge(reg, "bridge-beats", "--config="+cfgFile)
	select {
	case <-started:
	case <-time.After(2 * time.Minute):
		t.Fatal("the handler did not start")
	}
	// The handler's first beat (3.5 s in) starts a batching goroutine,
	// which must end while the handler still runs.
	var beaten atomic.Bool
	require.Eventually(t, func() bool {
		if heartbeatBatchers() > before {
			beaten.Store(true)
			return false
		}
		return beaten.Load()
	}, 2*time.Minute, 50*time.Millisecond, "the SDK's heartbeat batching goroutine lived on while the handler ran (or none ever started)")
	close(release)
	require.Equal(t, "completed", s.waitFinal([]string{id})[id].Status)
}

// heartbeatBatchers counts the Temporal SDK's heartbeat batching
// goroutines in this process (by their function's name in the SDK).
func heartbeatBatchers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Count(buf[:n], []byte("internal.(*temporalInvoker).Heartbeat.func1("))
		}
		buf = make([]byte, 2*len(buf))
	}
}
