package workflows_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/prismq/tmbridge/taskmanager/devserver"
	"github.com/prismq/tmbridge/workflows"
)

// The bundle's claim() leaves Claim.ClaimedAt zero, so
// mayHaveExpired is always true and every report in these tests reads
// first. This one uses a fresh claim, so only the activity's own rule
// ("a retried attempt reads first", info.Attempt > 1) keeps the retried
// post from ending the new claim of this same worker id.
func TestExactlyOnce_retried_attempt_of_a_fresh_claim_reads_first(t *testing.T) {
	t.Parallel()
	var b *testBundle
	wrap, _ := afterFirstComplete(func(next http.Handler) { claimVia(t, next, "w1", string(b.types["example.error"])) })
	b = setup(t, nil, wrap)
	in := b.claim(t, "example.error", map[string]any{"message": "boom"}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = b.env.Now() // fresh: the workflow does not ask for a read
	b.tm.InjectFault(devserver.Fault{Path: "/complete", Status: 502, After: true, Count: 1})

	_, err := b.run(in)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Len(t, b.tm.Completions(in.Task.ID), 1, "the retried attempt reads the task and posts nothing")
	st := b.task(t, in.Task.ID)
	require.Equal(t, "claimed", st.Status)
	require.Equal(t, 2, st.Attempts)
}
