package workflows_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/proto"

	"github.com/prismq/tmbridge/workflows"
)

// A Go workflow handler that panics, or fails, with text that is not
// UTF-8 fails its run with a failure Temporal can take (it is a protobuf
// string): before, its workflow task failed again and again, and the
// task's outcome never reached TaskManager. (Found by a review.)
func TestFailOnPanic_failure_with_non_utf8_text_is_sendable(t *testing.T) {
	for name, fn := range map[string]func(workflow.Context) (map[string]any, error){
		"panic": func(workflow.Context) (map[string]any, error) { panic("open caf\xe9.txt: no such file") },
		"return": func(workflow.Context) (map[string]any, error) {
			return nil, errors.New("open caf\xe9.txt: no such file")
		},
		"application error": func(workflow.Context) (map[string]any, error) {
			return nil, temporal.NewNonRetryableApplicationError("open caf\xe9.txt", "NoFile", nil)
		},
	} {
		var suite testsuite.WorkflowTestSuite
		env := suite.NewTestWorkflowEnvironment()
		env.SetTestTimeout(time.Minute) // a guard against a hang: not 3 s of a loaded machine's time
		env.RegisterWorkflowWithOptions(workflows.FailOnPanic("t.gofail", fn), workflow.RegisterOptions{Name: "t.gofail"})
		env.ExecuteWorkflow("t.gofail")
		err := env.GetWorkflowError()
		require.Error(t, err, name)
		var ae *temporal.ApplicationError
		require.True(t, errors.As(err, &ae), "%s: %v", name, err)
		require.Contains(t, ae.Error(), "caf\uFFFD", name)
		_, merr := proto.Marshal(temporal.GetDefaultFailureConverter().ErrorToFailure(ae))
		require.NoError(t, merr, "%s: the run's failure cannot be sent to Temporal: %q", name, ae.Error())
	}
}
