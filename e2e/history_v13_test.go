package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"

	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// The shape of read-claim-over: a failure whose first post was refused
// (503) is posted again by the report's retry, which reads first; as that
// post lands, this same worker claims the task again and the claim reaches
// the run, and the report's read after the post fails (503). The run reads
// the task itself (a tmbridge.ReadTask activity after the version marker),
// finds the newer claim holding it, and continues as new for it. Saved as
// history-v13-read-claim-over.json (the first run).
func TestE2E_histories_replay_v13(t *testing.T) {
	s := newStack(t, devserver.StylePHP)
	s.register("example.error")
	typ, err := s.api.GetTaskType(context.Background(), "example.error")
	require.NoError(t, err)
	const worker = "bridge-h13"
	id := s.create("example.error", map[string]any{"message": "fails, and is claimed again as it is reported"})
	wf := s.prefix + id
	var completes, readBacks atomic.Int32
	var reclaimed atomic.Bool
	var firstRun atomic.Value // the run the claim reached
	mw := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			isTask := strings.HasSuffix(r.URL.Path, "/tasks/"+id)
			switch {
			case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/tasks/"+id+"/complete"):
				if completes.Add(1) == 1 {
					http.Error(w, `{"success":false,"error":"busy"}`, http.StatusServiceUnavailable)
					return
				}
				next.ServeHTTP(w, r)
				if reclaimed.Swap(true) {
					return
				}
				// The post landed (the task is pending again): this worker
				// claims it again, and the claim reaches the run.
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodPost, "/api/tasks/claim", bytes.NewReader([]byte(fmt.Sprintf(`{"worker_id":%q,"task_type_id":%s}`, worker, string(typ.ID)))))
				req.Header.Set("X-API-Key", apiKey)
				next.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					t.Errorf("claim again: %d %s", rec.Code, rec.Body)
				}
				d, err := s.describe(context.Background(), wf, "")
				if err != nil {
					t.Errorf("describe: %v", err)
					return
				}
				firstRun.Store(d.GetWorkflowExecutionInfo().GetExecution().GetRunId())
				err = s.tc.SignalWorkflow(context.Background(), wf, firstRun.Load().(string), workflows.ClaimSignalName, workflows.Claim{WorkerID: worker, Attempts: 2, ClaimedAt: time.Now()})
				if err != nil {
					t.Errorf("signal claim 2: %v", err)
				}
			case r.Method == http.MethodGet && isTask && reclaimed.Load() && readBacks.Add(1) == 1:
				http.Error(w, `{"success":false,"error":"busy"}`, http.StatusServiceUnavailable)
			default:
				next.ServeHTTP(w, r)
			}
		})
	}
	srv := httptest.NewServer(mw(s.tm.Handler()))
	t.Cleanup(srv.Close)
	s.url = srv.URL + "/api"
	stop := s.runBridge(nil, worker)
	states := s.waitFinal([]string{id})
	stop()
	require.Equal(t, "failed", states[id].Status)
	require.Equal(t, 3, states[id].Attempts)

	// The first run: the marker, the read, and the continue-as-new.
	first, _ := firstRun.Load().(string)
	require.NotEmpty(t, first)
	h := s.runHistory(wf, first)
	requireReadBehindVersion(t, h, "read-claim-over", 1)
	require.Equal(t, enumspb.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW, h.GetEvents()[len(h.GetEvents())-1].GetEventType())
	s.replayRun(nil, "read-claim-over", wf, first, "history-v13-")
}

// requireReadBehindVersion asserts that a run's history took version v of
// the version gate changeID and read its task (a tmbridge.ReadTask
// activity).
func requireReadBehindVersion(t *testing.T, h *historypb.History, changeID string, v int) {
	t.Helper()
	requireVersion(t, h, changeID, v)
	require.True(t, slices.ContainsFunc(h.GetEvents(), func(ev *historypb.HistoryEvent) bool {
		return ev.GetActivityTaskScheduledEventAttributes().GetActivityType().GetName() == "tmbridge.ReadTask"
	}), "the run read its task")
}
