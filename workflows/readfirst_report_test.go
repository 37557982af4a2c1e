package workflows_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/prismq/tmbridge/activities"
	"github.com/prismq/tmbridge/workflows"
)

// After a report that failed (its post may still land), the next
// report reads first, even for a fresh claim. The bundle's claim() leaves
// ClaimedAt zero ("age unknown": always read first), which hid this.
func TestExactlyOnce_report_after_a_failed_one_reads_first(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "x"}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = b.env.Now()
	var firsts []bool
	b.env.OnActivity(activities.ReportActivityName, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, ri activities.ReportInput) (activities.ReportOutput, error) {
			firsts = append(firsts, ri.ReadFirst)
			if len(firsts) == 1 {
				return activities.ReportOutput{}, temporal.NewNonRetryableApplicationError("moved", activities.ErrTypeClaimLost, errors.New("x"))
			}
			return activities.ReportOutput{Status: "completed"}, nil
		})
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow(workflows.ClaimSignalName, workflows.Claim{WorkerID: "w2", Attempts: 2, ClaimedAt: b.env.Now()})
	}, 10*time.Second)
	_, err := b.run(in)
	require.NoError(t, err)
	require.Equal(t, []bool{false, true}, firsts, "fresh claim posts at once; the report after a failed one reads first")
}

// In local mode, the regular activity that takes over from a
// local report still failing reads first (a local attempt may have posted).
func TestExactlyOnce_local_report_handover_reads_first(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "x"}, workflows.TypeOptions{ActivityOptions: workflows.ActivityOptions{Local: workflows.Bool(true)}})
	in.Claim.ClaimedAt = b.env.Now()
	var regularReadFirst *bool
	b.env.OnActivity(activities.ReportActivityName, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, ri activities.ReportInput) (activities.ReportOutput, error) {
			if activity.GetInfo(ctx).IsLocalActivity {
				return activities.ReportOutput{}, activities.Transient(errors.New("TaskManager down"), 0)
			}
			v := ri.ReadFirst
			regularReadFirst = &v
			return activities.ReportOutput{Status: "completed"}, nil
		})
	_, err := b.run(in)
	require.NoError(t, err)
	require.NotNil(t, regularReadFirst, "handed over to the regular activity")
	require.True(t, *regularReadFirst)
}

// A fresh claim's report carries ReadFirstFrom (half the claim
// timeout after the claim), so that it reads first if it runs late.
func TestExactlyOnce_report_carries_read_first_from(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	in := b.claim(t, "example.echo", map[string]any{"message": "x"}, workflows.TypeOptions{})
	in.Claim.ClaimedAt = b.env.Now()
	var got activities.ReportInput
	b.env.OnActivity(activities.ReportActivityName, mock.Anything, mock.Anything).Return(
		func(ctx context.Context, ri activities.ReportInput) (activities.ReportOutput, error) {
			got = ri
			return activities.ReportOutput{Status: "completed"}, nil
		})
	_, err := b.run(in)
	require.NoError(t, err)
	require.False(t, got.ReadFirst)
	require.True(t, got.ReadFirstFrom.Equal(in.Claim.ClaimedAt.Add(workflows.DefaultClaimTimeout/2)), "%v", got.ReadFirstFrom)
}
