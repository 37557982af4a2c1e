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
	"github.com/prismq/tmbridge/internal/devtemporal"
	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// An idle bridge claims nothing (each empty claim is a 500 on PHP): it
// lists pending tasks once per poll interval and claims what it sees.
func TestE2E_idle_bridge_does_not_busy_poll(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.echo", "example.uppercase")
	s.runBridge(nil, "idle", "--poll-interval=0.5s")
	time.Sleep(3 * time.Second)
	require.Zero(t, s.tm.Stats().ClaimCalls, "no claim while no task is pending")
	id := s.create("example.uppercase", map[string]any{"text": "wake up"})
	require.Equal(t, "completed", s.waitFinal([]string{id})[id].Status)
	require.Equal(t, 1, s.tm.Stats().Claimed)
}

// While Temporal is unreachable, the claimed task's start is retried and
// claiming pauses; once Temporal is back, every task runs.
func TestE2E_temporal_outage_pauses_claiming(t *testing.T) {
	skipExternal(t, "the outage is a dev server of the test's own, stopped and restarted")
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
	first := s.create("example.echo", map[string]any{"message": "before the outage"})
	require.Equal(t, "completed", s.waitFinal([]string{first})[first].Status, "the bridge is claiming")

	srv.Stop()
	var ids []string
	for i := range 10 {
		ids = append(ids, s.create("example.echo", map[string]any{"message": fmt.Sprintf("outage %d", i)}))
	}
	require.Eventually(t, func() bool { return s.tm.Stats().Claimed >= 1 }, time.Minute, 10*time.Millisecond)
	time.Sleep(3 * time.Second)
	require.LessOrEqual(t, s.tm.Stats().Claimed-1, bridge.MaxPendingStarts, "claiming stops while Temporal is unreachable")

	srv2, err := devtemporal.Start(context.Background(), devtemporal.Options{Port: port})
	require.NoError(t, err)
	t.Cleanup(srv2.Stop)
	states := s.waitFinal(ids)
	for _, id := range ids {
		require.Equal(t, "completed", states[id].Status)
	}
}
