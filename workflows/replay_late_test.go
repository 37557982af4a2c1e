package workflows_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/prismq/tmbridge/workflows"
)

// Histories recorded by code before read-late-start, their claim made as
// if long before the run started, replay: such a run takes the version
// gate's old path (no marker in its history). (Written by a review.)
func TestTaskWorkflow_old_histories_started_late_replay(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/history-*.json")
	require.NoError(t, err)
	n := 0
	for _, f := range files {
		// Recorded by read-late-start itself, and by stepsGuardClaim and
		// stepsReadOnRetry (v17: a later version of the same change), whose
		// reads depend on the claim's time too.
		if strings.Contains(f, "history-v14-") || strings.Contains(f, "history-v15-") || strings.Contains(f, "history-v17-") {
			continue
		}
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		var h map[string]any
		require.NoError(t, json.Unmarshal(raw, &h))
		ev := h["events"].([]any)[0].(map[string]any)
		attrs := ev["workflowExecutionStartedEventAttributes"].(map[string]any)
		p := attrs["input"].(map[string]any)["payloads"].([]any)[0].(map[string]any)
		data, _ := base64.StdEncoding.DecodeString(p["data"].(string))
		var in map[string]any
		require.NoError(t, json.Unmarshal(data, &in))
		claim := in["claim"].(map[string]any)
		start, _ := time.Parse(time.RFC3339Nano, ev["eventTime"].(string))
		claim["claimed_at"] = start.Add(-20 * time.Minute).Format(time.RFC3339Nano)
		data, _ = json.Marshal(in)
		p["data"] = base64.StdEncoding.EncodeToString(data)
		out, _ := json.Marshal(h)
		hist, err := client.HistoryFromJSON(strings.NewReader(string(out)), client.HistoryJSONOptions{})
		require.NoError(t, err)
		r := newReplayer(t)
		err = r.ReplayWorkflowHistoryWithOptions(nil, hist, workflows.ReplayOptions(hist))
		require.NoError(t, err, f)
		n++
	}
	require.GreaterOrEqual(t, n, 30, "histories from before read-late-start")
}
