package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/bridge"
	"github.com/prismq/tmbridge/bridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/internal/devtemporal"
)

// An idle bridge polls each empty type once per poll interval, no more.
func TestE2E_idle_bridge_does_not_busy_poll(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.echo", "example.uppercase")
	s.runBridge(nil, "idle", "--poll-interval=30s")
	require.Eventually(t, func() bool { return s.tm.Stats().ClaimCalls >= 2 }, time.Minute, 10*time.Millisecond)
	time.Sleep(2 * time.Second)
	require.Equal(t, 2, s.tm.Stats().ClaimCalls, "one claim per type, then a wait of at least 24 s (30 s less jitter)")
}

// While Temporal is unreachable, the claimed task's start is retried and
// claiming pauses; once Temporal is back, every task runs.
func TestE2E_temporal_outage_pauses_claiming(t *testing.T) {
	srv, err := devtemporal.Start(context.Background(), devtemporal.Options{})
	require.NoError(t, err)
	port, _ := strconv.Atoi(srv.Address[strings.LastIndex(srv.Address, ":")+1:])
	s := newStack(t, devserver.StylePHP)
	s.register("example.echo")

	cfg, err := bridge.Load(s.args("outage", "--temporal-address="+srv.Address), s.environ(), os.Stdout)
	require.NoError(t, err)
	tc := dial(t, srv.Address)
	reg := activities.NewRegistry()
	activities.RegisterExamples(reg)
	b, err := bridge.New(cfg, reg, tc, bridge.WithLogger(bridge.NewLogger(os.Stderr, "text", false)))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
		defer scancel()
		_ = b.Stop(sctx)
	})
	require.Eventually(t, func() bool { return s.tm.Stats().ClaimCalls > 0 }, time.Minute, 10*time.Millisecond, "the bridge is claiming")

	srv.Stop()
	var ids []string
	for i := range 10 {
		ids = append(ids, s.create("example.echo", map[string]any{"message": fmt.Sprintf("outage %d", i)}))
	}
	require.Eventually(t, func() bool { return s.tm.Stats().Claimed >= 1 }, time.Minute, 10*time.Millisecond)
	time.Sleep(3 * time.Second)
	require.LessOrEqual(t, s.tm.Stats().Claimed, bridge.MaxPendingStarts, "claiming stops while Temporal is unreachable")

	srv2, err := devtemporal.Start(context.Background(), devtemporal.Options{Port: port})
	require.NoError(t, err)
	t.Cleanup(srv2.Stop)
	states := s.waitFinal(ids)
	for _, id := range ids {
		require.Equal(t, "completed", states[id].Status)
	}
}
