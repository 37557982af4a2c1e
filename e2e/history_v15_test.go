package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"

	"github.com/prismq/tmbridge/taskmanager/devserver"
)

// The shape of stepsGuardClaim (version 3 of progress-in-handlers): the
// first step outlasts half the bridge's claim timeout, so the run reads
// the task before the second step starts; the claim holds, and it runs.
// Saved as history-v15-steps-guard-claim.json.
func TestE2E_histories_replay_v15(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("demo.slowsteps")
	id := s.create("demo.slowsteps", map[string]any{"message": "read before step two"})
	cfgFile := filepath.Join(t.TempDir(), "tmbridge.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(`
types:
  demo.slowsteps:
    steps:
      - { name: first, handler: example.sleep, params: { duration: 2 } }
      - { name: second, handler: example.echo, params: { message: "{{ .params.message }}" } }
`), 0o600))
	stop := s.runBridge(nil, "bridge-h15", "--config="+cfgFile, "--claim-timeout=2s")
	states := s.waitFinal([]string{id})
	stop()
	require.Equal(t, "completed", states[id].Status, states[id].Error)

	h := s.history(s.prefix + id)
	requireReadBehindVersion(t, h, "progress-in-handlers", 3)
	require.True(t, slices.ContainsFunc(h.GetEvents(), func(ev *historypb.HistoryEvent) bool {
		return ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == "tmbridge.ReadTask" && strings.Contains(ev.String(), "before a step")
	}), "the run read its task before a step")
	s.replay(map[string]string{"steps-guard-claim": id}, "history-v15-")
}
