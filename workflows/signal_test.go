package workflows_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"

	"github.com/prismq/tmbridge/workflows"
)

// Signals whose payload does not decode (another codec, the wrong shape)
// are dropped: the run goes on watching its timeout, its cancel and its
// handler. Before, the SDK's Receive, called inside the selector's
// callback, dropped the signal and then waited for the channel's next
// one, deaf to everything else: the run hung with its task claimed.
// (Found by a review.)

func TestWaitFor_signal_that_does_not_decode_is_dropped(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow("approve", &commonpb.Payload{Data: []byte("x")}) // no encoding: no converter takes it
	}, time.Minute)
	steps := []workflows.Step{{Name: "approve", WaitFor: &workflows.WaitFor{Signal: "approve", Timeout: 10 * time.Minute}}}
	st, err := runFlow(t, b, map[string]any{"x": 1}, steps)
	requireErrorType(t, err, workflows.TaskFailedErrorType)
	require.Equal(t, `step approve (wait_for approve): no signal "approve" came within 10m0s`, st.Error, "the step's timeout ended it")
}

func TestWaitFor_cancel_is_seen_after_a_signal_that_does_not_decode(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow("approve", &commonpb.Payload{Data: []byte("x")})
	}, time.Minute)
	b.env.RegisterDelayedCallback(b.env.CancelWorkflow, 2*time.Minute)
	steps := []workflows.Step{{Name: "approve", WaitFor: &workflows.WaitFor{Signal: "approve"}}}
	st, _ := runFlow(t, b, map[string]any{"x": 1}, steps)
	require.Contains(t, st.Error, "cancel", "the cancel is reported")
}

func TestTask_claim_signal_that_does_not_decode_is_dropped(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.sleep", map[string]any{"seconds": 1}, workflows.TypeOptions{})
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow(workflows.ClaimSignalName, "oops") // a string, not a claim
	}, 100*time.Millisecond)
	_, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, "completed", b.task(t, in.Task.ID).Status, "the handler's outcome is reported")
}
