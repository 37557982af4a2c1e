package workflows_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/workflows"
)

// An old claim's post can land on a newer claim that this same worker made
// (TaskManager checks the worker id only): the claim timed out and w1
// claimed the task again while the report of the old claim was being
// posted. The run then ends with the failure reported, not continued for
// claim 2, whose attempt the post ended. The newer claim is made and
// signalled from within the post, not at a time of the test clock (a
// loaded machine signalled before the report started).
func TestExactlyOnce_post_of_an_old_claim_that_landed_on_a_newer_one(t *testing.T) {
	t.Parallel()
	var b *testBundle
	race := func(next http.Handler) http.Handler {
		var once sync.Once
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/complete") {
				once.Do(func() {
					b.clock.Add(301 * time.Second)
					claimVia(t, next, "w1", string(b.types["example.error"]))
					b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w1", Attempts: 2})
				})
			}
			next.ServeHTTP(w, r)
		})
	}
	b = setup(t, nil, race)
	in := b.claim(t, "example.error", map[string]any{"message": "old claim"}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = time.Now().Add(-10 * time.Minute) // old: the report reads first
	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType) // not continued as new for claim 2
	st := b.task(t, in.Task.ID)
	require.Equal(t, "pending", st.Status)
	require.Equal(t, 2, st.Attempts, "the post ended claim 2; no handler ran for it")
}
